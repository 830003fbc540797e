"""kv_cache_attention: the compiled op against the plain-PyTorch reference, at the decode shapes of
the official models, on the same inputs in one run.

    python -m pytest benchmarks/bench_kv_cache_attention.py -s            # all devices present
    python -m pytest benchmarks/bench_kv_cache_attention.py -s -k cpu     # CPU only

pytest-benchmark records our op; both sides are also timed with the same perf_counter loop
(median of repeats), and each case prints "ratio: X.Yx" (reference time / our time).
"""
import math
import statistics
import time

import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")

CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
)

# name: (batch, heads, head_dim, max_len, new_len, prefix length before the new position)
SHAPES = {
    "ar_level0_b2_prefix64": (2, 16, 64, 257, 1, 64),
    "ar_level0_b2_prefix256": (2, 16, 64, 257, 1, 256),
    "ar_level0_b64_prefix128": (64, 16, 64, 257, 1, 128),
    "ar_level0_b64_prefix256": (64, 16, 64, 257, 1, 256),
    "ar_level1_b2_prefix8": (2, 8, 64, 17, 1, 8),
    "ar_level1_b512_prefix16": (512, 8, 64, 17, 1, 16),
    "pixel_head_b2_d32": (2, 4, 32, 4, 1, 2),
    "pixel_head_b8192_d32": (8192, 4, 32, 4, 1, 2),
    "pixel_head_b8192_d16": (8192, 4, 16, 4, 1, 2),
}


def make_inputs(batch, heads, head_dim, max_len, new_len, prefix, dtype, device):
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(dtype=dtype, device=device)

    qkv = randn(batch, new_len, 3 * heads * head_dim).view(batch, new_len, 3, heads, head_dim)
    q, k, v = qkv.unbind(2)  # the views a fused qkv projection produces
    k_cache, v_cache = randn(batch, heads, max_len, head_dim), randn(batch, heads, max_len, head_dim)
    cache_seqlens = torch.full((batch,), prefix, dtype=torch.int32, device=device)
    return q, k, v, k_cache, v_cache, cache_seqlens, 1 / math.sqrt(head_dim)


def median_seconds(fn, device, min_seconds=0.25, min_repeats=5, max_repeats=200):
    """Median wall time of one call (synchronised on CUDA) after two warm-up calls."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    while len(times) < min_repeats or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_kv_cache_attention_speed(benchmark, capsys, shape, dtype, device):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("the models run float32 on the CPU")
    args = make_inputs(*SHAPES[shape], dtype, device)
    op = torch.ops.fractal_ext.kv_cache_attention.default

    def ours():
        return op(*args)

    def plain():
        return reference.kv_cache_attention(*args)

    torch.testing.assert_close(ours().float(), plain().float(), atol=2e-2, rtol=2e-2)
    ours_s, plain_s = median_seconds(ours, device), median_seconds(plain, device)
    benchmark.extra_info.update(reference_ms=plain_s * 1e3, ours_ms=ours_s * 1e3, ratio=plain_s / ours_s)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    benchmark.pedantic(lambda: (ours(), sync()), rounds=20, iterations=1, warmup_rounds=1)
    with capsys.disabled():
        print(
            f"\nkv_cache_attention {shape} {device} {str(dtype)[6:]}: reference {plain_s * 1e3:.3f} ms, "
            f"ours {ours_s * 1e3:.3f} ms, ratio: {plain_s / ours_s:.1f}x"
        )
