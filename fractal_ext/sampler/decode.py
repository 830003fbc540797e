"""One-token decoding through the blocks of a level, against KV caches.

At batch 1 a sampling run makes tens of thousands of these calls on tiny tensors, so per-op
overhead is what costs. On the CPU with a few rows, a whole block step is one operator
(`llama_block_step` / `vit_block_step`: weight-streaming GEMVs, the KV-cache attention and plain
loops for the rest); in the CPU bf16 mode it reads bf16 copies of the weight matrices, and with
more rows than its bf16 GEMVs take in one pass the step is composed on oneDNN's bf16 GEMMs.
Elsewhere (CUDA, autocast, larger batches) the step is composed from torch's linear layers and
the KV-cache attention operator, with the same arithmetic as the modules and the modules' fp32
weights. Weights are read straight from the modules (no module call machinery).
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.sampler import onednn
from fractal_ext.sampler.plan import ComputePaths
from fractal_ext.sampler.workspace import Workspace


# Up to how many rows the block-step kernels beat the composed step on the CPU (benchmarks/
# bench_block_step.py at other row counts): their single-pass GEMVs win while the weights stream
# from memory (width >= 512: 1.4x at 8 rows, 1.1x at 16), but lose to BLAS on cache-resident
# pixel-head weights beyond 4 rows (width 128: 0.75x at 8 rows).
SMALL_BATCH_ROWS = 4
STREAMING_WIDTH, STREAMING_ROWS = 512, 16
# The bf16 kernels' GEMVs take up to 8 rows per pass over the weights. With more rows, oneDNN's
# bf16 GEMMs on weights in its blocked layout win in the widest blocks (benchmarks/
# bench_block_step.py, test_bf16_onednn_step_vs_bf16_kernel, 16 rows: 1.4-1.75x at width 1024);
# at width 512 the composed step's small torch ops eat the GEMMs' gain (0.90-1.03x at 16 rows,
# 0.6-0.8x at 8), so there oneDNN takes over only beyond the kernels' 16 rows, from the fp32
# composed step. FractalAR-64 at batch 8, bf16, the two rules side by side: 95.6 and 88.8 s with
# oneDNN from width 1024, 98.4 and 92.8 s with oneDNN from width 512.
BF16_KERNEL_ROWS = 8
ONEDNN_BF16_WIDTH = 1024


def block_step_kernel_fits(rows: int, width: int) -> bool:
    """Whether the block-step kernels beat the composed step at this row count and block width
    (where the run's compute paths allow them at all: CPU, fp32)."""
    return rows <= SMALL_BATCH_ROWS or (width >= STREAMING_WIDTH and rows <= STREAMING_ROWS)


def block_step_path(rows: int, width: int, paths: ComputePaths) -> str:
    """How a level's one-token block steps of `rows` rows run: "kernel" (the block-step operator),
    "onednn_bf16" (composed on oneDNN bf16 GEMMs, CPU bf16 mode) or "composed" (torch's linear)."""
    kernel = paths.block_step_kernels and block_step_kernel_fits(rows, width)
    if paths.onednn_bf16_steps and rows > BF16_KERNEL_ROWS and (
            width >= ONEDNN_BF16_WIDTH or (width >= STREAMING_WIDTH and not kernel)):
        return "onednn_bf16"
    return "kernel" if kernel else "composed"


def matmul_dtype(x):
    """The dtype linear layers produce for x (the autocast dtype inside autocast): KV caches hold it."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def layer_norm(x, norm):
    return torch.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class BlockWeights(NamedTuple):
    """A block's tensors in its block-step operator's argument order, read once per level call
    (module attribute lookups cost more than a small block step). `tensors`: the modules' own;
    `step` (block_step_path) and the tensors it reads, `step_tensors`: the same, or with the weight
    matrices as bf16 copies (the kernels in the CPU bf16 mode) or packed for oneDNN."""

    tensors: tuple
    eps: float
    step: str
    step_tensors: tuple


def _block_weights(tensors, matrices, eps, rows, paths: ComputePaths, workspace: Workspace) -> BlockWeights:
    step = block_step_path(rows, tensors[0].shape[0], paths)  # tensors[0]: the first norm's weight [width]
    if step == "onednn_bf16":
        copy = workspace.onednn_bf16_copy
    elif step == "kernel" and paths.bf16_weights:
        copy = workspace.bf16_copy
    else:
        return BlockWeights(tensors, eps, step, tensors)
    return BlockWeights(tensors, eps, step, tuple(copy(t) if i in matrices else t for i, t in enumerate(tensors)))


def llama_block_weights(block, rows: int, paths: ComputePaths, workspace: Workspace) -> BlockWeights:
    """A LLaMA block's weights for steps of `rows` rows on the run's compute paths."""
    attention, ffn = block.attention, block.feed_forward
    tensors = (block.attention_norm.weight, attention.wqkv.weight, attention.wo.weight, block.ffn_norm.weight,
               ffn.w1.weight, ffn.w2.weight, ffn.w3.weight)
    return _block_weights(tensors, {1, 2, 4, 5, 6}, block.attention_norm.eps, rows, paths, workspace)


def vit_block_weights(block, rows: int, paths: ComputePaths, workspace: Workspace) -> BlockWeights:
    """A ViT block's weights (see llama_block_weights)."""
    attn, mlp = block.attn, block.mlp
    tensors = (block.norm1.weight, block.norm1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias,
               block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    return _block_weights(tensors, {2, 4, 8, 10}, block.norm1.eps, rows, paths, workspace)


def _composed_linear(weights: BlockWeights):
    return onednn.bf16_linear if weights.step == "onednn_bf16" else reference.small_batch_linear


def llama_block_decode(x, weights: BlockWeights, rope, caches, positions, scale):
    """x [R, D] at one position (rope [head_dim/2, 2]: its cos, sin) -> [R, D]; the block's
    caches get this position's k, v."""
    if weights.step == "kernel":
        return ops.llama_block_step(x, *weights.step_tensors, rope, *caches, positions, weights.eps, scale)
    return reference.llama_block_step(x, *weights.step_tensors, rope, *caches, positions, weights.eps, scale,
                                      attention=attention_on_caches, linear=_composed_linear(weights))


def vit_block_decode(x, weights: BlockWeights, caches, positions, scale):
    """Causal ViT block (pixel heads), x [R, W] at one position -> [R, W]."""
    if weights.step == "kernel":
        return ops.vit_block_step(x, *weights.step_tensors, *caches, positions, weights.eps, scale)
    return reference.vit_block_step(x, *weights.step_tensors, *caches, positions, weights.eps, scale,
                                    attention=attention_on_caches, linear=_composed_linear(weights))


def attention_on_caches(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """ops.kv_cache_attention on caches whose rows may be wider than the heads (on CUDA, to the
    kernel's multiple: fractal_ext.sampler.plan.ComputePaths.cache_head_dim): q, k and v get zero columns,
    which add nothing to q.k, and the output loses them again."""
    pad = k_cache.shape[-1] - q.shape[-1]
    if pad == 0:
        return ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)
    q, k, v = (F.pad(x, (0, pad)) for x in (q, k, v))
    return ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)[..., :-pad]
