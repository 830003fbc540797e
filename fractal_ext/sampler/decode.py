"""One-token decoding through the blocks of a level, against KV caches.

At batch 1 a sampling run makes tens of thousands of these calls on tiny tensors, so per-op
overhead is what costs. On the CPU with a few rows, a whole block step is one operator
(`llama_block_step` / `vit_block_step`: weight-streaming GEMVs, the KV-cache attention and plain
loops for the rest); in the CPU bf16 mode it reads bf16 copies of the weight matrices. Elsewhere
(CUDA, autocast, larger batches) the step is composed from torch's linear layers and the KV-cache
attention operator, with the same arithmetic as the modules and the modules' fp32 weights.
Weights are read straight from the modules (no module call machinery).
"""
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from fractal_ext import ops
from fractal_ext.ops import reference


# Up to how many rows the block-step kernels beat the composed step on the CPU (benchmarks/
# bench_block_step.py at other row counts): their single-pass GEMVs win while the weights stream
# from memory (width >= 512: 1.4x at 8 rows, 1.1x at 16), but lose to BLAS on cache-resident
# pixel-head weights beyond 4 rows (width 128: 0.75x at 8 rows).
SMALL_BATCH_ROWS = 4
STREAMING_WIDTH, STREAMING_ROWS = 512, 16


def block_step_kernel_fits(rows: int, width: int) -> bool:
    """Whether the block-step kernels beat the composed step at this row count and block width
    (where the run's compute paths allow them at all: CPU, fp32)."""
    return rows <= SMALL_BATCH_ROWS or (width >= STREAMING_WIDTH and rows <= STREAMING_ROWS)


def matmul_dtype(x):
    """The dtype linear layers produce for x (the autocast dtype inside autocast): KV caches hold it."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def layer_norm(x, norm):
    return torch.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class BlockWeights(NamedTuple):
    """A block's tensors in its block-step operator's argument order, read once per level call
    (module attribute lookups cost more than a small block step). `kernel_tensors`: what the
    operator reads, the same tensors or (CPU bf16 mode) with bf16 copies of the weight matrices;
    the composed step reads `tensors`."""

    tensors: tuple
    eps: float
    kernel_tensors: tuple


def _block_weights(tensors, matrices, eps, weight_copy) -> BlockWeights:
    if weight_copy is None:
        return BlockWeights(tensors, eps, tensors)
    return BlockWeights(tensors, eps, tuple(weight_copy(t) if i in matrices else t for i, t in enumerate(tensors)))


def llama_block_weights(block, weight_copy: Callable | None = None) -> BlockWeights:
    """A LLaMA block's weights; `weight_copy(tensor)` gives the weight matrices the kernels read
    (None: the modules' own)."""
    attention, ffn = block.attention, block.feed_forward
    tensors = (block.attention_norm.weight, attention.wqkv.weight, attention.wo.weight, block.ffn_norm.weight,
               ffn.w1.weight, ffn.w2.weight, ffn.w3.weight)
    return _block_weights(tensors, {1, 2, 4, 5, 6}, block.attention_norm.eps, weight_copy)


def vit_block_weights(block, weight_copy: Callable | None = None) -> BlockWeights:
    """A ViT block's weights (see llama_block_weights)."""
    attn, mlp = block.attn, block.mlp
    tensors = (block.norm1.weight, block.norm1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias,
               block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    return _block_weights(tensors, {2, 4, 8, 10}, block.norm1.eps, weight_copy)


def llama_block_decode(x, weights: BlockWeights, rope, caches, positions, scale, kernels: bool):
    """x [R, D] at one position (rope [head_dim/2, 2]: its cos, sin) -> [R, D]; the block's
    caches get this position's k, v. `kernels`: the run may use the block-step operators."""
    if kernels and block_step_kernel_fits(*x.shape):
        return ops.llama_block_step(x, *weights.kernel_tensors, rope, *caches, positions, weights.eps, scale)
    return reference.llama_block_step(x, *weights.tensors, rope, *caches, positions, weights.eps, scale,
                                      attention=attention_on_caches)


def vit_block_decode(x, weights: BlockWeights, caches, positions, scale, kernels: bool):
    """Causal ViT block (pixel heads), x [R, W] at one position -> [R, W]."""
    if kernels and block_step_kernel_fits(*x.shape):
        return ops.vit_block_step(x, *weights.kernel_tensors, *caches, positions, weights.eps, scale)
    return reference.vit_block_step(x, *weights.tensors, *caches, positions, weights.eps, scale,
                                    attention=attention_on_caches)


def attention_on_caches(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """ops.kv_cache_attention on caches whose rows may be wider than the heads (on CUDA, to the
    kernel's multiple: fractal_ext.sampler.plan.ComputePaths.cache_head_dim): q, k and v get zero columns,
    which add nothing to q.k, and the output loses them again."""
    pad = k_cache.shape[-1] - q.shape[-1]
    if pad == 0:
        return ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)
    q, k, v = (F.pad(x, (0, pad)) for x in (q, k, v))
    return ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)[..., :-pad]
