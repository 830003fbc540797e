"""Transformer building blocks of the fractal levels.

Attribute names are those of the official checkpoints: LLaMA-style blocks (AR levels) have
`attention_norm`, `attention.wqkv`, `attention.wo`, `ffn_norm`, `feed_forward.w1/w2/w3`;
ViT blocks (MAR levels and pixel heads) have `norm1`, `attn.qkv`, `attn.proj`, `norm2`,
`mlp.fc1`, `mlp.fc2`.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from fractal_ext.ops import reference


# ----------------------------------------------------------------------------- AR (LLaMA) blocks
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalised in fp32 even under autocast, then cast back (as the official code does).
        return reference.rms_norm(x, self.weight, self.eps)


def swiglu_hidden_dim(dim: int) -> int:
    """Hidden width of the SwiGLU feed-forward: 2/3 of 4*dim, rounded up to a multiple of 256."""
    return 256 * math.ceil(int(2 * 4 * dim / 3) / 256)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        hidden = swiglu_hidden_dim(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


def rope_2d_table(grid_side: int, head_dim: int) -> torch.Tensor:
    """cos/sin table [1 + grid_side^2, head_dim/2, 2] of the AR levels' 2-D rotary embedding.

    Row 0 (the condition token) is all zeros, so its rotated q and k are exactly zero. Row
    1 + r*w + c holds the angles (r*f_0 .. r*f_{m/2-1}, c*f_0 .. c*f_{m/2-1}), m = head_dim/2.
    """
    half = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    positions = torch.arange(grid_side).float()
    angles = torch.outer(positions, freqs)  # [side, m/2]
    grid_angles = torch.cat(
        [
            angles[:, None, :].expand(-1, grid_side, -1),  # row angle
            angles[None, :, :].expand(grid_side, -1, -1),  # column angle
        ],
        dim=-1,
    ).reshape(grid_side * grid_side, half)
    table = torch.stack([torch.cos(grid_angles), torch.sin(grid_angles)], dim=-1)
    return torch.cat([torch.zeros(1, half, 2), table])


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; table [T, D/2, 2] (cos, sin) -> x with consecutive pairs rotated, in fp32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos = table[None, :, None, :, 0]
    sin = table[None, :, None, :, 1]
    rotated = torch.stack(
        [pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 1] * cos + pairs[..., 0] * sin], dim=-1
    )
    return rotated.flatten(3).type_as(x)


class KVCache(nn.Module):
    """Keys and values of the positions decoded so far, preallocated: [B, H, S_max, D] each."""

    def __init__(self, batch, heads, max_len, head_dim, dtype, device):
        super().__init__()
        self.register_buffer("k", torch.zeros(batch, heads, max_len, head_dim, dtype=dtype, device=device))
        self.register_buffer("v", torch.zeros(batch, heads, max_len, head_dim, dtype=dtype, device=device))

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor):
        """Writes k, v [B, T, H, D] at positions [start, start+T); returns the valid prefix."""
        end = start + k.shape[1]
        if end > self.k.shape[2]:
            raise ValueError(f"KVCache: writing positions [{start}, {end}) overflows the cache of {self.k.shape[2]}")
        self.k[:, :, start:end] = k.transpose(1, 2)
        self.v[:, :, start:end] = v.transpose(1, 2)
        return self.k[:, :, :end], self.v[:, :, :end]


class LlamaAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x, rope_table, cache: KVCache | None = None, start: int = 0):
        """x [B, T, D] at sequence positions [start, start+T). Without a cache T covers the whole
        sequence (teacher forcing); with one, earlier positions come from the cache."""
        b, t, _ = x.shape
        q, k, v = self.wqkv(x).view(b, t, 3, self.num_heads, self.head_dim).unbind(2)
        q, k = apply_rope(q, rope_table), apply_rope(k, rope_table)
        if cache is None:
            keys, values = k.transpose(1, 2), v.transpose(1, 2)
        else:
            keys, values = cache.update(start, k, v)
        # Logits in fp32; query i may see keys up to position start + i.
        scores = (q.transpose(1, 2).float() @ keys.float().transpose(-2, -1)) / math.sqrt(self.head_dim)
        visible = torch.ones(t, keys.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=start)
        scores = scores.masked_fill(~visible, float("-inf"))
        out = scores.softmax(dim=-1).to(values.dtype) @ values
        return self.resid_dropout(self.wo(out.transpose(1, 2).reshape(b, t, -1)))


class LlamaBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        # Registration order follows the official checkpoints' key order.
        self.attention = LlamaAttention(dim, num_heads, dropout)
        self.feed_forward = FeedForward(dim, dropout)
        self.attention_norm = RMSNorm(dim)
        self.ffn_norm = RMSNorm(dim)

    def forward(self, x, rope_table, cache: KVCache | None = None, start: int = 0):
        h = x + self.attention(self.attention_norm(x), rope_table, cache, start)
        return h + self.feed_forward(self.ffn_norm(h))


# ----------------------------------------------------------------------------- ViT blocks
class ViTAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0,
                 causal: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.causal:
            # Pixel heads: causal, logits in the input dtype.
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # MAR levels: bidirectional, logits in fp32 even under autocast.
            scores = (q.float() @ k.float().transpose(-2, -1)) * self.scale
            out = self.attn_drop(scores.softmax(dim=-1)).to(v.dtype) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0,
                 causal: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads, attn_dropout, proj_dropout, causal)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim, proj_dropout)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_linear_and_norm(module: nn.Module):
    """Official initialisation: xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def run_blocks(blocks: nn.ModuleList, x, grad_checkpointing: bool, *args):
    for block in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False)
        else:
            x = block(x, *args)
    return x
