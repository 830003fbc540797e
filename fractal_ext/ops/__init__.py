"""The Python face of the fractal_ext operators.

Each name here is bound once, at import, to the compiled operator (`torch.ops.fractal_ext.*`)
or, when the extension is not available, to its plain-PyTorch reference (`reference.py`); there is
no wrapper between a caller and the kernel. Shapes and semantics: the schema comments in
csrc/*/schema.cpp and docs/operators.md. Importing this package also registers, for the compiled
operators, their fake implementations (`fake.py`, for torch.compile) and the autograd formulas of
the differentiable ones (`autograd.py`).
"""
import torch

from fractal_ext.ops import extension, reference

EXTENSION_AVAILABLE = extension.AVAILABLE

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
# covers every machine where a CUDA device can exist. `fractal-info` reports them as "reference".
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
    from fractal_ext.ops import autograd, fake  # noqa: F401,E402  (registrations)
