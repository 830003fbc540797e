"""Editing speed: completing the lower half of images against sampling whole ones, same model,
batch and settings, one run. Known tokens are not generated, so a half should take about half the
time where the work is in the generated tokens (docs/editing.md says where it is not).

    python -m pytest benchmarks/bench_editing.py -s              # reduced configs, the shipped model
    python -m pytest benchmarks/bench_editing.py -s -m slow      # FractalAR-64 / FractalMAR-64, CPU

Each case prints both times and the ratio (half / whole).
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fractal_ext.editing import lower_half_mask  # noqa: E402
from fractal_ext.io.checkpoints import load_model  # noqa: E402
from fractal_ext.models.known import KnownPixels  # noqa: E402
from fractal_ext.models.registry import NAMED_SAMPLING, SHIPPED_MODEL, SHIPPED_MODEL_NAME  # noqa: E402
from sampling_cases import SamplingCase, timed  # noqa: E402

REPEATS = 3


def model_and_settings(name, batch):
    if name == "shipped":
        return load_model(SHIPPED_MODEL), dict(NAMED_SAMPLING[SHIPPED_MODEL_NAME])
    return SamplingCase(name, batch).build("cpu")


def measure(name, batch):
    model, settings = model_and_settings(name, batch)
    size = model.config.img_size_list[0]
    labels = torch.arange(batch) % model.num_classes
    cond_list = model.build_cond_list(labels, settings["cfg"])
    known = KnownPixels(torch.zeros(batch, model.config.channels, size, size),
                        lower_half_mask(size).expand(batch, -1, -1).contiguous())
    args = (cond_list, settings["num_iter_list"], settings["cfg"], settings["cfg_schedule"], settings["temperature"],
            settings["filter_threshold"])

    def run(**editing):
        return model.sample(*args, generator=torch.Generator().manual_seed(0), **editing)

    # Interleaved, the completion first: a first run pays one-time costs (allocations, page faults),
    # which then count against the completion, never for it.
    halves, wholes = [], []
    for _ in range(1 if name.startswith("fractal") else REPEATS):
        halves.append(timed(lambda: run(known=known)))
        wholes.append(timed(run))
    half, whole = min(halves), min(wholes)
    result = {"model": name, "batch": batch, "whole_s": whole, "lower_half_s": half, "ratio": half / whole}
    if model.config.generator_type_list[0] == "mar":
        # A MAR level runs min(U, num_iter) steps, as many as for a whole image while U >= num_iter.
        # Half the level-0 steps generate the half at the whole image's tokens per step.
        num_iter = (max(1, settings["num_iter_list"][0] // 2), *settings["num_iter_list"][1:])
        same_rate = (cond_list, num_iter, *args[2:])
        result["lower_half_half_steps_s"] = timed(lambda: model.sample(
            *same_rate, generator=torch.Generator().manual_seed(0), known=known))
        result["ratio_half_steps"] = result["lower_half_half_steps_s"] / whole
    return result


CASES = [
    pytest.param("reduced_ar", 1, id="reduced_ar-b1"),
    pytest.param("reduced_mar", 1, id="reduced_mar-b1"),
    pytest.param("shipped", 10, id="shipped-b10",
                 marks=pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="shipped model not present")),
    pytest.param("fractalar_in64", 1, marks=pytest.mark.slow, id="fractalar_in64-b1"),
    pytest.param("fractalmar_in64", 1, marks=pytest.mark.slow, id="fractalmar_in64-b1"),
]


@pytest.mark.parametrize("name, batch", CASES)
def test_completing_half_against_sampling_whole(benchmark, name, batch):
    result = measure(name, batch)
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timing is the measurement above
    line = (f"\n{name} batch {batch}: whole image {result['whole_s']:.2f} s, lower half {result['lower_half_s']:.2f} s, "
            f"ratio: {result['ratio']:.2f}")
    if "ratio_half_steps" in result:
        line += f"; with half the level-0 steps {result['lower_half_half_steps_s']:.2f} s, ratio {result['ratio_half_steps']:.2f}"
    print(line)
