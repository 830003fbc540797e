"""The operators under torch.compile(fullgraph=True): their fake implementations trace, the in-place
cache update survives functionalisation, the autograd formulas compile, and the compiled results
equal the eager ones."""
import inspect

import pytest
import torch

from fractal_ext import ops
from op_samples import (cfg_filter_sample_args, gather_args, kv_cache_attention_args, llama_args, patchify_args,
                        vit_args)

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


def sampler_step(images, conditions, batch_index, token_index, q, k, v, k_cache, v_cache, cache_seqlens, logits, cfg):
    """One of each operator, as a sampler step strings them together."""
    patches = ops.patchify(images, 4)
    images_again = ops.unpatchify(patches * 2, 4)
    gathered = ops.gather_neighbour_conditions(conditions, batch_index, token_index)
    attended = ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, 0.25)
    ids, values = ops.cfg_filter_sample(logits * (1 + attended.mean()), cfg, 1.0, 1e-4, 0.485, 0.229, True, None)
    # Every output goes through generated code, which relies on the shapes the fake implementations gave.
    return images_again, gathered.sum(0), attended.square().sum(-1), ids + 1, values * 2


def step_inputs(device="cpu"):
    """The operators' sample inputs (tests/helpers/op_samples.py), the tensors sampler_step takes."""
    inputs = {**patchify_args(), **gather_args(), **kv_cache_attention_args(), **cfg_filter_sample_args()}
    names = inspect.signature(sampler_step).parameters
    return {name: inputs[name].to(device) for name in names}


# aot_eager traces through the fake implementations and functionalisation in about a second; inductor
# also generates code around the operators (about 20 s on 2 cores; Triton on a GPU would take longer
# than the GPU check affords), so it runs on the CPU only.
@pytest.mark.parametrize("device, backend", [
    ("cpu", "aot_eager"), ("cpu", "inductor"),
    pytest.param("cuda", "aot_eager", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device")]),
])
def test_every_operator_compiles_in_one_graph(device, backend):
    torch._dynamo.reset()
    eager_inputs, compiled_inputs = step_inputs(device), step_inputs(device)
    expected = sampler_step(**eager_inputs)
    # No compiled-graph caches: their keys do not cover the fake implementations, so a cached graph
    # could hide a change to one.
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        actual = torch.compile(sampler_step, fullgraph=True, backend=backend)(**compiled_inputs)
    for want, got in zip(expected, actual):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for name in ("k_cache", "v_cache"):  # the in-place append happened, as in eager mode
        torch.testing.assert_close(compiled_inputs[name], eager_inputs[name], rtol=0, atol=0)


def test_the_cpu_decoding_operators_compile_in_one_graph():
    """small_batch_linear and the block steps (CPU only), chained as a decoding step chains them."""

    def decode(llama, vit, weight):
        x = ops.llama_block_step(*llama.values())
        x = ops.vit_block_step(x * 0.5, *list(vit.values())[1:])
        return ops.small_batch_linear(x, weight, None).tanh() + x.sum()

    def inputs():
        torch.manual_seed(0)  # the helpers draw x from the global generator
        return llama_args(), vit_args(), torch.linspace(-1, 1, 5 * 32).reshape(5, 32)

    torch._dynamo.reset()
    eager_inputs, compiled_inputs = inputs(), inputs()
    expected = decode(*eager_inputs)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        actual = torch.compile(decode, fullgraph=True)(*compiled_inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    for eager_args, compiled_args in zip(eager_inputs[:2], compiled_inputs[:2]):
        for name in ("k_cache", "v_cache"):
            torch.testing.assert_close(compiled_args[name], eager_args[name], rtol=0, atol=0)


def test_gradients_through_the_operators_compile():
    torch._dynamo.reset()

    def loss(images, conditions, batch_index, token_index):
        patches = ops.patchify(images, 4)
        gathered = ops.gather_neighbour_conditions(conditions, batch_index, token_index)
        return (ops.unpatchify(patches.sin(), 4).square().sum() + gathered.cos().sum()).square()

    inputs = step_inputs()
    leaves = {name: inputs[name].clone().requires_grad_(True) for name in ("images", "conditions")}
    indices = {name: inputs[name] for name in ("batch_index", "token_index")}
    expected = torch.autograd.grad(loss(**leaves, **indices), list(leaves.values()))
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    actual = torch.autograd.grad(compiled(**leaves, **indices), list(leaves.values()))
    for want, got in zip(expected, actual):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_compiled_random_draws_follow_the_default_generator():
    """Dynamo cannot take a torch.Generator argument into a graph; with generator=None the compiled
    draws come from the default generator, the same ones as in eager mode."""
    torch._dynamo.reset()

    def draw(logits, cfg):
        return ops.cfg_filter_sample(logits, cfg, 1.0, 1e-4, 0.485, 0.229, False, None)[0]

    logits, cfg = torch.randn(64, 256), torch.full((32,), 3.0)
    compiled = torch.compile(draw, fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    expected = [draw(logits, cfg) for _ in range(2)]
    torch.manual_seed(5)
    actual = [compiled(logits, cfg) for _ in range(2)]
    assert all(torch.equal(a, e) for a, e in zip(actual, expected))
    assert not torch.equal(actual[0], actual[1])  # the generator advanced between the calls
