"""small_batch_linear against torch's linear at the one-token decoding shapes of FractalAR-64
(2 rows: one image with its CFG twin), on the CPU, in one run. Weights are cycled through a set
larger than the last-level cache, as they are when a model is decoded.

    python -m pytest benchmarks/bench_small_batch_linear.py -s
"""
import time

import pytest
import torch
import torch.nn.functional as F

from fractal_ext import ops

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")

# (rows, in_features, out_features): level-0 qkv / FFN up / FFN down, level-1 qkv / FFN.
SHAPES = [(2, 1024, 3072), (2, 1024, 2816), (2, 2816, 1024), (2, 512, 1536), (2, 1536, 512), (4, 1024, 2816), (8, 1024, 2816)]
CACHE_BYTES = 128 * 2**20


def seconds_per_call(fn, weights, repeats=3):
    for weight in weights:
        fn(weight)
    start = time.perf_counter()
    for _ in range(repeats):
        for weight in weights:
            fn(weight)
    return (time.perf_counter() - start) / (repeats * len(weights))


@pytest.mark.parametrize("rows, in_features, out_features", SHAPES)
def test_small_batch_linear_vs_torch(benchmark, rows, in_features, out_features):
    count = max(2, CACHE_BYTES // (4 * in_features * out_features))
    weights = [torch.randn(out_features, in_features) for _ in range(count)]
    x = torch.randn(rows, in_features)
    ours = seconds_per_call(lambda w: ops.small_batch_linear(x, w, None), weights)
    theirs = seconds_per_call(lambda w: F.linear(x, w), weights)
    benchmark.extra_info.update(ours_s=ours, torch_s=theirs, ratio=theirs / ours)
    benchmark.pedantic(lambda: ops.small_batch_linear(x, weights[0], None), rounds=3, iterations=1)
    gbps = 4 * in_features * out_features / ours / 1e9
    print(f"\n{rows}x{in_features}->{out_features}: ours {ours * 1e6:.0f} us ({gbps:.1f} GB/s), "
          f"torch {theirs * 1e6:.0f} us, ratio: {theirs / ours:.2f}x")


@pytest.mark.parametrize("rows, in_features, out_features", SHAPES)
def test_bf16_weights_vs_fp32_weights(benchmark, rows, in_features, out_features):
    """The CPU bf16 mode's GEMV (bf16 weights: half the bytes) against the fp32 one, and torch's
    own bf16 linear, on weight sets of the same size in bytes."""
    count = max(2, CACHE_BYTES // (4 * in_features * out_features))
    weights = [torch.randn(out_features, in_features) for _ in range(count)]
    bf16_weights = [w.bfloat16() for w in weights]
    x = torch.randn(rows, in_features)
    fp32 = seconds_per_call(lambda w: ops.small_batch_linear(x, w, None), weights)
    bf16 = seconds_per_call(lambda w: ops.small_batch_linear(x, w, None), bf16_weights)
    torch_bf16 = seconds_per_call(lambda w: F.linear(x.bfloat16(), w), bf16_weights)
    benchmark.extra_info.update(fp32_s=fp32, bf16_s=bf16, torch_bf16_s=torch_bf16, ratio=fp32 / bf16)
    benchmark.pedantic(lambda: ops.small_batch_linear(x, bf16_weights[0], None), rounds=3, iterations=1)
    print(f"\n{rows}x{in_features}->{out_features}: bf16 weights {bf16 * 1e6:.0f} us "
          f"({2 * in_features * out_features / bf16 / 1e9:.1f} GB/s), fp32 weights {fp32 * 1e6:.0f} us, "
          f"torch bf16 {torch_bf16 * 1e6:.0f} us; ratio fp32 / bf16: {fp32 / bf16:.2f}x, "
          f"torch bf16 / ours bf16: {torch_bf16 / bf16:.2f}x")
