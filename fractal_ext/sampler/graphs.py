"""Fixed-shape sampling steps recorded once and replayed: CUDA graphs on a GPU.

At batch 1 a GPU spends a sampling run launching tens of thousands of tiny kernels; a step that
keeps its shapes from call to call (an AR level's one-token pass through its blocks, a MAR
level's bidirectional pass, one channel of a pixel head) is captured once as a CUDA graph and
then replayed with one launch. MAR passes are bucketed by their row count (one graph per count
seen: the number of tokens a parent step generates varies). Replays read their inputs from
static buffers and write their outputs to static buffers: `StepGraph` copies the caller's inputs
in and hands out the output buffer, which the next replay overwrites (callers consume it before
running the same step again).

What a step may do, so that replaying it is the same as running it: no host synchronisation and
no data-dependent shapes; everything that changes between calls enters through the inputs
(positions and rotary angles are tensors, not Python numbers); random draws stay outside (the
sampler draws between replays, so a graph never has to replay a generator's state).

On the CPU there is no graph: when asked for (`cuda_graphs=True`), the step function runs on the
static buffers and its result is copied into the output buffer, the same data flow as a replay,
so that CPU tests check the buffer handling the GPU path relies on. After a warm-up run, as on a
GPU, the run a GPU would capture refuses what a capture refuses, and every later run must repeat
its operator calls, as a replay does (`CaptureRehearsal`).
"""
import torch

from fractal_ext import ops
from fractal_ext.sampler.capture_rehearsal import CaptureRehearsal, check_same_calls


class StepGraph:
    def __init__(self, fn, inputs):
        self.fn = fn
        self.static_inputs = [x.clone() for x in inputs]
        self.on_cuda = self.static_inputs[0].is_cuda
        if self.on_cuda:
            self.graph = torch.cuda.CUDAGraph()
            # Warm-up on a side stream (lazy initialisation, autotuning) runs the step for real on
            # the current inputs: its side effects (KV-cache writes at this position) are the
            # ones the replay below repeats.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            # Each graph has its own memory pool: a shared one is only safe when graphs replay in
            # the order they were captured, and the levels' steps interleave. "thread_local": a
            # capture forbids unsafe CUDA calls (allocations, synchronisations) in this thread only,
            # not in other threads sampling at the same time (the default forbids them everywhere).
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.static_output = fn(*self.static_inputs)
        else:
            fn(*self.static_inputs)  # the warm-up, as on a GPU (one-time preparations happen here)
            rehearsal = CaptureRehearsal()
            with rehearsal:
                output = fn(*self.static_inputs)
            self.static_output = output.clone()
            self.captured_calls = rehearsal.calls

    def __call__(self, *inputs):
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        if self.on_cuda:
            self.graph.replay()
        else:
            replay = CaptureRehearsal()
            with replay:
                output = self.fn(*self.static_inputs)
            check_same_calls(self.captured_calls, replay.calls)
            self.static_output.copy_(output)
        return self.static_output


class StepGraphs:
    """The graphs of one sampling run, by key (the step and everything its shapes and buffer
    addresses depend on). Made per run, so a graph never outlives the weights and caches it
    recorded. Disabled, it just calls the step."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.graphs = {}

    def run(self, key, fn, *inputs):
        if not self.enabled:
            return fn(*inputs)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = StepGraph(fn, inputs)
        return graph(*inputs)


def buffers_key(caches) -> int:
    """Part of a graph key: where the step's KV caches live (a graph records their addresses)."""
    return caches[0][0].data_ptr() if caches else 0


def graph_safe_on_cuda() -> bool:
    """Whether the operator inside replayed steps (the KV-cache attention) has its CUDA kernel in
    this build: its plain-PyTorch stand-in reads the cache lengths on the host, which a capture
    forbids (a CPU-only build of the extension on a machine with a GPU, say)."""
    return ops.EXTENSION_AVAILABLE and "kv_cache_attention" not in ops.REFERENCE_CUDA_OPS


def use_graphs(setting, device: torch.device) -> bool:
    """`cuda_graphs` of a sampling call: None = on for CUDA where this build can capture the
    steps; True on the CPU emulates them."""
    if setting is None:
        return device.type == "cuda" and graph_safe_on_cuda()
    if not isinstance(setting, bool):
        raise ValueError(f"cuda_graphs must be True, False or None (on for CUDA), got {setting!r}")
    if setting and device.type == "cuda" and not graph_safe_on_cuda():
        raise ValueError("cuda_graphs=True needs fractal_ext's CUDA kernels, and this build runs kv_cache_attention "
                         "on CUDA through its PyTorch reference (see `python -m fractal_ext.info`); "
                         "rebuild with nvcc, or pass cuda_graphs=None or False")
    return setting
