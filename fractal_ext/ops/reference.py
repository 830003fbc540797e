"""Plain-PyTorch versions of the fractal_ext operators.

They compute what the official code computes, the way it computes it (composite torch ops).
They are the test oracle of the C++/CUDA kernels and the fallback when the extension is not
built. Shapes and semantics are documented on the schemas, in the schema.cpp of each operator
folder under csrc/.
"""
import math

import torch
import torch.nn.functional as F

from fractal_ext.pixels import token_to_pixel_value


def grid_side(seq_len: int) -> int:
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise ValueError(f"sequence length {seq_len} is not a square grid")
    return side


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwcpq", x)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    b, seq_len, features = patches.shape
    p = patch_size
    side = grid_side(seq_len)
    c = features // (p * p)
    x = patches.reshape(b, side, side, c, p, p)
    x = torch.einsum("nhwcpq->nchpwq", x)
    return x.reshape(b, c, side * p, side * p)


def neighbour_conditions(middle: torch.Tensor) -> list[torch.Tensor]:
    """[B, L, C] -> [middle, top, right, bottom, left], each [B, L, C], zero off the grid."""
    b, seq_len, c = middle.shape
    side = grid_side(seq_len)
    grid = middle.reshape(b, side, side, c)
    zero_row = grid.new_zeros(b, 1, side, c)
    zero_col = grid.new_zeros(b, side, 1, c)
    top = torch.cat([zero_row, grid[:, :-1]], dim=1)
    right = torch.cat([grid[:, :, 1:], zero_col], dim=2)
    bottom = torch.cat([grid[:, 1:], zero_row], dim=1)
    left = torch.cat([zero_col, grid[:, :, :-1]], dim=2)
    return [middle] + [x.reshape(b, seq_len, c) for x in (top, right, bottom, left)]


def gather_neighbour_conditions(conditions, batch_index, token_index):
    five = neighbour_conditions(conditions)
    return torch.stack([x[batch_index, token_index] for x in five])


def gather_neighbour_conditions_backward(grad, batch_index, token_index, batch_size, seq_len):
    conditions = grad.new_zeros(batch_size, seq_len, grad.shape[-1], requires_grad=True)
    with torch.enable_grad():
        out = gather_neighbour_conditions(conditions, batch_index, token_index)
        (result,) = torch.autograd.grad(out, conditions, grad)
    return result


def kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """Writes k, v into the caches in place and attends causally over the valid prefix.

    cache_seqlens is not advanced: the caller adds T to it after the call."""
    batch, new_len, heads, head_dim = q.shape
    max_len = k_cache.shape[2]
    starts = cache_seqlens.long().tolist()
    for b, start in enumerate(starts):
        if start < 0 or start + new_len > max_len:
            raise ValueError(f"kv_cache_attention: cache_seqlens[{b}]={start} + {new_len} new positions "
                             f"overflows the cache of {max_len}")
        k_cache[b, :, start:start + new_len] = k[b].transpose(0, 1)
        v_cache[b, :, start:start + new_len] = v[b].transpose(0, 1)
    scores = torch.einsum("bthd,bhsd->bhts", q.float(), k_cache.float()) * scale
    key_pos = torch.arange(max_len, device=q.device)
    query_pos = cache_seqlens.long()[:, None] + torch.arange(new_len, device=q.device)  # [B, T]
    visible = key_pos[None, None, :] <= query_pos[:, :, None]  # [B, T, S]
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    # Zero the value rows no query sees, so that unwritten cache slots (torch.empty garbage, NaN,
    # inf) cannot leak into the output through 0 * NaN.
    unseen = key_pos[None, :] > cache_seqlens.long()[:, None] + (new_len - 1)  # [B, S]
    values = v_cache.float().masked_fill(unseen[:, None, :, None], 0.0)
    out = torch.einsum("bhts,bhsd->bthd", scores.softmax(-1), values)
    return out.to(q.dtype)


def guided_logits(logits, cfg, temperature, filter_threshold):
    """Temperature (multiplies the logits), conditional filter, CFG (in logits' dtype); docs/semantics.md."""
    logits = logits * temperature
    if cfg is None:
        return logits
    n = logits.shape[0] // 2
    cond, uncond = logits[:n], logits[n:]
    unlikely = torch.softmax(cond, dim=-1) < filter_threshold
    lifted = cond - cond.max(dim=-1, keepdim=True).values + uncond.max(dim=-1, keepdim=True).values
    uncond = torch.where(unlikely, torch.maximum(uncond, lifted), uncond)
    cfg = torch.as_tensor(cfg, dtype=logits.dtype, device=logits.device)
    if cfg.dim() == 1:  # one scale per conditional row
        cfg = cfg[:, None]
    return uncond + cfg * (cond - uncond)


def guided_probabilities(logits, cfg, temperature, filter_threshold):
    """guided_logits, then the softmax (in logits' dtype)."""
    return torch.softmax(guided_logits(logits, cfg, temperature, filter_threshold), dim=-1)


