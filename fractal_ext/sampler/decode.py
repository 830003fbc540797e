"""One-token decoding through the blocks of a level, against KV caches.

At batch 1 a sampling run makes tens of thousands of these calls on tiny tensors, so per-op
overhead is what costs. On the CPU in fp32 with a few rows, a whole block step is one operator
(`llama_block_step` / `vit_block_step`: weight-streaming GEMVs, the KV-cache attention and plain
loops for the rest). Elsewhere (CUDA, autocast, larger batches) the step is composed from torch's
linear layers and the KV-cache attention operator, with the same arithmetic as the modules.
Weights are read straight from the modules (no module call machinery).
"""
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


def llama_block_weights(block) -> tuple:
    """The tensors and norm eps of a LLaMA block in llama_block_step's argument order (read once
    per level call: module attribute lookups cost more than a small block step)."""
    attention, ffn = block.attention, block.feed_forward
    return (block.attention_norm.weight, attention.wqkv.weight, attention.wo.weight, block.ffn_norm.weight,
            ffn.w1.weight, ffn.w2.weight, ffn.w3.weight), block.attention_norm.eps


def vit_block_weights(block) -> tuple:
    """The tensors and norm eps of a ViT block in vit_block_step's argument order."""
    attn, mlp = block.attn, block.mlp
    return (block.norm1.weight, block.norm1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias,
            block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight,
            mlp.fc2.bias), block.norm1.eps


def llama_block_decode(x, block_weights, rope, caches, positions, scale, kernels: bool):
    """x [R, D] at one position (rope [head_dim/2, 2]: its cos, sin) -> [R, D]; the block's
    caches get this position's k, v. `kernels`: the run may use the block-step operators."""
    weights, eps = block_weights
    args = (x, *weights, rope, *caches, positions, eps, scale)
    if kernels and block_step_kernel_fits(*x.shape):
        return ops.llama_block_step(*args)
    return reference.llama_block_step(*args, attention=attention_on_caches)


def vit_block_decode(x, block_weights, caches, positions, scale, kernels: bool):
    """Causal ViT block (pixel heads), x [R, W] at one position -> [R, W]."""
    weights, eps = block_weights
    args = (x, *weights, *caches, positions, eps, scale)
    if kernels and block_step_kernel_fits(*x.shape):
        return ops.vit_block_step(*args)
    return reference.vit_block_step(*args, attention=attention_on_caches)


def attention_on_caches(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """ops.kv_cache_attention on caches whose rows may be wider than the heads (on CUDA, to the
    kernel's multiple: fractal_ext.sampler.plan.ComputePaths.cache_head_dim): q, k and v get zero columns,
    which add nothing to q.k, and the output loses them again."""
    pad = k_cache.shape[-1] - q.shape[-1]
    if pad == 0:
        return ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)
    q, k, v = (F.pad(x, (0, pad)) for x in (q, k, v))
    return ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)[..., :-pad]
