"""llama_block_step / vit_block_step (one decoding step of a whole block, CPU) against the
composite of torch ops it replaces (reference.*_block_step on torch's linear and the KV-cache
attention operator), at the one-token decoding shapes of FractalAR-64 (2 rows: one image with
its CFG twin), in one run; and in the CPU bf16 mode at batch 4 and 8, the operator against the
step composed on oneDNN's bf16 GEMMs. Blocks are cycled through a set larger than the last-level cache, as
they are when a model is decoded.

    python -m pytest benchmarks/bench_block_step.py -s
"""
import math
import time

import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.models.layers import rope_2d_table, swiglu_hidden_dim
from fractal_ext.sampler import onednn
from fractal_ext.sampler.decode import STREAMING_WIDTH
from fractal_ext.sampler.onednn import onednn_linear_available

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")

CACHE_BYTES = 128 * 2**20
ROWS = 2
# name: (kind, dim, heads, MLP hidden width, cache positions, position decoded)
CASES = {
    "FractalAR-64 level 0": ("llama", 1024, 16, swiglu_hidden_dim(1024), 257, 128),
    "FractalAR-64 level 1": ("llama", 512, 8, swiglu_hidden_dim(512), 17, 8),
    "FractalAR-64 pixel head": ("vit", 128, 4, 512, 3, 1),
}


def block_arguments(kind, dim, heads, hidden, max_len, position, rows=ROWS):
    """The weights of one block and its caches for `rows` rows, in the op's argument order (after x)."""
    def matrix(rows, cols):
        return torch.randn(rows, cols) / math.sqrt(cols)

    def vector(n):
        return torch.randn(n) * 0.1 + 1

    head_dim = dim // heads
    caches = (torch.randn(rows, heads, max_len, head_dim), torch.randn(rows, heads, max_len, head_dim))
    lengths = torch.full((rows,), position, dtype=torch.int32)
    if kind == "llama":
        weights = (vector(dim), matrix(3 * dim, dim), matrix(dim, dim), vector(dim), matrix(hidden, dim),
                   matrix(dim, hidden), matrix(hidden, dim))
        rope = rope_2d_table(reference.grid_side(max_len - 1), head_dim)[position]
        return (*weights, rope, *caches, lengths, 1e-5, head_dim**-0.5)
    weights = (vector(dim), vector(dim), matrix(3 * dim, dim), vector(3 * dim), matrix(dim, dim), vector(dim),
               vector(dim), vector(dim), matrix(hidden, dim), vector(hidden), matrix(dim, hidden), vector(dim))
    return (*weights, *caches, lengths, 1e-6, head_dim**-0.5)


def seconds_per_step(step, x, blocks, repeats=3):
    for arguments in blocks:
        step(x, *arguments)
    start = time.perf_counter()
    for _ in range(repeats):
        for arguments in blocks:
            step(x, *arguments)
    return (time.perf_counter() - start) / (repeats * len(blocks))


