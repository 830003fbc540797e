"""cfg_filter_sample: guided sampling from pixel logits (docs/semantics.md) against its reference.

The reference (`fractal_ext.reference.cfg_filter_sample`) is checked against the probabilities of
the official code; the kernels against the reference: exactly where the op is deterministic
(greedy, broken rows, pixel values), by chi-square goodness of fit where it draws.
"""
import pathlib

import pytest
import torch
from safetensors.torch import load_file

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.pixels import PIXEL_MEAN, PIXEL_STD

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "reference" / "cfg_filter.safetensors"
P_VALUE_THRESHOLD = 1e-4
MIN_EXPECTED = 5.0

requires_extension = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")
CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
)
DEVICES = ["cpu", CUDA]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

pytestmark = requires_extension


# (mean, std) of each channel of the official models' normalisation.
IMAGENET_CHANNEL = list(zip(PIXEL_MEAN, PIXEL_STD))


def op(*args, **kwargs):
    return torch.ops.fractal_ext.cfg_filter_sample(*args, **kwargs)


@pytest.fixture(scope="module")
def official():
    return load_file(str(DATA))


def case_inputs(data, case, device="cpu"):
    """(logits, cfg scale or None, temperature, threshold) of an official case. At cfg == 1 the
    official code neither filters nor guides: it samples the conditional rows alone."""
    temperature, scale, threshold = data[f"case{case}.params"].tolist()
    cond, uncond = data["cond_logits"].to(device), data["uncond_logits"].to(device)
    if scale == 1.0:
        return cond, None, temperature, threshold
    return torch.cat([cond, uncond]), scale, temperature, threshold


