"""One-token decoding through the blocks of a level, with the KV-cache attention operator.

At batch 1 a sampling run makes tens of thousands of these calls on tiny tensors, so per-op
overhead is what costs: activations stay 2-D [rows, dim] (linear layers map to one addmm),
weights are read straight from the modules (no module call machinery), the rotary embedding
of one position is a precomputed (cos, sin) pair applied to q and k together, and on the CPU the
linear layers run the weight-streaming `small_batch_linear` kernel.
"""
import torch
import torch.nn.functional as F

from fractal_ext import ops


# Up to this many rows the weight-streaming kernel beats BLAS on the CPU (measured: 2 rows 1.6-2.4x).
SMALL_BATCH_ROWS = 4


def linear(x, weight, bias=None):
    """x [R, K] -> [R, N]: the weight-streaming kernel for a few fp32 rows on the CPU, else torch."""
    if x.is_cpu and x.dtype == torch.float32 and x.shape[0] <= SMALL_BATCH_ROWS and not torch.is_autocast_enabled("cpu"):
        return ops.small_batch_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def matmul_dtype(x):
    """The dtype linear layers produce for x (the autocast dtype inside autocast): KV caches hold it."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def layer_norm(x, norm):
    return torch.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def rms_norm(x, norm):
    # fp32 statistics, as the module computes them.
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + norm.eps)).to(x.dtype) * norm.weight


def rope_rotation(rope_table: torch.Tensor, position: int):
    """(cos, sin) [head_dim] of one position for rotating interleaved pairs:
    rotated = x * cos + swap_pairs(x) * sin, with sin carrying the sign of each pair's first lane."""
    cos, sin = rope_table[position].unbind(-1)  # [head_dim / 2] each
    cos = cos.repeat_interleave(2)
    sin = torch.stack([-sin, sin], dim=-1).flatten()
    return cos, sin


def rotate(x, cos, sin):
    """x [..., head_dim] rotated pairwise in fp32 (the module's apply_rope, in fewer ops)."""
    x32 = x.float()
    swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x32 * cos + swapped * sin).to(x.dtype)


def llama_block_decode(x, block, rotation, k_cache, v_cache, positions, heads, head_dim, scale):
    """x [R, D] (one position) -> [R, D]; the block's caches get this position's k, v."""
    rows = x.shape[0]
    attention = block.attention
    qkv = linear(rms_norm(x, block.attention_norm), attention.wqkv.weight).view(rows, 1, 3, heads, head_dim)
    qk = rotate(qkv[:, :, :2], *rotation)
    attended = ops.kv_cache_attention(qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2], k_cache, v_cache, positions, scale)
    x = x + linear(attended.view(rows, -1), attention.wo.weight)
    h = rms_norm(x, block.ffn_norm)
    ffn = block.feed_forward
    return x + linear(F.silu(linear(h, ffn.w1.weight)) * linear(h, ffn.w3.weight), ffn.w2.weight)


def vit_block_decode(x, block, k_cache, v_cache, positions, heads, head_dim):
    """Causal ViT block (pixel heads), x [R, W] (one position) -> [R, W]."""
    rows = x.shape[0]
    attn = block.attn
    qkv = linear(layer_norm(x, block.norm1), attn.qkv.weight, attn.qkv.bias).view(rows, 1, 3, heads, head_dim)
    attended = ops.kv_cache_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], k_cache, v_cache, positions,
                                      attn.scale)
    x = x + linear(attended.view(rows, -1), attn.proj.weight, attn.proj.bias)
    mlp = block.mlp
    hidden = F.gelu(linear(layer_norm(x, block.norm2), mlp.fc1.weight, mlp.fc1.bias))
    return x + linear(hidden, mlp.fc2.weight, mlp.fc2.bias)
