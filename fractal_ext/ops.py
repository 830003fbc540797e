"""The Python face of the fractal_ext operators.

Each name here is bound once, at import, to the compiled operator (`torch.ops.fractal_ext.*`)
or, when the extension is not available, to its plain-PyTorch reference; there is no wrapper
between a caller and the kernel. Shapes and semantics: the schema.cpp of each operator folder
under csrc/.
This module also registers, for the compiled operators, the fake (meta) implementations that
let them trace under torch.compile, and the autograd formulas of the differentiable ones.
"""
import torch

from fractal_ext import _extension, reference

EXTENSION_AVAILABLE = _extension.AVAILABLE

if EXTENSION_AVAILABLE:
    _ops = torch.ops.fractal_ext
    patchify = _ops.patchify.default
    unpatchify = _ops.unpatchify.default
    gather_neighbour_conditions = _ops.gather_neighbour_conditions.default
    gather_neighbour_conditions_backward = _ops.gather_neighbour_conditions_backward.default
    kv_cache_attention = _ops.kv_cache_attention.default
    cfg_filter_sample = _ops.cfg_filter_sample.default
    small_batch_linear = _ops.small_batch_linear.default
    llama_block_step = _ops.llama_block_step.default
    vit_block_step = _ops.vit_block_step.default
else:
    patchify = reference.patchify
    unpatchify = reference.unpatchify
    gather_neighbour_conditions = reference.gather_neighbour_conditions
    gather_neighbour_conditions_backward = reference.gather_neighbour_conditions_backward
    kv_cache_attention = reference.kv_cache_attention
    cfg_filter_sample = reference.cfg_filter_sample
    small_batch_linear = reference.small_batch_linear
    llama_block_step = reference.llama_block_step
    vit_block_step = reference.vit_block_step

OP_NAMES = (
    "patchify",
    "unpatchify",
    "gather_neighbour_conditions",
    "gather_neighbour_conditions_backward",
    "kv_cache_attention",
    "cfg_filter_sample",
    "small_batch_linear",
    "llama_block_step",
    "vit_block_step",
)

# Ops without a native CUDA kernel in this build (a CPU-only build of the extension, or an op
# whose CUDA source is absent) still run on CUDA tensors: their references are registered for the
# CUDA dispatch key. Done whenever torch itself has CUDA, without querying devices at import, so it
# covers every machine where a CUDA device can exist. fractal_ext.info reports them as "reference".
REFERENCE_CUDA_OPS: tuple = ()
if EXTENSION_AVAILABLE and torch.backends.cuda.is_built():
    REFERENCE_CUDA_OPS = tuple(
        name
        for name in OP_NAMES
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"fractal_ext::{name}", "CUDA")
    )
    for _name in REFERENCE_CUDA_OPS:
        torch.library.impl(f"fractal_ext::{_name}", "CUDA", getattr(reference, _name))

if EXTENSION_AVAILABLE:
    # ---- patchify / unpatchify ------------------------------------------------------------
    @torch.library.register_fake("fractal_ext::patchify")
    def _patchify_fake(images, patch_size):
        b, c, h, w = images.shape
        return images.new_empty(b, (h // patch_size) * (w // patch_size), c * patch_size * patch_size)

    @torch.library.register_fake("fractal_ext::unpatchify")
    def _unpatchify_fake(patches, patch_size):
        b, seq_len, features = patches.shape
        side = reference.grid_side(seq_len)
        return patches.new_empty(b, features // (patch_size * patch_size), side * patch_size, side * patch_size)

    def _patchify_setup(ctx, inputs, output):
        ctx.patch_size = inputs[1]

    torch.library.register_autograd(
        "fractal_ext::patchify",
        lambda ctx, grad: (torch.ops.fractal_ext.unpatchify(grad.contiguous(), ctx.patch_size), None),
        setup_context=_patchify_setup,
    )
    torch.library.register_autograd(
        "fractal_ext::unpatchify",
        lambda ctx, grad: (torch.ops.fractal_ext.patchify(grad.contiguous(), ctx.patch_size), None),
        setup_context=_patchify_setup,
    )

    # ---- neighbour gathering --------------------------------------------------------------
    @torch.library.register_fake("fractal_ext::gather_neighbour_conditions")
    def _gather_fake(conditions, batch_index, token_index):
        return conditions.new_empty(5, batch_index.shape[0], conditions.shape[-1])

    @torch.library.register_fake("fractal_ext::gather_neighbour_conditions_backward")
    def _gather_backward_fake(grad, batch_index, token_index, batch_size, seq_len):
        return grad.new_empty(batch_size, seq_len, grad.shape[-1])

    def _gather_setup(ctx, inputs, output):
        conditions, batch_index, token_index = inputs
        ctx.save_for_backward(batch_index, token_index)
        ctx.grid_shape = (conditions.shape[0], conditions.shape[1])

    def _gather_backward(ctx, grad):
        batch_index, token_index = ctx.saved_tensors
        grad_conditions = torch.ops.fractal_ext.gather_neighbour_conditions_backward(
            grad.contiguous(), batch_index, token_index, *ctx.grid_shape
        )
        return grad_conditions, None, None

    torch.library.register_autograd(
        "fractal_ext::gather_neighbour_conditions", _gather_backward, setup_context=_gather_setup
    )

    # ---- attention against a KV cache -----------------------------------------------------
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

    # ---- guided sampling ------------------------------------------------------------------
    @torch.library.register_fake("fractal_ext::cfg_filter_sample")
    def _cfg_filter_sample_fake(logits, cfg, temperature, filter_threshold, channel, greedy, generator):
        rows = logits.shape[0] // 2 if cfg is not None else logits.shape[0]
        return (
            logits.new_empty(rows, dtype=torch.int64),
            logits.new_empty(rows, dtype=torch.float32),
        )

    # ---- weight-streaming linear for a few rows ---------------------------------------------
    @torch.library.register_fake("fractal_ext::small_batch_linear")
    def _small_batch_linear_fake(x, weight, bias):
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    # ---- one decoding step of a whole block (CPU kernels) ----------------------------------
    @torch.library.register_fake("fractal_ext::llama_block_step")
    def _llama_block_step_fake(x, *weights_caches_and_settings):
        return torch.empty_like(x)

    @torch.library.register_fake("fractal_ext::vit_block_step")
    def _vit_block_step_fake(x, *weights_caches_and_settings):
        return torch.empty_like(x)