def make_logits(rows, vocab, guided, dtype=torch.float32, device="cpu", spread=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total = 2 * rows if guided else rows
    logits = (torch.randn(total, vocab, generator=gen) * spread).to(dtype=dtype, device=device)
    cfg = (1.0 + 8.0 * torch.rand(rows, generator=gen)).to(device) if guided else None
    return logits, cfg


def assert_same_result(ours, expected):
    tokens, values = ours
    ref_tokens, ref_values = expected
    assert tokens.dtype == torch.int64 and values.dtype == torch.float32
    assert torch.equal(tokens.cpu(), ref_tokens.cpu())
    torch.testing.assert_close(values.cpu(), ref_values.cpu(), rtol=0, atol=0, equal_nan=True)


# ---- the reference against the official probabilities ---------------------------------------


@pytest.mark.parametrize("case", range(4))
def test_reference_reproduces_official_probabilities(official, case):
    logits, scale, temperature, threshold = case_inputs(official, case)
    probs = official[f"case{case}.probs"]
    # The official run guided its fp32 logits in fp32 and took the softmax in float64: the
    # reference in the same precisions reproduces it (filter decisions included) to rounding.
    same_precision = torch.softmax(
        reference.guided_logits(logits, scale, temperature, threshold).double(), dim=-1
    )
    torch.testing.assert_close(same_precision, probs, rtol=0, atol=1e-12)
    # Entirely in float64 the reference is exact; the official probabilities differ from it only
    # by the fp32 rounding of their guided logits, about |cfg| * 1e-7 relative in each logit.
    exact = reference.guided_probabilities(logits.double(), scale, temperature, threshold)
    rtol = 1e-5 * max(1.0, scale or 1.0)
    torch.testing.assert_close(exact, probs, rtol=rtol, atol=1e-6)
    # The per-row scale form of the op equals the scalar form.
    if scale is not None:
        per_row = torch.full((logits.shape[0] // 2,), scale, dtype=torch.float32)
        torch.testing.assert_close(
            reference.guided_probabilities(logits.double(), per_row, temperature, threshold), exact, rtol=0, atol=0
        )


# ---- chi-square goodness of fit ------------------------------------------------------------------


def chi_square_p_value(counts, probs):
    """p-value of observed `counts` [R, V] under `probs` [R, V] (rows independent): Pearson's
    statistic with, per row, the bins of expected count < 5 pooled into one (the pool is folded
    into the smallest kept bin when it stays under 5)."""
    counts, probs = counts.double().cpu(), probs.double().cpu()
    statistic, dof = 0.0, 0
    for observed, p in zip(counts, probs):
        expected = p / p.sum() * observed.sum()
        small = expected < MIN_EXPECTED
        obs_kept, exp_kept = observed[~small], expected[~small]
        obs_pool, exp_pool = observed[small].sum(), expected[small].sum()
        if exp_pool >= MIN_EXPECTED:
            obs_kept = torch.cat([obs_kept, obs_pool[None]])
            exp_kept = torch.cat([exp_kept, exp_pool[None]])
        elif small.any():
            smallest = exp_kept.argmin()
            obs_kept[smallest] += obs_pool
            exp_kept[smallest] += exp_pool
        statistic += float(((obs_kept - exp_kept) ** 2 / exp_kept).sum())
        dof += exp_kept.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(statistic / 2, dtype=torch.float64)))


def assert_follows(counts, probs):
    p_value = chi_square_p_value(counts, probs)
    assert p_value > P_VALUE_THRESHOLD, f"draws do not follow the distribution (chi-square p = {p_value:.3g})"


def count_tokens(tokens, rows, vocab):
    """tokens [k * rows] (row r of replica j at j * rows + r) -> counts [rows, vocab]."""
    row_of = torch.arange(tokens.numel(), device=tokens.device) % rows
    flat = torch.bincount((row_of * vocab + tokens).cpu(), minlength=rows * vocab)
    return flat.reshape(rows, vocab)


def sample_op_counts(logits, scale, temperature, threshold, draws, generator, replicas_per_call=1000):
    """Counts [rows, V] of `draws` draws per row of the op, the rows replicated in a batch.
    `scale`: None (no guidance), a float, or one float32 scale per row."""
    rows = logits.shape[0] // 2 if scale is not None else logits.shape[0]
    vocab = logits.shape[1]
    if isinstance(scale, float):
        scale = torch.full((rows,), scale, dtype=torch.float32, device=logits.device)
    replicas = min(replicas_per_call, draws)
    assert draws % replicas == 0
    if scale is not None:
        batch = torch.cat([logits[:rows].repeat(replicas, 1), logits[rows:].repeat(replicas, 1)])
        cfg = scale.repeat(replicas)
    else:
        batch, cfg = logits.repeat(replicas, 1), None
    counts = torch.zeros(rows, vocab, dtype=torch.int64)
    for _ in range(draws // replicas):
        tokens, _ = op(batch, cfg, temperature, threshold, *IMAGENET_CHANNEL[0], False, generator)
        counts += count_tokens(tokens, rows, vocab)
    return counts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(4))
def test_draw_frequencies_follow_official_probabilities(official, case, device):
    logits, scale, temperature, threshold = case_inputs(official, case, device)
    probs = official[f"case{case}.probs"]
    gen = torch.Generator(device=device).manual_seed(1000 + case)
    counts = sample_op_counts(logits, scale, temperature, threshold, 20000, gen)
    assert counts.sum() == 20000 * probs.shape[0]
    assert counts[probs == 0].sum() == 0
    assert_follows(counts, probs)


@pytest.mark.parametrize("case", range(4))
def test_frequency_test_rejects_biased_samplers(official, case):
    """The goodness-of-fit check above can fail: draws from slightly wrong distributions (the
    temperature off by 10%, or 1% of each row's mass moved from its top token to another) at the
    same sample size are rejected."""
    logits, scale, temperature, threshold = case_inputs(official, case)
    probs = official[f"case{case}.probs"]
    gen = torch.Generator().manual_seed(7)
    hotter = reference.guided_probabilities(logits.double(), scale, temperature * 1.1, threshold)
    shifted = probs.clone()
    top = shifted.argmax(dim=-1, keepdim=True)
    other = (top + 1) % shifted.shape[-1]
    moved = 0.01 * shifted.gather(-1, top)
    shifted.scatter_add_(-1, top, -moved)
    shifted.scatter_add_(-1, other, moved)
    for biased in (hotter, shifted):
        draws = torch.multinomial(biased, 20000, replacement=True, generator=gen)
        counts = torch.zeros_like(biased, dtype=torch.int64).scatter_add_(-1, draws, torch.ones_like(draws))
        with pytest.raises(AssertionError, match="do not follow"):
            assert_follows(counts, probs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("vocab", [3, 300])
def test_draw_frequencies_small_vocab_and_multi_chunk(device, dtype, guided, vocab):
    """Odd and > 256 vocabularies (the CUDA kernel's partial and streamed chunks), per-row cfg,
    half-precision logits (their distribution is that of their float32 values)."""
    rows = 5
    logits, cfg = make_logits(rows, vocab, guided, dtype=dtype, spread=1.5, seed=vocab)
    probs = reference.guided_probabilities(logits.double(), cfg, 1.1, 1e-3)
    gen = torch.Generator(device=device).manual_seed(3)
    cfg = None if cfg is None else cfg.to(device)
    counts = sample_op_counts(logits.to(device), cfg, 1.1, 1e-3, 8000, gen, replicas_per_call=8000)
    assert_follows(counts, probs)


# ---- support: never a forbidden token -----------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("vocab", [256, 37, 600])
def test_never_draws_minus_infinity_logits(device, guided, vocab):
    rows = 2048
    gen = torch.Generator().manual_seed(vocab)
    logits, cfg = make_logits(rows, vocab, guided, spread=1.0, seed=vocab)
    forbidden = torch.rand(rows, vocab, generator=gen) < 0.5
    forbidden[:, 0] = False  # every row keeps a token
    forbidden[1] = True  # a row whose only allowed token is the last one
    forbidden[1, -1] = False
    forbidden[2] = True  # a row whose only allowed token is the first one
    forbidden[2, 0] = False
    forbidden[3, 1:] = True  # the first token allowed, by far the least likely one
    logits[3, 0] = -60.0
    logits[:rows][forbidden] = float("-inf")  # the conditional rows: the guided logit is -inf
    if guided:
        logits[rows:][forbidden] = logits[rows:][forbidden].abs() + 5.0  # the unconditional model likes them
    logits, cfg = logits.to(device), None if cfg is None else cfg.to(device)
    draw_gen = torch.Generator(device=device).manual_seed(11)
    for _ in range(8):
        tokens, values = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[1], False, draw_gen)
        tokens = tokens.cpu()
        assert tokens.min() >= 0 and tokens.max() < vocab
        assert not forbidden.gather(-1, tokens[:, None]).any()
        assert tokens[1] == vocab - 1 and tokens[2] == 0 and tokens[3] == 0
        assert torch.equal(values.cpu(), reference.token_to_pixel_value(tokens, *IMAGENET_CHANNEL[1]))


@pytest.mark.parametrize("device", DEVICES)
def test_extreme_dynamic_range_draws_only_supported_tokens(device):
    """Weights spanning far beyond float32's range: tokens whose probability underflows are
    never drawn, the draw stays in range (the inverse-CDF rounding guard)."""
    rows, vocab = 4096, 256
    logits = torch.full((rows, vocab), -1e30)
    logits[:, -1] = 0.0
    logits[:, -2] = -1e-3
    logits[::2, 0] = 0.0
    tokens, _ = op(logits.to(device), None, 1.0, 0.0, *IMAGENET_CHANNEL[0], False, torch.Generator(device=device).manual_seed(5))
    tokens = tokens.cpu()
    allowed = torch.tensor([0, vocab - 2, vocab - 1])
    assert torch.isin(tokens, allowed).all()
    assert (tokens[1::2] != 0).all()


# ---- deterministic parts against the reference -----------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("rows,vocab", [(1, 256), (3, 256), (17, 1), (5, 7), (33, 300), (2, 1000), (129, 256)])
def test_greedy_equals_reference(device, dtype, guided, rows, vocab):
    logits, cfg = make_logits(rows, vocab, guided, dtype=dtype, device=device, seed=rows * vocab)
    for channel in range(3):
        expected = reference.cfg_filter_sample(logits.cpu(), None if cfg is None else cfg.cpu(), 1.03, 1e-3, *IMAGENET_CHANNEL[channel],
                                               True)
        assert_same_result(op(logits, cfg, 1.03, 1e-3, *IMAGENET_CHANNEL[channel], True, None), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("vocab", [2, 256, 700])
def test_filter_stops_guidance_lifting_unlikely_tokens(device, vocab):
    """Token 1 is unlikely under the conditional model (p ~ 6e-6) and very unlikely under the
    unconditional one: unfiltered CFG would make it the argmax (-40 + 10 * 28 = 240); the filter
    raises its unconditional logit to -12 first, so guidance leaves it at -12 and token 0 wins.
    With threshold 0 nothing is filtered and token 1 wins."""
    cond = torch.full((1, vocab), -30.0)
    uncond = torch.full((1, vocab), -30.0)
    cond[0, :2] = torch.tensor([0.0, -12.0])
    uncond[0, :2] = torch.tensor([0.0, -40.0])
    logits, cfg = torch.cat([cond, uncond]).to(device), torch.tensor([10.0], device=device)
    for threshold, expected in ((1e-4, 0), (0.0, 1)):
        tokens, _ = op(logits, cfg, 1.0, threshold, *IMAGENET_CHANNEL[0], True, None)
        assert tokens.item() == expected
        assert reference.cfg_filter_sample(logits.cpu(), cfg.cpu(), 1.0, threshold, *IMAGENET_CHANNEL[0], True)[0].item() == expected
        drawn, _ = op(logits.repeat_interleave(64, dim=0), cfg.repeat(64), 1.0, threshold, *IMAGENET_CHANNEL[0], False,
                      torch.Generator(device=device).manual_seed(1))
        assert (drawn == expected).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_strided_logits(device, dtype):
    """logits[:, channel] of the pixel head's [2n, 3, 256] output: rows 768 elements apart."""
    n = 9
    full = (torch.randn(2 * n, 3, 256, generator=torch.Generator().manual_seed(1)) * 3).to(dtype=dtype, device=device)
    cfg = torch.linspace(1.0, 10.0, n, device=device)
    for channel in range(3):
        logits = full[:, channel]
        assert not logits.is_contiguous()
        expected = reference.cfg_filter_sample(logits.cpu(), cfg.cpu(), 1.1, 1e-4, *IMAGENET_CHANNEL[channel], True)
        assert_same_result(op(logits, cfg, 1.1, 1e-4, *IMAGENET_CHANNEL[channel], True, None), expected)
        gen_a = torch.Generator(device=device).manual_seed(2)
        gen_b = torch.Generator(device=device).manual_seed(2)
        assert torch.equal(op(logits, cfg, 1.1, 1e-4, *IMAGENET_CHANNEL[channel], False, gen_a)[0],
                           op(logits.contiguous(), cfg, 1.1, 1e-4, *IMAGENET_CHANNEL[channel], False, gen_b)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channel", range(3))
def test_pixel_values_exact_for_every_token(device, channel):
    vocab = 256
    logits = torch.zeros(vocab, vocab)
    logits.fill_diagonal_(50.0)  # row k: token k
    tokens, values = op(logits.to(device), None, 1.0, 1e-4, *IMAGENET_CHANNEL[channel], True, None)
    assert torch.equal(tokens.cpu(), torch.arange(vocab))
    assert torch.equal(values.cpu(), reference.token_to_pixel_value(torch.arange(vocab), *IMAGENET_CHANNEL[channel]))
    tokens, values = op(logits.to(device), None, 1.0, 1e-4, *IMAGENET_CHANNEL[channel], False, torch.Generator(device=device))
    assert torch.equal(values.cpu(), reference.token_to_pixel_value(tokens.cpu(), *IMAGENET_CHANNEL[channel]))


def broken_rows_logits(vocab=256):
    """(guided logits, unguided logits): a few rows with no distribution between normal ones."""
    n = 8
    logits, _ = make_logits(n, vocab, True, seed=4)
    inf, nan = float("inf"), float("nan")
    logits[1, 5] = nan  # conditional NaN
    logits[n + 2, 7] = nan  # unconditional NaN
    logits[3] = -inf  # conditional all -inf
    logits[4, 9] = inf  # conditional +inf
    logits[5, 11] = -inf  # -inf in both rows of a pair: cond - uncond is NaN
    logits[n + 5, 11] = -inf
    logits[n + 6] = -inf  # unconditional all -inf: -inf + cfg * inf is NaN
    plain, _ = make_logits(6, vocab, False, seed=5)
    plain[0, 3] = nan
    plain[2] = -inf
    plain[4, 0] = inf
    return logits, torch.linspace(1.0, 6.0, n), plain


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("vocab", [256, 300])
def test_rows_without_distribution_give_token_zero_and_nan(device, vocab):
    logits, cfg, plain = broken_rows_logits(vocab)
    for x, scale, broken in ((logits, cfg, [1, 2, 3, 4, 5, 6]), (plain, None, [0, 2, 4])):
        for greedy in (True, False):
            expected = reference.cfg_filter_sample(x, scale, 1.0, 1e-3, *IMAGENET_CHANNEL[2], greedy)
            assert torch.isnan(expected[1][broken]).all()  # the documented reference behaviour
            gen = torch.Generator(device=device).manual_seed(0)
            tokens, values = op(x.to(device), None if scale is None else scale.to(device), 1.0, 1e-3, *IMAGENET_CHANNEL[2], greedy, gen)
            tokens, values = tokens.cpu(), values.cpu()
            is_broken = torch.isnan(values)
            assert is_broken.nonzero().flatten().tolist() == broken
            assert (tokens[is_broken] == 0).all()
            if greedy:
                assert_same_result((tokens, values), expected)
            else:
                assert ((tokens >= 0) & (tokens < vocab)).all()


# ---- randomness: generator semantics ----------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("guided", [True, False])
def test_seeded_generator_reproduces_and_advances(device, guided):
    logits, cfg = make_logits(4096, 256, guided, device=device, spread=1.0)
    gen = torch.Generator(device=device).manual_seed(123)
    first = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, gen)[0]
    second = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, gen)[0]
    again = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, torch.Generator(device=device).manual_seed(123))[0]
    other_seed = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, torch.Generator(device=device).manual_seed(124))[0]
    assert torch.equal(first, again)
    assert (first != second).float().mean() > 0.5
    assert (first != other_seed).float().mean() > 0.5
    # The default generator follows torch.manual_seed.
    torch.manual_seed(9)
    default_a = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)[0]
    torch.manual_seed(9)
    default_b = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)[0]
    assert torch.equal(default_a, default_b)


