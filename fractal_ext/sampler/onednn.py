"""oneDNN's linear layer on weights reordered into its blocked layout, reached through
`torch.ops.mkldnn` (what torch.compile's CPU backend calls). The fast sampler takes it on the
CPU where it beats both torch's linear and this project's small-batch kernels: the MAR levels'
bidirectional passes (fp32 or bf16 GEMMs, fractal_ext.sampler.bidirectional) and, in the CPU
bf16 mode, the one-token block steps of more rows than the bf16 kernels take in one pass
(fractal_ext.sampler.decode). Where this torch build lacks it or it fails its self-check, those
parts run as they would without it.
"""
from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """Whether oneDNN's linear exists in this torch build and computes a linear (checked once, on
    fixed inputs: the check runs during a sampling run and must not draw from the global RNG)."""
    x = torch.linspace(-1, 1, 24).view(3, 8)
    weight, bias = torch.linspace(-2, 2, 40).view(5, 8).cos(), torch.linspace(0, 1, 5)
    try:
        ours = linear(x, reorder(weight, 3), bias)
    except (AttributeError, RuntimeError, NotImplementedError):
        # No oneDNN in this build, or an op signature this torch does not have.
        return False
    return torch.allclose(ours, F.linear(x, weight, bias), rtol=1e-4, atol=1e-5)


def reorder(weight: torch.Tensor, rows_hint: int) -> torch.Tensor:
    """weight [out, in] (fp32 or bf16) in oneDNN's blocked layout, chosen for about `rows_hint`
    input rows (any row count computes correctly)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)


def linear(x, packed_weight, bias=None, activation="none"):
    """x [..., in] @ packed_weight.T + bias in x's dtype; activation "gelu" is the exact (erf) GELU,
    applied in the GEMM's epilogue."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, activation, [],
                                              "none" if activation == "gelu" else "")


def bf16_linear(x, packed_weight, bias=None):
    """fp32 x [..., in] on bf16 packed weights -> fp32 [..., out]: x rounded to bf16, products
    summed in fp32, the result rounded to bf16 (as any bf16 GEMM of torch's returns it)."""
    return linear(x.to(torch.bfloat16), packed_weight, bias).float()
