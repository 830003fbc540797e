"""Fake (meta) implementations of the compiled operators: output shapes and dtypes without
computing anything, so that the operators trace under torch.compile. Imported by
fractal_ext.ops when the extension is loaded.

They also run for real calls in which one tensor is on the meta device and the others are not
(the dispatcher prefers the Meta kernel): so each one checks, as the kernels do, that its tensor
arguments share one device; otherwise such a call would return uninitialised memory."""
import torch

from fractal_ext.ops.reference import grid_side


def _same_device(op: str, **tensors):
    """Every tensor argument (None for an absent optional one) on the device of the first."""
    present = [(name, x) for name, x in tensors.items() if x is not None]
    first_name, first = present[0]
    for name, x in present[1:]:
        torch._check(x.device == first.device,
                     lambda: f"{op}: {first_name} and {name} must be on the same device, got {first.device} and {x.device}")


@torch.library.register_fake("fractal_ext::patchify")
def _patchify_fake(images, patch_size):
    b, c, h, w = images.shape
    return images.new_empty(b, (h // patch_size) * (w // patch_size), c * patch_size * patch_size)


@torch.library.register_fake("fractal_ext::unpatchify")
def _unpatchify_fake(patches, patch_size):
    b, seq_len, features = patches.shape
    side = grid_side(seq_len)
    return patches.new_empty(b, features // (patch_size * patch_size), side * patch_size, side * patch_size)


@torch.library.register_fake("fractal_ext::gather_neighbour_conditions")
def _gather_fake(conditions, batch_index, token_index):
    _same_device("gather_neighbour_conditions", conditions=conditions, batch_index=batch_index, token_index=token_index)
    return conditions.new_empty(5, batch_index.shape[0], conditions.shape[-1])


@torch.library.register_fake("fractal_ext::gather_neighbour_conditions_backward")
def _gather_backward_fake(grad, batch_index, token_index, batch_size, seq_len):
    _same_device("gather_neighbour_conditions_backward", grad=grad, batch_index=batch_index, token_index=token_index)
    return grad.new_empty(batch_size, seq_len, grad.shape[-1])


@torch.library.register_fake("fractal_ext::kv_cache_attention")
def _kv_cache_attention_fake(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    _same_device("kv_cache_attention", q=q, k=k, v=v, k_cache=k_cache, v_cache=v_cache, cache_seqlens=cache_seqlens)
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.register_fake("fractal_ext::cfg_filter_sample")
def _cfg_filter_sample_fake(logits, cfg, temperature, filter_threshold, pixel_mean, pixel_std, greedy, generator):
    _same_device("cfg_filter_sample", logits=logits, cfg=cfg)
    rows = logits.shape[0] // 2 if cfg is not None else logits.shape[0]
    return logits.new_empty(rows, dtype=torch.int64), logits.new_empty(rows, dtype=torch.float32)


@torch.library.register_fake("fractal_ext::small_batch_linear")
def _small_batch_linear_fake(x, weight, bias):
    _same_device("small_batch_linear", x=x, weight=weight, bias=bias)
    return x.new_empty(*x.shape[:-1], weight.shape[0])


LLAMA_BLOCK_STEP_TENSORS = ("x", "attention_norm_weight", "wqkv", "wo", "ffn_norm_weight", "w1", "w2", "w3", "rope",
                            "k_cache", "v_cache", "cache_seqlens")
VIT_BLOCK_STEP_TENSORS = ("x", "norm1_weight", "norm1_bias", "qkv_weight", "qkv_bias", "proj_weight", "proj_bias",
                          "norm2_weight", "norm2_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias", "k_cache",
                          "v_cache", "cache_seqlens")


@torch.library.register_fake("fractal_ext::llama_block_step")
def _llama_block_step_fake(*args):
    _same_device("llama_block_step", **dict(zip(LLAMA_BLOCK_STEP_TENSORS, args)))
    return torch.empty_like(args[0])


@torch.library.register_fake("fractal_ext::vit_block_step")
def _vit_block_step_fake(*args):
    _same_device("vit_block_step", **dict(zip(VIT_BLOCK_STEP_TENSORS, args)))
    return torch.empty_like(args[0])
