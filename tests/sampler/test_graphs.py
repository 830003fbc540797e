"""Replayed steps (CUDA graphs on a GPU; on the CPU the same static-buffer data flow, with the
capture rehearsed by tests/helpers/capture_rehearsal.py): the samples must be those of the plain
fast path."""
import pytest
import torch

from fractal_ext import ops
from fractal_ext.pixels import to_uint8
from capture_rehearsal import RehearsedStepGraph, rehearsed_paths
from fractal_ext.sampler.graphs import StepGraphs
from fractal_ext.sampler.plan import use_graphs
from reference_models import reference_tensors, sample_tiny

from repo import TINY_MODELS

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", TINY_MODELS)
def test_greedy_samples_with_replayed_steps_are_exact(name, device):
    images = sample_tiny(name, device, cuda_graphs=True, greedy=True)
    assert torch.equal(to_uint8(images).cpu(), reference_tensors(name)["out.greedy_raster_sample_u8"])


@pytest.mark.cuda
@pytest.mark.parametrize("name", TINY_MODELS)
def test_greedy_samples_on_cuda_without_graphs_are_exact(name):
    # With the test above, tells a kernel bug from a graph bug.
    images = sample_tiny(name, "cuda", cuda_graphs=False, greedy=True)
    assert torch.equal(to_uint8(images).cpu(), reference_tensors(name)["out.greedy_raster_sample_u8"])


@pytest.mark.parametrize("name", ["tiny_mar", "tiny_mar4_gp"])
def test_greedy_samples_replaying_the_mar_pass_a_gpu_replays(name):
    # The CPU's fp32 MAR pass is oneDNN's; this replays (and rehearses the capture of) the pass of
    # the model's own modules, the one CUDA captures.
    paths = rehearsed_paths("cpu", onednn_mar_pass=False)
    images = sample_tiny(name, "cpu", cuda_graphs=True, greedy=True, paths=paths)
    assert torch.equal(to_uint8(images), reference_tensors(name)["out.greedy_raster_sample_u8"])


@pytest.mark.parametrize("name", TINY_MODELS)
def test_random_samples_with_replayed_steps_equal_the_plain_fast_path(name):
    # The draws happen between replays, on the same generator: same seed, same samples.
    with_graphs = sample_tiny(name, "cpu", cuda_graphs=True, greedy=False, seed=3)
    without = sample_tiny(name, "cpu", cuda_graphs=False, greedy=False, seed=3)
    assert torch.equal(with_graphs, without)


