"""The CPU MAR pass on reordered oneDNN weights computes what the ViT blocks compute."""
import pytest
import torch

from fractal_ext import ops
from fractal_ext.models.layers import ViTBlock
from fractal_ext.sampler.bidirectional import ReorderedBlocks
from fractal_ext.sampler.onednn import onednn_linear_available
from fractal_ext.sampler.plan import choose_paths
from fractal_ext.sampler.mar import tokens_read_by_gather

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


def test_the_last_block_can_compute_only_some_rows():
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([ViTBlock(32, 2) for _ in range(2)]).eval()
    x = torch.randn(3, 11, 32)
    outputs = torch.tensor([[0, 4, 10], [1, 2, 3], [9, 5, 7]])  # any order, per row
    with torch.no_grad():
        full = ReorderedBlocks(blocks, rows_hint=33)(x)
        some = ReorderedBlocks(blocks, rows_hint=33)(x, outputs=outputs)
    torch.testing.assert_close(some, full.take_along_dim(outputs[..., None], dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side, generated", [(4, 1), (4, 3), (8, 5), (16, 4)])
def test_the_gather_reads_only_the_conditions_listed_for_it(side, generated):
    torch.manual_seed(side + generated)
    rows, seq_len = 3, side * side
    positions = torch.rand(rows, seq_len).argsort(1)[:, :generated].sort(1).values
    read = tokens_read_by_gather(positions, seq_len)
    middle = torch.randn(rows, seq_len, 8)
    index = read[..., None].expand(-1, -1, 8)
    only_read = torch.zeros_like(middle).scatter_(1, index, middle.gather(1, index))
    batch_index = torch.arange(rows)[:, None].expand_as(positions).reshape(-1)
    expected = ops.gather_neighbour_conditions(middle, batch_index, positions.reshape(-1))
    torch.testing.assert_close(ops.gather_neighbour_conditions(only_read, batch_index, positions.reshape(-1)), expected)
    # Minimal: the row that reads the most reads exactly its generated tokens and their neighbours.
    grid_neighbours = {(p, q) for p in range(seq_len) for q in range(seq_len)
                       if abs(p // side - q // side) + abs(p % side - q % side) <= 1}
    needed = [{q for p in row.tolist() for (a, q) in grid_neighbours if a == p} for row in positions]
    assert read.shape[1] == max(len(n) for n in needed)
    for row, n in zip(read.tolist(), needed):
        assert n <= set(row) and len(set(row)) == len(row)


def test_a_corner_token_reads_three_conditions():
    assert tokens_read_by_gather(torch.tensor([[0]]), 64).tolist() == [[0, 1, 8]]


def test_fp32_and_the_cpu_bf16_mode_take_the_onednn_path():
    assert choose_paths(torch.device("cpu"), "fp32", None).onednn_mar_pass
    assert choose_paths(torch.device("cpu"), "bf16", None).onednn_mar_pass  # on bf16 weight copies
    assert not choose_paths(torch.device("cpu"), "fp16", None).onednn_mar_pass  # autocast


def test_bf16_reordered_blocks_are_as_accurate_as_bf16_autocast():
    """The CPU bf16 mode's pass (bf16 GEMMs and attention, fp32 residual stream and norms)
    against the modules in float64 on the same bf16-rounded weights: no less accurate than the
    modules under bf16 autocast."""
    torch.manual_seed(3)
    blocks = torch.nn.ModuleList([ViTBlock(64, 4) for _ in range(3)]).eval()
    with torch.no_grad():
        for parameter in blocks.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        for block in blocks:  # weights bf16-exact, so that only the computation differs
            for linear in ReorderedBlocks.linears(block):
                linear.weight.copy_(linear.weight.bfloat16().float())
        x = torch.randn(2, 21, 64)
        truth = x.double()
        for block in blocks.double():
            truth = block(truth)
        blocks.float()
        ours = ReorderedBlocks(blocks, rows_hint=42, dtype=torch.bfloat16)(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = x
            for block in blocks:
                autocast = block(autocast)
    assert ours.dtype == torch.float32
    ours_error, autocast_error = ((y.double() - truth).abs().max() for y in (ours, autocast))
    assert ours_error <= 1.5 * autocast_error, (ours_error, autocast_error)
    assert ours_error > 1e-4  # bf16 arithmetic did run (fp32 would be ~1e-6 off)


def test_the_availability_check_does_not_touch_the_global_rng():
    onednn_linear_available.cache_clear()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert onednn_linear_available()
    assert torch.equal(torch.rand(3), expected)
