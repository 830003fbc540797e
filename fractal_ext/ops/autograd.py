"""Autograd formulas of the differentiable operators (patchify, unpatchify and the neighbour
gather; the training forward can run on them). The other operators are inference-only: their C++
schemas register an Autograd kernel that fails a backward pass naming the operator. Imported by
fractal_ext.ops when the extension is loaded."""
import torch


def _save_patch_size(ctx, inputs, output):
    ctx.patch_size = inputs[1]


# patchify and unpatchify only move values: each one's gradient is the other.
torch.library.register_autograd(
    "fractal_ext::patchify",
    lambda ctx, grad: (torch.ops.fractal_ext.unpatchify(grad.contiguous(), ctx.patch_size), None),
    setup_context=_save_patch_size,
)
torch.library.register_autograd(
    "fractal_ext::unpatchify",
    lambda ctx, grad: (torch.ops.fractal_ext.patchify(grad.contiguous(), ctx.patch_size), None),
    setup_context=_save_patch_size,
)


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


torch.library.register_autograd("fractal_ext::gather_neighbour_conditions", _gather_backward, setup_context=_gather_setup)
