"""The CPU's stand-in for a CUDA graph capture refuses what a capture refuses, and each later call
must repeat what was captured.

A replayed step must not read tensor values on the host (`.item()`, `nonzero`, a boolean mask
index, `if tensor:` ...): on a GPU that is a synchronisation, which fails the capture, or a
data-dependent shape, which a replay cannot change. Nor may it draw random numbers (the sampler
draws between replays, so a graph never has to replay a generator's state) or make tensors from
host data (`torch.tensor([...])`: a copy from the host inside the capture, whose values every
replay would reuse). And a replay repeats the captured kernels with the captured arguments: a
step whose operators, Python numbers or buffers (other than its own intermediates) change from
call to call would silently compute something else when replayed.

`RehearsedStepGraph` stands in for fractal_ext.sampler.graphs.CudaStepGraph on the CPU: it runs
a step once as a warm-up (as on a GPU: one-time preparations happen there), then once more (the
run a GPU would capture) under `CaptureRehearsal`, which refuses the operations above and records
the operator calls; every later call runs on the static buffers, is recorded again and must match,
and its result is copied into the static output, the data flow of a replay. CPU tests thus find
such a step before a GPU does. `rehearsed_paths` gives the fast sampler this stand-in.
Not seen here: copies to the host (`.cpu()`, `.tolist()` of a CUDA tensor), which are no-ops for
CPU tensors.
"""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

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
HOST_DATA = {aten.lift_fresh, aten.lift_fresh_copy}


def _is_mask(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype in (torch.bool, torch.uint8)


def capture_violation(func, args, kwargs) -> str | None:
    """Why a CUDA graph capture would refuse `func(*args, **kwargs)`, or None."""
    packet = func.overloadpacket
    if packet in HOST_READS:
        return "reads tensor values on the host"
    if packet in RANDOM_DRAWS:
        return "draws random numbers"
    if packet in HOST_DATA:
        return "makes a tensor from host data"
    if func._schema.name == "fractal_ext::cfg_filter_sample" and not (args[6] if len(args) > 6 else kwargs["greedy"]):
        return "draws random numbers"
    if packet in MASK_INDEXING and len(args) > 1 and any(_is_mask(i) for i in args[1] if i is not None):
        return "indexes with a boolean mask (a data-dependent shape)"
    if packet is aten.repeat_interleave and kwargs.get("output_size") is None and isinstance(args[0], torch.Tensor) \
            and (len(args) < 2 or isinstance(args[1], torch.Tensor)):
        return "repeats by tensor counts without output_size (a data-dependent shape)"
    return None


class CaptureRehearsal(TorchDispatchMode):
    """Refuses what a capture refuses and records the operator calls (`calls`): the operator, its
    Python arguments, and for each tensor argument its shape, strides and dtype, plus its address
    unless the step itself made it."""

    def __init__(self):
        super().__init__()
        self.calls = []
        # The tensors the step made, by id; held, so that no id is reused during the step.
        self._made_here = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = capture_violation(func, args, kwargs)
        if why is not None:
            raise RuntimeError(f"a replayed sampling step calls {func}, which {why}: a CUDA graph capture of this "
                               f"step would fail or replay it wrongly (see fractal_ext/sampler/graphs.py)")
        leaves, _ = tree_flatten((args, kwargs))
        self.calls.append((func, tuple(self._describe(leaf) for leaf in leaves)))
        out = func(*args, **kwargs)
        self._made_here.update((id(t), t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out

    def _describe(self, leaf):
        if isinstance(leaf, float):
            return ("float", leaf.hex())  # exact, and NaN equals NaN
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if id(leaf) in self._made_here:
            address = "made by the step"
        elif leaf.layout == torch.strided:
            address = leaf.data_ptr()
        else:  # oneDNN's opaque weight layouts have no data pointer: the tensor object stands for it
            address = ("object", id(leaf))
        strides = leaf.stride() if leaf.layout == torch.strided else None
        return ("tensor", tuple(leaf.shape), strides, leaf.dtype, leaf.layout, address)


def check_same_calls(captured: list, now: list) -> None:
    """Raises unless a later call of a step (`now`) repeats its captured operator calls."""
    for index, (then, again) in enumerate(zip(captured, now)):
        if then != again:
            raise RuntimeError(f"a replayed sampling step changed since its capture (operator call {index}: captured "
                               f"{then}, now {again}); a CUDA graph replay would repeat the captured call")
    if len(captured) != len(now):
        raise RuntimeError(f"a replayed sampling step changed since its capture ({len(captured)} operator calls "
                           f"captured, {len(now)} now); a CUDA graph replay would repeat the captured ones")


class RehearsedStepGraph:
    """The CPU stand-in of a captured step: same static-buffer data flow, capture rehearsed."""

    def __init__(self, fn, inputs):
        self.fn = fn
        self.static_inputs = [x.clone() for x in inputs]
        fn(*self.static_inputs)  # the warm-up, as on a GPU (one-time preparations happen here)
        rehearsal = CaptureRehearsal()
        with rehearsal:
            output = fn(*self.static_inputs)
        self.static_output = output.clone()
        self.captured_calls = rehearsal.calls

    def __call__(self, *inputs):
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        replay = CaptureRehearsal()
        with replay:
            output = self.fn(*self.static_inputs)
        check_same_calls(self.captured_calls, replay.calls)
        self.static_output.copy_(output)
        return self.static_output


def rehearsed_paths(device="cpu", precision="fp32", **overrides):
    """The compute paths of a run on `device` with its steps replayed: on CUDA by CUDA graphs, on
    the CPU by RehearsedStepGraph. `overrides` replace fields (e.g. the CUDA path's choices)."""
    from dataclasses import replace

    from fractal_ext.sampler.plan import choose_paths

    device = torch.device(device)
    paths = choose_paths(device, precision, cuda_graphs=device.type == "cuda")
    if device.type != "cuda":
        paths = replace(paths, step_graph=RehearsedStepGraph)
    return replace(paths, **overrides)
