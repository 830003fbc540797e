"""patchify / unpatchify and the neighbour gather: our kernels against the plain-PyTorch references.

    python -m pytest benchmarks/bench_patchify_gather.py -q

For each shape the official models use, both implementations run on the same inputs in the same
run; pytest-benchmark records ours (group = the case), and a "ratio" line gives the reference
median over ours (> 1: ours is faster). Timings are reported, never asserted.

Notes for reading the CPU numbers: with patch size 1 the reference returns a strided view (no
copy) while the op returns a contiguous tensor, so that ratio compares a copy with nothing. The
large gathers write 50-130 MB outputs; fresh pages cost page faults that can dominate both sides
(PyTorch's THP_MEM_ALLOC_ENABLE=1 makes them huge pages).
"""
import statistics
import time

import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference

OPS = torch.ops.fractal_ext  # loaded by fractal_ext.ops
assert ops.EXTENSION_AVAILABLE, "build the extension first"

# "cpu-1thread" runs the same CPU case on one thread: on a shared machine the two-thread numbers
# mostly measure how long a descheduled OpenMP worker takes to wake up.
DEVICES = [
    "cpu",
    "cpu-1thread",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


def _indices(batch, seq_len, selected, device):
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(batch * seq_len, generator=g)[:selected].sort().values  # distinct, ascending
    return (flat // seq_len).to(device), (flat % seq_len).to(device)


def _patchify(shape, patch):
    def make(device):
        images = torch.randn(shape, device=device)
        return (lambda: OPS.patchify(images, patch)), (lambda: reference.patchify(images, patch))

    return make


def _unpatchify(shape, patch):
    def make(device):
        patches = reference.patchify(torch.randn(shape, device=device), patch).contiguous()
        return (lambda: OPS.unpatchify(patches, patch)), (lambda: reference.unpatchify(patches, patch))

    return make


def _gather(batch, seq_len, channels, selected):
    def make(device):
        conditions = torch.randn(batch, seq_len, channels, device=device)
        bi, ti = _indices(batch, seq_len, selected, device)
        return (
            lambda: OPS.gather_neighbour_conditions(conditions, bi, ti),
            lambda: reference.gather_neighbour_conditions(conditions, bi, ti),
        )

    return make


def _gather_backward(batch, seq_len, channels, selected):
    def make(device):
        grad = torch.randn(5, selected, channels, device=device)
        bi, ti = _indices(batch, seq_len, selected, device)
        return (
            lambda: OPS.gather_neighbour_conditions_backward(grad, bi, ti, batch, seq_len),
            lambda: reference.gather_neighbour_conditions_backward(grad, bi, ti, batch, seq_len),
        )

    return make


CASES = {
    # level-0 images of the 64x64 and 256x256 models; level-1/2 patches flattened over the batch
    "patchify[64,3,64,64]/4": _patchify((64, 3, 64, 64), 4),
    "patchify[16,3,256,256]/16": _patchify((16, 3, 256, 256), 16),
    "patchify[4096,3,16,16]/4": _patchify((4096, 3, 16, 16), 4),
    "patchify[8192,3,4,4]/1": _patchify((8192, 3, 4, 4), 1),
    "unpatchify[64,3,64,64]/4": _unpatchify((64, 3, 64, 64), 4),
    "unpatchify[16,3,256,256]/16": _unpatchify((16, 3, 256, 256), 16),
    "unpatchify[4096,3,16,16]/4": _unpatchify((4096, 3, 16, 16), 4),
    "unpatchify[8192,3,4,4]/1": _unpatchify((8192, 3, 4, 4), 1),
    # sampling, level 0 (CFG doubles the batch): a few tokens of [2B, 256, 1024] per step
    "gather[64,256,1024]M=2": _gather(64, 256, 1024, 2),
    "gather[64,256,1024]M=50": _gather(64, 256, 1024, 50),
    # sampling, level 1: [2N, 16, 512] with M = 2N..32N
    "gather[1024,16,512]M=4096": _gather(1024, 16, 512, 4096),
    # training, level 0: [B, 256, 1024], M = 0.8 * B * 256
    "gather[32,256,1024]M=6554": _gather(32, 256, 1024, 6554),
    "gather_backward[1024,16,512]M=4096": _gather_backward(1024, 16, 512, 4096),
    "gather_backward[32,256,1024]M=6554": _gather_backward(32, 256, 1024, 6554),
}


def _median_seconds(fn, sync, budget=0.4, max_reps=200):
    fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 5 or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_ours_vs_reference(benchmark, capsys, case, device):
    ours, ref = CASES[case]("cuda" if device == "cuda" else "cpu")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.testing.assert_close(ours(), ref(), rtol=1e-6, atol=1e-6)  # same work, same answer
    threads = torch.get_num_threads()
    if device == "cpu-1thread":
        torch.set_num_threads(1)
    try:
        ours_s = _median_seconds(ours, sync)
        ref_s = _median_seconds(ref, sync)
        benchmark.pedantic(lambda: (ours(), sync()), rounds=5, warmup_rounds=1)
    finally:
        torch.set_num_threads(threads)
    ratio = ref_s / ours_s
    benchmark.group = f"{case} {device}"
    benchmark.extra_info.update(reference_median_s=ref_s, ours_median_s=ours_s, ratio=ratio)
    with capsys.disabled():
        print(f"\n{case:38s} {device:11s} ours {ours_s * 1e3:9.3f} ms  reference {ref_s * 1e3:9.3f} ms  "
              f"ratio: {ratio:.3g}x")