@pytest.mark.cuda
@pytest.mark.parametrize("name", TINY_MODELS)
def test_cuda_graph_samples_are_reproducible_and_draw_afresh(name):
    first = to_uint8(sample_tiny(name, "cuda", cuda_graphs=True, greedy=False, seed=5))
    again = to_uint8(sample_tiny(name, "cuda", cuda_graphs=True, greedy=False, seed=5))
    other_seed = to_uint8(sample_tiny(name, "cuda", cuda_graphs=True, greedy=False, seed=6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed)  # the draws between replays follow the generator


@pytest.mark.cuda
@pytest.mark.parametrize("name", TINY_MODELS)
def test_cuda_graphs_under_bf16_autocast(name):
    # Same kernels replayed or launched: the bf16 greedy samples agree. (The greedy samples of
    # these models have wide margins: weights perturbed by 1e-4 relative change no pixel on the CPU.)
    with_graphs = sample_tiny(name, "cuda", cuda_graphs=True, greedy=True, precision="bf16")
    without = sample_tiny(name, "cuda", cuda_graphs=False, greedy=True, precision="bf16")
    assert torch.isfinite(with_graphs).all()
    assert torch.equal(to_uint8(with_graphs), to_uint8(without))


def test_step_graph_copies_inputs_in_and_reuses_its_output_buffer():
    calls = []

    def step(x, y):
        calls.append(1)
        return x * 2 + y

    x, y = torch.ones(3), torch.zeros(3)
    graph = RehearsedStepGraph(step, [x, y])
    first = graph(x, y)
    torch.testing.assert_close(first, torch.full((3,), 2.0))
    x.fill_(5)  # the caller's tensors are copied, not aliased
    torch.testing.assert_close(first, torch.full((3,), 2.0))
    second = graph(x, torch.ones(3))
    assert second is first  # the next replay overwrites the previous output
    torch.testing.assert_close(second, torch.full((3,), 11.0))


def test_step_graphs_keep_one_graph_per_key():
    graphs = StepGraphs(RehearsedStepGraph)
    for value in range(3):
        out = graphs.run("double", lambda x: 2 * x, torch.full((2,), float(value)))
        torch.testing.assert_close(out, torch.full((2,), 2.0 * value))
    graphs.run("triple", lambda x: 3 * x, torch.ones(2))
    assert sorted(graphs.graphs) == ["double", "triple"]


def test_cuda_graphs_setting(monkeypatch):
    monkeypatch.setattr(ops, "REFERENCE_CUDA_OPS", ())  # as in a build with the CUDA kernels
    assert use_graphs(None, torch.device("cuda")) and not use_graphs(None, torch.device("cpu"))
    assert use_graphs(True, torch.device("cuda")) and not use_graphs(False, torch.device("cuda"))
    with pytest.raises(ValueError, match="cuda_graphs must be True, False or None"):
        use_graphs("yes", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a model on a CUDA device"):
        use_graphs(True, torch.device("cpu"))  # the library's CPU path stays plain


def test_no_graphs_where_the_attention_runs_as_its_pytorch_reference(monkeypatch):
    # A CPU-only build on a machine with a GPU: the reference attention syncs with the host,
    # which a CUDA graph capture forbids, so graphs are off by default and refused when asked for.
    monkeypatch.setattr(ops, "REFERENCE_CUDA_OPS", ("kv_cache_attention",))
    assert not use_graphs(None, torch.device("cuda"))
    assert not use_graphs(False, torch.device("cuda")) and not use_graphs(False, torch.device("cpu"))
    with pytest.raises(ValueError, match="cuda_graphs=True needs fractal_ext's CUDA kernels"):
        use_graphs(True, torch.device("cuda"))


def _item(x):
    return x * x.sum().item()


def _nonzero(x):
    return x[x.nonzero()[:, 0]]


def _mask_index(x):
    return x[x > 0]


def _draw(x):
    return x + torch.rand_like(x)


def _sample(x):
    return ops.cfg_filter_sample(x, None, 1.0, 1e-4, 0.485, 0.229, False, None)[1]


def _branch(x):
    return x if x.max() > 0 else -x


def _host_data(x):
    return x * torch.tensor([2.0])


@pytest.mark.parametrize("step, why", [
    (_item, "reads tensor values on the host"), (_nonzero, "reads tensor values on the host"),
    (_mask_index, "boolean mask"), (_draw, "draws random numbers"), (_sample, "draws random numbers"),
    (_branch, "reads tensor values on the host"), (_host_data, "makes a tensor from host data"),
])
def test_cpu_capture_refuses_what_a_cuda_graph_capture_refuses(step, why):
    # The CPU's stand-in for the capture: the steps of the samplers above run under it too.
    with pytest.raises(RuntimeError, match=why):
        RehearsedStepGraph(step, [torch.randn(4, 8)])


def test_cpu_capture_accepts_a_step_without_host_reads():
    rows = torch.tensor([0, 2])
    step = lambda x: ops.cfg_filter_sample(x, None, 1.0, 1e-4, 0.485, 0.229, True, None)[1] + x[rows].sum()
    RehearsedStepGraph(step, [torch.randn(4, 8)])


def test_cpu_replays_must_repeat_the_captured_calls():
    # A replay repeats the captured kernels with the captured arguments: a step whose Python numbers
    # or buffers change from call to call would be replayed wrongly on a GPU.
    state = {"scale": 2.0, "table": torch.ones(8)}
    graph = RehearsedStepGraph(lambda x: x * state["scale"] + state["table"], [torch.randn(8)])
    graph(torch.randn(8))
    state["scale"] = 3.0
    with pytest.raises(RuntimeError, match="changed since its capture"):
        graph(torch.randn(8))
    state["scale"], state["table"] = 2.0, torch.zeros(8)
    with pytest.raises(RuntimeError, match="changed since its capture"):
        graph(torch.randn(8))
