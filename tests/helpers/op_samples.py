"""One small, valid call of each operator, as keyword arguments in schema order: the inputs the
operators' correctness, opcheck, autograd and compile tests start from (`SAMPLE_INPUTS` by name).
Sizes are parameters where tests sweep them. Seeded: the same call every time."""
import math

import torch

from fractal_ext.models.layers import rope_2d_table


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def patchify_args(batch=2, channels=3, size=16, patch_size=4, seed=0):
    return dict(images=torch.randn(batch, channels, size, size, generator=_generator(seed)), patch_size=patch_size)


def unpatchify_args(batch=2, seq_len=16, channels=3, patch_size=4, seed=0):
    patches = torch.randn(batch, seq_len, channels * patch_size**2, generator=_generator(seed))
    return dict(patches=patches, patch_size=patch_size)


def gather_args(batch=2, seq_len=16, channels=8, seed=0):
    return dict(conditions=torch.randn(batch, seq_len, channels, generator=_generator(seed)),
                batch_index=torch.tensor([0, 1, 1]), token_index=torch.tensor([0, 5, 15]))


def kv_cache_attention_args(seed=0):
    generator = _generator(seed)
    q, k, v = (torch.randn(2, 1, 4, 16, generator=generator) for _ in range(3))
    return dict(q=q, k=k, v=v, k_cache=torch.zeros(2, 4, 8, 16), v_cache=torch.zeros(2, 4, 8, 16),
                cache_seqlens=torch.tensor([0, 3], dtype=torch.int32), scale=0.25)


def cfg_filter_sample_args(seed=0):
    return dict(logits=torch.randn(4, 256, generator=_generator(seed)), cfg=torch.full((2,), 3.0), temperature=1.0, filter_threshold=1e-4,
                pixel_mean=0.485, pixel_std=0.229, greedy=True, generator=None)


def gather_backward_args(seed=0):
    return dict(grad=torch.randn(5, 3, 8, generator=_generator(seed)), batch_index=torch.tensor([0, 1, 1]), token_index=torch.tensor([0, 5, 15]),
                batch_size=2, seq_len=16)


def small_batch_linear_args(rows=2, in_features=8, out_features=5, bias=False, seed=0):
    generator = _generator(seed)
    return dict(x=torch.randn(rows, in_features, generator=generator),
                weight=torch.randn(out_features, in_features, generator=generator),
                bias=torch.randn(out_features, generator=generator) if bias else None)


def llama_weights(dim, hidden, generator):
    def rand(*shape):
        return torch.randn(*shape, generator=generator) / math.sqrt(shape[-1])

    return dict(attention_norm_weight=1 + 0.1 * torch.randn(dim, generator=generator), wqkv=rand(3 * dim, dim),
                wo=rand(dim, dim), ffn_norm_weight=1 + 0.1 * torch.randn(dim, generator=generator),
                w1=rand(hidden, dim), w2=rand(dim, hidden), w3=rand(hidden, dim))


def vit_weights(dim, hidden, generator):
    def rand(*shape):
        return torch.randn(*shape, generator=generator) / math.sqrt(shape[-1])

    def vector(n, around=0.0):
        return around + 0.1 * torch.randn(n, generator=generator)

    return dict(norm1_weight=vector(dim, 1.0), norm1_bias=vector(dim), qkv_weight=rand(3 * dim, dim),
                qkv_bias=vector(3 * dim), proj_weight=rand(dim, dim), proj_bias=vector(dim),
                norm2_weight=vector(dim, 1.0), norm2_bias=vector(dim), fc1_weight=rand(hidden, dim),
                fc1_bias=vector(hidden), fc2_weight=rand(dim, hidden), fc2_bias=vector(dim))


def filled_caches(rows, heads, max_len, head_dim, generator):
    k = torch.randn(rows, heads, max_len, head_dim, generator=generator)
    return k, torch.randn(rows, heads, max_len, head_dim, generator=generator)



def llama_args(rows=2, dim=32, heads=2, hidden=64, max_len=4):
    generator = torch.Generator().manual_seed(0)
    k_cache, v_cache = filled_caches(rows, heads, max_len, dim // heads, generator)
    return dict(x=torch.randn(rows, dim), **llama_weights(dim, hidden, generator),
                rope=rope_2d_table(2, dim // heads)[1], k_cache=k_cache, v_cache=v_cache,
                cache_seqlens=torch.ones(rows, dtype=torch.int32), norm_eps=1e-5, scale=0.25)


def vit_args(rows=2, dim=32, heads=2, hidden=64, max_len=4):
    generator = torch.Generator().manual_seed(0)
    k_cache, v_cache = filled_caches(rows, heads, max_len, dim // heads, generator)
    return dict(x=torch.randn(rows, dim), **vit_weights(dim, hidden, generator), k_cache=k_cache, v_cache=v_cache,
                cache_seqlens=torch.ones(rows, dtype=torch.int32), norm_eps=1e-6, scale=0.25)


SAMPLE_INPUTS = {
    "patchify": patchify_args,
    "unpatchify": unpatchify_args,
    "gather_neighbour_conditions": gather_args,
    "gather_neighbour_conditions_backward": gather_backward_args,
    "kv_cache_attention": kv_cache_attention_args,
    "cfg_filter_sample": cfg_filter_sample_args,
    "small_batch_linear": small_batch_linear_args,
    "llama_block_step": llama_args,
    "vit_block_step": vit_args,
}
