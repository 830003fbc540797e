"""Fake (meta) implementations of the compiled operators: output shapes and dtypes without
computing anything, so that the operators trace under torch.compile. Imported by
fractal_ext.ops when the extension is loaded."""
import torch

from fractal_ext.ops.reference import grid_side


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
    return conditions.new_empty(5, batch_index.shape[0], conditions.shape[-1])


@torch.library.register_fake("fractal_ext::gather_neighbour_conditions_backward")
def _gather_backward_fake(grad, batch_index, token_index, batch_size, seq_len):
    return grad.new_empty(batch_size, seq_len, grad.shape[-1])


@torch.library.register_fake("fractal_ext::kv_cache_attention")
def _kv_cache_attention_fake(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    # Same device rule as the kernels (mixing the meta device with a real one lands here).
    others = {"k": k, "v": v, "k_cache": k_cache, "v_cache": v_cache, "cache_seqlens": cache_seqlens}
    for name, x in others.items():
        torch._check(
            x.device == q.device,
            lambda: f"kv_cache_attention: q and {name} must be on the same device, got {q.device} and {x.device}",
        )
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.register_fake("fractal_ext::cfg_filter_sample")
def _cfg_filter_sample_fake(logits, cfg, temperature, filter_threshold, channel, greedy, generator):
    rows = logits.shape[0] // 2 if cfg is not None else logits.shape[0]
    return logits.new_empty(rows, dtype=torch.int64), logits.new_empty(rows, dtype=torch.float32)


@torch.library.register_fake("fractal_ext::small_batch_linear")
def _small_batch_linear_fake(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.register_fake("fractal_ext::llama_block_step")
def _llama_block_step_fake(x, *weights_caches_and_settings):
    return torch.empty_like(x)


@torch.library.register_fake("fractal_ext::vit_block_step")
def _vit_block_step_fake(x, *weights_caches_and_settings):
    return torch.empty_like(x)
