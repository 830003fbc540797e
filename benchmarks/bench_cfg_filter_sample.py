"""cfg_filter_sample against the plain-PyTorch reference on the same inputs, at the pixel head's
shapes: logits [2n, 256] with per-row cfg, and [n, 256] without, n = 32 .. 16384.

Run: python -m pytest benchmarks/bench_cfg_filter_sample.py -s
Each case prints the median time of both and "ratio: X.Yx" (reference time / ours); the
pytest-benchmark table times ours. Timings are reported, never asserted.
"""
import statistics
import time

import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference

ROWS = [32, 512, 4096, 16384]
TEMPERATURE, THRESHOLD, CFG = 1.02, 1e-4, 6.5
MEAN, STD = 0.485, 0.229  # channel R of the ImageNet normalisation
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn, device, min_time=0.2, max_reps=200):
    fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 5 or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("guided", [True, False], ids=["cfg", "no_cfg"])
@pytest.mark.parametrize("n", ROWS)
def test_cfg_filter_sample_speed(benchmark, device, guided, n):
    gen = torch.Generator().manual_seed(n)
    logits = (torch.randn((2 if guided else 1) * n, 256, generator=gen) * 3).to(device)
    cfg = torch.full((n,), CFG, device=device) if guided else None
    ours_gen = torch.Generator(device=device).manual_seed(0)
    ref_gen = torch.Generator(device=device).manual_seed(0)

    def ours():
        return ops.cfg_filter_sample(logits, cfg, TEMPERATURE, THRESHOLD, MEAN, STD, False, ours_gen)

    def ref():
        return reference.cfg_filter_sample(logits, cfg, TEMPERATURE, THRESHOLD, MEAN, STD, False, ref_gen)

    t_ref = _median_seconds(ref, device)
    t_ours = _median_seconds(ours, device)
    ratio = t_ref / t_ours
    benchmark.extra_info.update(reference_ms=t_ref * 1e3, ours_ms=t_ours * 1e3, ratio=ratio)
    shape = f"[{logits.shape[0]}, 256]" + (" cfg" if guided else "")
    print(f"\ncfg_filter_sample {device} {shape}: reference {t_ref * 1e3:.3f} ms, "
          f"ours {t_ours * 1e3:.3f} ms, ratio: {ratio:.1f}x")
    benchmark(ours)
