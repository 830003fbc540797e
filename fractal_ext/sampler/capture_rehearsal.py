"""The CPU's stand-in for a CUDA graph capture refuses what a capture refuses.

A replayed step must not read tensor values on the host (`.item()`, `nonzero`, a boolean mask
index, `if tensor:` ...): on a GPU that is a synchronisation, which fails the capture, or a
data-dependent shape, which a replay cannot change. Nor may it draw random numbers: the sampler
draws between replays, so a graph never has to replay a generator's state. On the CPU,
`StepGraph` runs the step's first call (the one a GPU would capture) under `CaptureRehearsal`, so
CPU tests find such an operation before a GPU does.

Not seen here: copies to the host (`.cpu()`, `.tolist()` of a CUDA tensor), which are no-ops for
CPU tensors.
"""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

HOST_READS = {
    aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.nonzero, aten.masked_select,
    aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive,
}
RANDOM_DRAWS = {
    aten.multinomial, aten.bernoulli, aten.bernoulli_, aten.normal, aten.normal_, aten.uniform, aten.uniform_,
    aten.rand, aten.rand_like, aten.randn, aten.randn_like, aten.randint, aten.randint_like, aten.randperm,
    aten.exponential_, aten.geometric_, aten.cauchy_, aten.log_normal_,
}
MASK_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


def _is_mask(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype in (torch.bool, torch.uint8)


def capture_violation(func, args, kwargs) -> str | None:
    """Why a CUDA graph capture would refuse `func(*args, **kwargs)`, or None."""
    packet = func.overloadpacket
    if packet in HOST_READS:
        return "reads tensor values on the host"
    if packet in RANDOM_DRAWS:
        return "draws random numbers"
    if func._schema.name == "fractal_ext::cfg_filter_sample" and not (args[5] if len(args) > 5 else kwargs["greedy"]):
        return "draws random numbers"
    if packet in MASK_INDEXING and len(args) > 1 and any(_is_mask(i) for i in args[1] if i is not None):
        return "indexes with a boolean mask (a data-dependent shape)"
    if packet is aten.repeat_interleave and kwargs.get("output_size") is None and isinstance(args[0], torch.Tensor) \
            and (len(args) < 2 or isinstance(args[1], torch.Tensor)):
        return "repeats by tensor counts without output_size (a data-dependent shape)"
    return None


class CaptureRehearsal(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = capture_violation(func, args, kwargs)
        if why is not None:
            raise RuntimeError(f"a replayed sampling step calls {func}, which {why}: a CUDA graph capture of this "
                               f"step would fail or replay it wrongly (see fractal_ext/sampler/graphs.py)")
        return func(*args, **kwargs)
