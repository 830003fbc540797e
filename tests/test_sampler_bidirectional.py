"""The CPU MAR pass on reordered oneDNN weights computes what the ViT blocks compute."""
import pytest
import torch

from fractal_ext.models.layers import ViTBlock
from fractal_ext.sampler.bidirectional import ReorderedBlocks, onednn_linear_available, runs_onednn_pass

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="torch has no oneDNN linear here")


@pytest.mark.parametrize("rows, tokens, dim, heads", [(1, 5, 32, 2), (3, 13, 48, 3), (2, 21, 64, 4)])
def test_reordered_blocks_match_the_modules(rows, tokens, dim, heads):
    torch.manual_seed(rows + tokens)
    blocks = torch.nn.ModuleList([ViTBlock(dim, heads) for _ in range(3)]).eval()
    for parameter in blocks.parameters():  # non-trivial norms and biases
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    x = torch.randn(rows, tokens, dim)
    with torch.no_grad():
        expected = x
        for block in blocks:
            expected = block(expected)
        ours = ReorderedBlocks(blocks, rows_hint=rows * tokens)(x)
        # A row count other than the hint gives the same numbers too.
        twice = ReorderedBlocks(blocks, rows_hint=7)(torch.cat([x, x]))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(twice, torch.cat([expected, expected]), rtol=1e-5, atol=1e-5)


def test_only_fp32_cpu_passes_take_the_onednn_path():
    assert runs_onednn_pass(torch.zeros(1, 2, 8))
    assert not runs_onednn_pass(torch.zeros(1, 2, 8, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not runs_onednn_pass(torch.zeros(1, 2, 8))


def test_the_availability_check_does_not_touch_the_global_rng():
    onednn_linear_available.cache_clear()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert onednn_linear_available()
    assert torch.equal(torch.rand(3), expected)
