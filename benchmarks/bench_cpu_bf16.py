"""The CPU bf16 sampling mode against the eager fp32 path (the official computation) and the fp32
fast path: same random weights, same settings, all three timed in one run.

    python -m pytest benchmarks/bench_cpu_bf16.py -s            # reduced configurations (CI-sized)
    python -m pytest benchmarks/bench_cpu_bf16.py -s -m slow    # FractalAR-64 / FractalMAR-64, batch 1 and 8
    python benchmarks/bench_cpu_bf16.py --cases fractalar_in64:1,fractalmar_in64:1 --json out.json

Each case prints seconds and images/s of the three paths and the ratios eager / fast fp32,
eager / fast bf16 and fast fp32 / fast bf16. Timings are printed, never asserted.
"""
import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_sampling import machine, parse_case, write_text  # noqa: E402
from sampling_cases import REDUCED, SamplingCase, timed  # noqa: E402

CASES = [
    pytest.param("reduced_ar", 1, id="reduced_ar-b1"),
    pytest.param("reduced_mar", 1, id="reduced_mar-b1"),
] + [pytest.param(name, batch, marks=pytest.mark.slow, id=f"{name}-b{batch}")
     for name in ("fractalar_in64", "fractalmar_in64") for batch in (1, 8)]
PATHS = {"eager_fp32": ("eager", "fp32"), "fast_fp32": ("fast", "fp32"), "fast_bf16": ("fast", "bf16")}


def measure(name: str, batch: int, skip_eager: bool = False) -> dict:
    """Seconds of each path (the reduced configurations: best of 3, their single runs vary by 30%)."""
    case = SamplingCase(name, batch)
    model, settings = case.build("cpu")
    repeats = 3 if name in REDUCED else 1
    result = {"model": name, "batch": batch, "threads": torch.get_num_threads(), "settings": settings}
    for path, (implementation, precision) in PATHS.items():
        if skip_eager and implementation == "eager":
            continue
        result[f"{path}_s"] = min(timed(lambda: case.run(model, settings, implementation, precision=precision))
                                  for _ in range(repeats))
    for slow, fast in (("eager_fp32", "fast_fp32"), ("eager_fp32", "fast_bf16"), ("fast_fp32", "fast_bf16")):
        if f"{slow}_s" in result:
            result[f"{slow}_over_{fast}"] = result[f"{slow}_s"] / result[f"{fast}_s"]
    return result


def describe(result: dict) -> str:
    seconds = ", ".join(f"{path} {result[f'{path}_s']:.2f} s" for path in PATHS if f"{path}_s" in result)
    ratios = ", ".join(f"{key.replace('_over_', ' / ')}: {value:.2f}x"
                       for key, value in result.items() if "_over_" in key)
    return f"{result['model']} batch {result['batch']} ({result['threads']} threads): {seconds}; ratio: {ratios}"


@pytest.mark.parametrize("name, batch", CASES)
def test_bf16_vs_fp32_cpu(benchmark, name, batch):
    result = measure(name, batch)
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timing is the measurement above
    print("\n" + describe(result))


def main():
    parser = argparse.ArgumentParser(description="CPU bf16 sampling against eager fp32 and fast fp32")
    parser.add_argument("--cases", default="fractalar_in64:1,fractalmar_in64:1",
                        help="comma-separated MODEL:BATCH, e.g. fractalar_in64:8")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip_eager", action="store_true", help="only the two fast paths")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name, batch in (parse_case(text) for text in args.cases.split(",")):
        results.append(measure(name, batch, args.skip_eager))
        print(describe(results[-1]), flush=True)
        write_text(Path(args.json), json.dumps({"machine": machine(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
