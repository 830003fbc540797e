"""small_batch_linear (CPU weight-streaming linear for a few rows) against torch's linear."""
import pytest
import torch
import torch.nn.functional as F

from fractal_ext import ops

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 9, 15, 16, 17, 33])
@pytest.mark.parametrize("in_features, out_features", [(1, 1), (3, 5), (16, 16), (17, 33), (1000, 129)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_torch_linear(rows, in_features, out_features, with_bias):
    generator = torch.Generator().manual_seed(rows * 1000 + in_features)
    x = torch.randn(rows, in_features, generator=generator)
    weight = torch.randn(out_features, in_features, generator=generator)
    bias = torch.randn(out_features, generator=generator) if with_bias else None
    expected = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    ours = ops.small_batch_linear(x, weight, bias)
    theirs = F.linear(x, weight, bias)
    # As accurate as torch's own fp32 linear, against a float64 result.
    tolerance = 2 * (theirs.double() - expected).abs().max().item() + 1e-6 * in_features**0.5
    assert ours.shape == (rows, out_features) and ours.dtype == torch.float32
    assert (ours.double() - expected).abs().max().item() <= tolerance


def test_leading_dimensions_and_strided_rows():
    x = torch.randn(3, 1, 40)[:, :, :32]  # non-contiguous rows
    weight = torch.randn(24, 32)
    torch.testing.assert_close(ops.small_batch_linear(x, weight, None), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_opcheck():
    x, weight, bias = torch.randn(2, 20), torch.randn(12, 20), torch.randn(12)
    torch.library.opcheck(torch.ops.fractal_ext.small_batch_linear.default, (x, weight, bias))
    torch.library.opcheck(torch.ops.fractal_ext.small_batch_linear.default, (x, weight, None))


@pytest.mark.parametrize(
    "x, weight, bias, message",
    [
        (torch.randn(2, 8).double(), torch.randn(4, 8), None, "x must be"),
        (torch.randn(2, 8), torch.randn(4, 8).half(), None, "weight must be"),
        (torch.randn(2, 8), torch.randn(4, 9), None, "x has 8 features but weight expects 9"),
        (torch.randn(2, 8), torch.randn(4, 8, 1), None, "weight must have 2 dimensions"),
        (torch.randn(2, 8), torch.randn(8, 4).t(), None, "weight must be contiguous"),
        (torch.randn(2, 8), torch.randn(4, 8), torch.randn(5), "bias must have 4 entries"),
        (torch.randn(2, 8), torch.randn(4, 8), torch.randn(4, 1), "bias must have 1 dimensions"),
    ],
)
def test_bad_input(x, weight, bias, message):
    with pytest.raises(RuntimeError, match=message):
        ops.small_batch_linear(x, weight, bias)
