"""Which operators differentiate: patchify, unpatchify and the neighbour gather have formulas
(gradchecked in test_ops_patchify_gather.py); a backward pass through any other operator must fail
loudly, not leave the inputs' gradients silently empty."""
import pytest
import torch

from fractal_ext import ops
from test_ops_block_step import llama_args, vit_args

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


def kv_cache_attention_args():
    q, k, v = (torch.randn(2, 1, 4, 16) for _ in range(3))
    return dict(q=q, k=k, v=v, k_cache=torch.zeros(2, 4, 8, 16), v_cache=torch.zeros(2, 4, 8, 16),
                cache_seqlens=torch.tensor([0, 3], dtype=torch.int32), scale=0.25)


def cfg_filter_sample_args():
    return dict(logits=torch.randn(4, 256), cfg=torch.full((2,), 3.0), temperature=1.0, filter_threshold=1e-4,
                channel=0, greedy=True, generator=None)


def gather_backward_args():
    return dict(grad=torch.randn(5, 3, 8), batch_index=torch.tensor([0, 1, 1]), token_index=torch.tensor([0, 5, 15]),
                batch_size=2, seq_len=16)


def seeded(make_args):
    torch.manual_seed(0)
    return make_args()


# (operator, its arguments, the floating input made to require grad, the output to backpropagate)
INFERENCE_ONLY = [
    ("kv_cache_attention", kv_cache_attention_args, "q", 0),
    ("kv_cache_attention", kv_cache_attention_args, "k", 0),
    ("cfg_filter_sample", cfg_filter_sample_args, "logits", 1),
    ("small_batch_linear", lambda: dict(x=torch.randn(2, 8), weight=torch.randn(5, 8), bias=None), "weight", 0),
    ("llama_block_step", llama_args, "wqkv", 0),
    ("vit_block_step", vit_args, "x", 0),
    ("gather_neighbour_conditions_backward", gather_backward_args, "grad", 0),
]


@pytest.mark.parametrize("name, make_args, input_name, output_index", INFERENCE_ONLY)
def test_backward_through_an_inference_operator_fails_naming_it(name, make_args, input_name, output_index):
    args = make_args()
    args[input_name].requires_grad_(True)
    result = getattr(ops, name)(*args.values())
    output = result[output_index] if isinstance(result, tuple) else result
    with pytest.raises(RuntimeError, match=f"derivative for fractal_ext::{name} is not implemented"):
        output.sum().backward()


@pytest.mark.parametrize("name, make_args, input_name, output_index", INFERENCE_ONLY)
def test_inference_operators_run_as_before_without_grad(name, make_args, input_name, output_index):
    """The Autograd kernel only marks outputs: the computed values, and the caches updated in
    place, are those of a call without gradients."""
    plain, tracked = seeded(make_args), seeded(make_args)
    tracked[input_name].requires_grad_(True)
    expected = getattr(ops, name)(*plain.values())
    actual = getattr(ops, name)(*tracked.values())
    for want, got in zip(*(r if isinstance(r, tuple) else (r,) for r in (expected, actual))):
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)
    for key, value in plain.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(tracked[key].detach(), value, rtol=0, atol=0)
