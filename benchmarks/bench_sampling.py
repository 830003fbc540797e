"""Sampling speed: the fast path against the eager path, same weights, same settings, one run.

    python -m pytest benchmarks/bench_sampling.py -s                # reduced configs (CI-sized)
    python -m pytest benchmarks/bench_sampling.py -s -m slow        # FractalAR-64 / FractalMAR-64, CPU
    python benchmarks/bench_sampling.py --device cuda --json out.json   # the GPU table

Models have random weights (timing does not depend on them). Each case prints the seconds of
both paths, images/s and the ratio; the script form also writes JSON and a Markdown table.
"""
import argparse
import json
import os
import platform
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fractal_ext.io.atomic import write_atomically  # noqa: E402
from fractal_ext.models import PUBLISHED_SAMPLING  # noqa: E402
from sampling_cases import REDUCED, SamplingCase, timed  # noqa: E402

KNOWN_MODELS = set(REDUCED) | set(PUBLISHED_SAMPLING)

CPU_CASES = [
    pytest.param("reduced_ar", 1, id="reduced_ar-b1"),
    pytest.param("reduced_mar", 1, id="reduced_mar-b1"),
    pytest.param("fractalar_in64", 1, marks=pytest.mark.slow, id="fractalar_in64-b1"),
    pytest.param("fractalmar_in64", 1, marks=pytest.mark.slow, id="fractalmar_in64-b1"),
]
REPEATS = 3
# The eager runs by batch, most wanted first: the speed-up targets are at batch 1 and 256.
EAGER_PRIORITY = {1: 0, 256: 1, 32: 2}
GPU_CASES = [("fractalar_in64", b) for b in (1, 32, 256)] + [("fractalmar_in64", b) for b in (1, 32, 256)] + [
    ("fractalmar_huge_in256", 16)
]


def measure(name, batch, device="cpu", eager=True, precision="fp32", fast=True, result=None):
    """Times the fast path (and on CUDA without graphs) and/or the eager path of one case, adding
    to `result` (the same case measured earlier) where given. Sub-second cases (the reduced
    configurations) take the best of REPEATS runs of each path: single runs of them vary by 30%."""
    case = SamplingCase(name, batch)
    model, settings = case.build(device)
    repeats = REPEATS if name in REDUCED else 1
    if result is None:
        result = {"model": name, "batch": batch, "device": device, "precision": precision, "settings": settings,
                  "repeats": repeats}

    def best(fn):
        return min(timed(fn) for _ in range(repeats))

    if fast:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result["fast_s"] = best(lambda: case.run(model, settings, "fast", precision=precision))
        if device == "cuda":
            result["fast_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            # What the CUDA graphs bring.
            result["fast_no_graphs_s"] = best(lambda: case.run(model, settings, "fast", precision=precision,
                                                               cuda_graphs=False))
        result["fast_images_per_s"] = batch / result["fast_s"]
    if eager:
        result["eager_s"] = best(lambda: case.run(model, settings, "eager", precision=precision))
        result["eager_images_per_s"] = batch / result["eager_s"]
        result["speedup"] = result["eager_s"] / result["fast_s"]
    return result


def describe(result) -> str:
    line = f"{result['model']} batch {result['batch']} on {result['device']}: fast {result['fast_s']:.2f} s"
    if "fast_no_graphs_s" in result:
        line += f" (without CUDA graphs {result['fast_no_graphs_s']:.2f} s)"
    if "eager_s" in result:
        line += f", eager {result['eager_s']:.2f} s, ratio: {result['speedup']:.2f}x"
    return line + f" ({result['fast_images_per_s']:.3f} images/s)"


@pytest.mark.parametrize("name, batch", CPU_CASES)
def test_fast_vs_eager_cpu(benchmark, name, batch):
    result = measure(name, batch)
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timing is the measurement above
    print("\n" + describe(result))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_model(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_case(text: str) -> tuple[str, int]:
    name, _, batch = text.partition(":")
    if name not in KNOWN_MODELS or not batch.isdigit() or int(batch) < 1:
        raise SystemExit(f"bench_sampling: --cases wants MODEL:BATCH with MODEL one of {sorted(KNOWN_MODELS)}, "
                         f"got {text!r}")
    return name, int(batch)


def write_text(path: Path, text: str):
    """Results are written atomically: an interrupted run leaves the previous file whole."""
    write_atomically(path, lambda stream: stream.write(text.encode()))


def markdown(results, machine_info) -> str:
    def cell(result, key, fmt):
        return format(result[key], fmt) if key in result else "-"

    rows = ["| model | batch | precision | fast s | fast s without graphs | eager s | speed-up | images/s | peak GiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['fast_s']:.2f} "
                    f"| {cell(r, 'fast_no_graphs_s', '.2f')} | {cell(r, 'eager_s', '.2f')} "
                    f"| {cell(r, 'speedup', '.2f')}x | {r['fast_images_per_s']:.3f} | {cell(r, 'fast_peak_gib', '.2f')} |")
    return f"Machine: {json.dumps(machine_info)}\n\n" + "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser(description="sampling benchmark table")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", required=True, help="where to write the results (and a .md table beside)")
    parser.add_argument("--no-eager-above", type=int, default=256, help="skip the eager path above this batch")
    parser.add_argument("--cases", help="comma-separated MODEL:BATCH to run instead of the device's table, "
                                        "e.g. fractalmar_in64:256")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_sampling: no CUDA device")
        return 2
    cases = GPU_CASES if args.device == "cuda" else [(p.values[0], p.values[1]) for p in CPU_CASES]
    if args.cases:
        cases = [parse_case(text) for text in args.cases.split(",")]
    # On CUDA both paths at the official evaluation's precision (fp16 autocast), fp32 on the CPU.
    precision = "fp16" if args.device == "cuda" else "fp32"
    results = []

    def save():
        info = machine()
        write_text(Path(args.json), json.dumps({"machine": info, "results": results}, indent=2))
        write_text(Path(args.json).with_suffix(".md"), markdown(results, info))

    # The fast path of every case first, then the eager path in order of EAGER_PRIORITY: the eager
    # runs are the long ones, and a run stopped by its time limit keeps everything measured before.
    for name, batch in cases:
        results.append(measure(name, batch, args.device, eager=False, precision=precision))
        print(describe(results[-1]), flush=True)
        save()
    for result in sorted(results, key=lambda r: EAGER_PRIORITY.get(r["batch"], len(EAGER_PRIORITY))):
        if result["batch"] <= args.no_eager_above:
            measure(result["model"], result["batch"], args.device, fast=False, result=result)
            print(describe(result), flush=True)
            save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