def test_greedy_does_not_consume_randomness():
    logits, cfg = make_logits(16, 256, True)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], True, gen)
    assert torch.equal(gen.get_state(), state)
    op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, gen)
    assert not torch.equal(gen.get_state(), state)


def test_draws_do_not_depend_on_thread_count():
    logits, cfg = make_logits(3000, 256, True, spread=1.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, torch.Generator().manual_seed(8))[0]
        torch.set_num_threads(max(2, threads))
        many = op(logits, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, torch.Generator().manual_seed(8))[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


# ---- shapes, bad input, opcheck --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    tokens, values = op(torch.empty(0, 256, device=device), torch.empty(0, device=device), 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    assert tokens.shape == (0,) and values.shape == (0,) and tokens.dtype == torch.int64


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_errors_name_the_argument(device):
    logits, cfg = make_logits(4, 256, True, device=device)
    plain = logits[:4]

    def fails(match, *args):
        with pytest.raises(RuntimeError, match=match):
            op(*args)

    fails("logits must have 2 dimensions", logits[0], cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("logits must have 2 dimensions", logits[None], cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("logits must be float32, float16 or bfloat16", logits.long(), cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("logits must be float32, float16 or bfloat16", logits.int(), None, 1.0, 1e-4, *IMAGENET_CHANNEL[0], True, None)
    fails("logits must be float32, float16 or bfloat16", logits.double(), cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("logits must have at least one column", logits[:, :0], cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("logits must have unit stride", logits.t().contiguous().t(), cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("odd row count", logits[:7], cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails(r"cfg must have shape \[4\]", logits, cfg[:3], 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails(r"cfg must have shape \[4\]", logits, cfg[None], 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails(r"cfg must have shape \[4\]", logits, cfg[0], 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails(r"cfg must have shape \[2\]", plain, cfg, 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("cfg must be Float", logits, cfg.double(), 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)
    fails("pixel_std must be finite and > 0, got 0", logits, cfg, 1.0, 1e-4, 0.5, 0.0, False, None)
    fails("pixel_std must be finite and > 0, got -1", plain, None, 1.0, 1e-4, 0.5, -1.0, True, None)
    fails("pixel_std must be finite and > 0, got inf", plain, None, 1.0, 1e-4, 0.5, float("inf"), True, None)
    fails("pixel_mean must be finite, got nan", plain, None, 1.0, 1e-4, float("nan"), 0.5, True, None)
    for temperature in (0.0, -1.0, float("nan"), float("inf")):
        fails("temperature must be > 0", logits, cfg, temperature, 1e-4, *IMAGENET_CHANNEL[0], False, None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cfg_on_another_device_is_an_error():
    logits, cfg = make_logits(4, 256, True, device="cuda")
    with pytest.raises(RuntimeError, match="cfg and logits must be on the same device"):
        op(logits, cfg.cpu(), 1.0, 1e-4, *IMAGENET_CHANNEL[0], False, None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(device, guided, dtype):
    logits, cfg = make_logits(5, 256, guided, dtype=dtype, device=device)
    fn = torch.ops.fractal_ext.cfg_filter_sample.default
    torch.library.opcheck(fn, (logits, cfg, 1.02, 1e-4, *IMAGENET_CHANNEL[1], True, None))
    torch.library.opcheck(fn, (logits, cfg, 1.02, 1e-4, *IMAGENET_CHANNEL[1], False, None))
    # An explicit generator advances between the runs opcheck compares, so that test is left out.
    gen = torch.Generator(device=device).manual_seed(0)
    torch.library.opcheck(fn, (logits, cfg, 1.02, 1e-4, *IMAGENET_CHANNEL[1], False, gen),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_python_face_binds_the_compiled_op():
    assert ops.cfg_filter_sample is torch.ops.fractal_ext.cfg_filter_sample.default
