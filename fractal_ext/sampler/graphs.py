"""Fixed-shape sampling steps recorded once and replayed: CUDA graphs on a GPU.

At batch 1 a GPU spends a sampling run launching tens of thousands of tiny kernels; a step that
keeps its shapes from call to call (an AR level's one-token pass through its blocks, a MAR
level's bidirectional pass, one channel of a pixel head) is captured once as a CUDA graph and
then replayed with one launch. MAR passes are bucketed by their row count (one graph per count
seen: the number of tokens a parent step generates varies). Replays read their inputs from
static buffers and write their outputs to static buffers: `CudaStepGraph` copies the caller's inputs
in and hands out the output buffer, which the next replay overwrites (callers consume it before
running the same step again).

What a step may do, so that replaying it is the same as running it: no host synchronisation and
no data-dependent shapes; everything that changes between calls enters through the inputs
(positions and rotary angles are tensors, not Python numbers); random draws stay outside (the
sampler draws between replays, so a graph never has to replay a generator's state).

Tests run the same data flow on the CPU with a stand-in class that rehearses the capture
(tests/helpers/capture_rehearsal.py): StepGraphs takes the class to use.
"""
import torch

from fractal_ext import ops


class CudaStepGraph:
    """One step captured as a CUDA graph from its first inputs; calls copy new inputs into the
    static ones, replay, and hand out the static output."""

    def __init__(self, fn, inputs):
        self.static_inputs = [x.clone() for x in inputs]
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

    def __call__(self, *inputs):
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return self.static_output


class StepGraphs:
    """The graphs of one sampling run, by key (the step and everything its shapes and buffer
    addresses depend on). Made per run, so a graph never outlives the weights and caches it
    recorded. `graph_class` records a step from its first inputs and replays it on later ones
    (CudaStepGraph); None just calls the step."""

    def __init__(self, graph_class: type | None = None):
        self.graph_class = graph_class
        self.graphs = {}

    @property
    def enabled(self) -> bool:
        return self.graph_class is not None

    def run(self, key, fn, *inputs):
        if self.graph_class is None:
            return fn(*inputs)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self.graph_class(fn, inputs)
        return graph(*inputs)


def buffers_key(caches) -> int:
    """Part of a graph key: where the step's KV caches live (a graph records their addresses)."""
    return caches[0][0].data_ptr() if caches else 0


def graph_safe_on_cuda() -> bool:
    """Whether the operator inside replayed steps (the KV-cache attention) has its CUDA kernel in
    this build: its plain-PyTorch stand-in reads the cache lengths on the host, which a capture
    forbids (a CPU-only build of the extension on a machine with a GPU, say)."""
    return ops.EXTENSION_AVAILABLE and "kv_cache_attention" not in ops.REFERENCE_CUDA_OPS