@pytest.mark.parametrize("case", list(CASES))
def test_block_step_vs_composite(benchmark, case):
    kind, dim, heads, hidden, max_len, position = CASES[case]
    weight_bytes = 4 * (4 * dim * dim + (3 if kind == "llama" else 2) * dim * hidden)
    blocks = [block_arguments(*CASES[case]) for _ in range(max(2, CACHE_BYTES // weight_bytes))]
    x = torch.randn(ROWS, dim)
    fused = ops.llama_block_step if kind == "llama" else ops.vit_block_step
    composite = reference.llama_block_step if kind == "llama" else reference.vit_block_step

    def composed(x, *arguments):
        return composite(x, *arguments, attention=ops.kv_cache_attention)

    ours = seconds_per_step(fused, x, blocks)
    theirs = seconds_per_step(composed, x, blocks)
    benchmark.extra_info.update(ours_s=ours, composite_s=theirs, ratio=theirs / ours)
    benchmark.pedantic(lambda: fused(x, *blocks[0]), rounds=3, iterations=1)
    print(f"\n{case}: ours {ours * 1e6:.0f} us ({weight_bytes / ours / 1e9:.1f} GB/s of weights), "
          f"composite {theirs * 1e6:.0f} us, ratio: {theirs / ours:.2f}x")


def with_bf16_matrices(kind, arguments, convert=torch.Tensor.bfloat16):
    """The block's arguments with its weight matrices as bf16 copies (the CPU bf16 mode), made by
    `convert` (for the oneDNN step: bf16 and packed)."""
    matrices = {1, 2, 4, 5, 6} if kind == "llama" else {2, 4, 8, 10}
    return tuple(convert(a) if i in matrices else a for i, a in enumerate(arguments))


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_block_step_vs_fp32(benchmark, case):
    """The same block step on bf16 weight matrices (half the bytes to stream) against fp32."""
    kind, dim, heads, hidden, max_len, position = CASES[case]
    weight_bytes = 4 * (4 * dim * dim + (3 if kind == "llama" else 2) * dim * hidden)
    blocks = [block_arguments(*CASES[case]) for _ in range(max(2, CACHE_BYTES // weight_bytes))]
    bf16_blocks = [with_bf16_matrices(kind, arguments) for arguments in blocks]
    x = torch.randn(ROWS, dim)
    fused = ops.llama_block_step if kind == "llama" else ops.vit_block_step
    fp32 = seconds_per_step(fused, x, blocks)
    bf16 = seconds_per_step(fused, x, bf16_blocks)
    benchmark.extra_info.update(fp32_s=fp32, bf16_s=bf16, ratio=fp32 / bf16)
    benchmark.pedantic(lambda: fused(x, *bf16_blocks[0]), rounds=3, iterations=1)
    print(f"\n{case}: bf16 weights {bf16 * 1e6:.0f} us ({weight_bytes / 2 / bf16 / 1e9:.1f} GB/s of weights), "
          f"fp32 {fp32 * 1e6:.0f} us, ratio: {fp32 / bf16:.2f}x")


@pytest.mark.skipif(not onednn_linear_available(), reason="torch has no oneDNN linear here")
@pytest.mark.parametrize("rows", [8, 16])
@pytest.mark.parametrize("case", [case for case, shape in CASES.items() if shape[1] >= STREAMING_WIDTH])
def test_bf16_onednn_step_vs_bf16_kernel(benchmark, case, rows):
    """The CPU bf16 mode at batch 4 and 8 (8 and 16 rows): the block-step operator on bf16 weights
    against the step composed on oneDNN's bf16 GEMMs (weights packed in its layout), which the
    sampler takes beyond 8 rows in the widest blocks (fractal_ext.sampler.decode.block_step_path)."""
    kind, dim, heads, hidden, max_len, position = CASES[case]
    weight_bytes = 2 * (4 * dim * dim + 3 * dim * hidden)
    blocks = [block_arguments(*CASES[case], rows=rows) for _ in range(max(2, CACHE_BYTES // weight_bytes))]
    kernel_blocks = [with_bf16_matrices(kind, arguments) for arguments in blocks]
    onednn_blocks = [with_bf16_matrices(kind, arguments, lambda w: onednn.reorder(w.bfloat16(), rows))
                     for arguments in blocks]
    x = torch.randn(rows, dim)

    def onednn_step(x, *arguments):
        return reference.llama_block_step(x, *arguments, attention=ops.kv_cache_attention, linear=onednn.bf16_linear)

    hidden_x = torch.randn(rows, hidden)

    def gemms_only(x, _norm, wqkv, wo, _ffn_norm, w1, w2, w3, *_rest):
        """The step's five GEMMs and nothing else: the floor of any step on these GEMMs."""
        for weight in (wqkv, wo, w1, w3):
            onednn.bf16_linear(x, weight)
        return onednn.bf16_linear(hidden_x, w2)

    kernel = seconds_per_step(ops.llama_block_step, x, kernel_blocks)
    composed = seconds_per_step(onednn_step, x, onednn_blocks)
    gemms = seconds_per_step(gemms_only, x, onednn_blocks)
    benchmark.extra_info.update(kernel_s=kernel, onednn_s=composed, gemms_s=gemms, ratio=kernel / composed)
    benchmark.pedantic(lambda: onednn_step(x, *onednn_blocks[0]), rounds=3, iterations=1)
    print(f"\n{case}, {rows} rows: bf16 kernel {kernel * 1e6:.0f} us, oneDNN bf16 step {composed * 1e6:.0f} us "
          f"(its GEMMs alone {gemms * 1e6:.0f} us), ratio: {kernel / composed:.2f}x")
