"""Which operators differentiate: patchify, unpatchify and the neighbour gather have formulas
(gradchecked in test_ops_patchify_gather.py); a backward pass through any other operator must fail
loudly, not leave the inputs' gradients silently empty."""
import pytest
import torch

from fractal_ext import ops
from op_samples import (cfg_filter_sample_args, gather_backward_args, kv_cache_attention_args, llama_args,
                        small_batch_linear_args, vit_args)

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


def seeded(make_args):
    torch.manual_seed(0)
    return make_args()


# (operator, its arguments, the floating input made to require grad, the output to backpropagate)
INFERENCE_ONLY = [
    ("kv_cache_attention", kv_cache_attention_args, "q", 0),
    ("kv_cache_attention", kv_cache_attention_args, "k", 0),
    ("cfg_filter_sample", cfg_filter_sample_args, "logits", 1),
    ("small_batch_linear", small_batch_linear_args, "weight", 0),
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