def cfg_filter_sample(logits, cfg, temperature, filter_threshold, pixel_mean, pixel_std, greedy, generator=None):
    """Rows whose logits hold a NaN or are all -inf have no distribution: they get token 0 and a
    NaN pixel value, so the failure shows in the image instead of as an out-of-range id."""
    probs = guided_probabilities(logits.float(), cfg, temperature, filter_threshold)
    broken = ~torch.isfinite(probs).all(dim=-1)
    probs = torch.where(broken[:, None], torch.ones_like(probs), probs)
    if greedy:
        tokens = probs.argmax(dim=-1)
    else:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    tokens = torch.where(broken, torch.zeros_like(tokens), tokens)
    values = token_to_pixel_value(tokens, pixel_mean, pixel_std)
    values = torch.where(broken, torch.full_like(values, float("nan")), values)
    return tokens, values


def small_batch_linear(x, weight, bias=None):
    """F.linear; with bf16 weights and fp32 x (the CPU bf16 sampling mode) x is rounded to bf16,
    as a bf16 linear rounds its input, and the (exact) products are summed in fp32: y stays fp32."""
    if weight.dtype == torch.bfloat16 and x.dtype == torch.float32:
        return F.linear(x.bfloat16().float(), weight.float(), bias)
    return F.linear(x, weight, bias)


def rms_norm(x, weight, eps):
    """The AR levels' RMSNorm: statistics in fp32, rounded back to x's dtype, then the weight."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def rotate_pairs(x, rope):
    """x [..., head_dim] with consecutive pairs rotated by rope [..., head_dim/2, 2] (cos, sin,
    broadcast against x's leading dims), in fp32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = rope[..., 0], rope[..., 1]
    first, second = pairs[..., 0], pairs[..., 1]
    return torch.stack([first * cos - second * sin, second * cos + first * sin], dim=-1).flatten(-2).to(x.dtype)


def llama_block_step(x, attention_norm_weight, wqkv, wo, ffn_norm_weight, w1, w2, w3, rope, k_cache, v_cache,
                     cache_seqlens, norm_eps, scale, *, attention=kv_cache_attention, linear=small_batch_linear):
    """One decoding step of a LLaMA block, x [R, D] -> [R, D]; `attention` is the KV-cache
    attention to use (the fused operator when this composes the step on CUDA or under autocast),
    `linear(x, weight)` the linear layer (the sampler's oneDNN bf16 GEMM, on its packed weights)."""
    return llama_block_positions(x[:, None], attention_norm_weight, wqkv, wo, ffn_norm_weight, w1, w2, w3, rope[None],
                                 k_cache, v_cache, cache_seqlens, norm_eps, scale, attention=attention,
                                 linear=linear)[:, 0]


def llama_block_positions(x, attention_norm_weight, wqkv, wo, ffn_norm_weight, w1, w2, w3, rope, k_cache, v_cache,
                          cache_seqlens, norm_eps, scale, *, attention=kv_cache_attention, linear=small_batch_linear):
    """llama_block_step over T consecutive positions at once, x [R, T, D], rope [T, head_dim/2, 2]
    -> [R, T, D]; the caches get the T positions from cache_seqlens on (each attends causally)."""
    rows, new_len, dim = x.shape
    heads = k_cache.shape[1]
    qkv = linear(rms_norm(x, attention_norm_weight, norm_eps), wqkv)
    qkv = qkv.view(rows, new_len, 3, heads, dim // heads)
    q, k = rotate_pairs(qkv[:, :, :2], rope[:, None, None]).unbind(2)
    attended = attention(q, k, qkv[:, :, 2], k_cache, v_cache, cache_seqlens, scale)
    x = x + linear(attended.reshape(rows, new_len, dim), wo)
    h = rms_norm(x, ffn_norm_weight, norm_eps)
    return x + linear(F.silu(linear(h, w1)) * linear(h, w3), w2)


def vit_block_step(x, norm1_weight, norm1_bias, qkv_weight, qkv_bias, proj_weight, proj_bias, norm2_weight,
                   norm2_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias, k_cache, v_cache, cache_seqlens, norm_eps,
                   scale, *, attention=kv_cache_attention, linear=small_batch_linear):
    """One decoding step of a causal ViT block (pixel heads), x [R, D] -> [R, D] (`attention`,
    `linear`: see llama_block_step)."""
    rows, dim = x.shape
    heads = k_cache.shape[1]
    normed = F.layer_norm(x, (dim,), norm1_weight, norm1_bias, norm_eps)
    q, k, v = linear(normed, qkv_weight, qkv_bias).view(rows, 1, 3, heads, dim // heads).unbind(2)
    attended = attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)
    x = x + linear(attended.reshape(rows, dim), proj_weight, proj_bias)
    normed = F.layer_norm(x, (dim,), norm2_weight, norm2_bias, norm_eps)
    hidden = F.gelu(linear(normed, fc1_weight, fc1_bias))
    return x + linear(hidden, fc2_weight, fc2_bias)
