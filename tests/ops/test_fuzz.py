"""Random calls of every operator, valid and not (wrong ranks, dtypes and sizes, empty and strided
tensors, extreme integers): each call either fails with an error that names the operator, or returns
what the plain-PyTorch reference returns and changes its inputs as the reference does. A crash stops
the test run. Seeded, so a failure reproduces; found a division by zero (SIGFPE) in unpatchify."""
import random

import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference
from op_samples import llama_args, vit_args

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")

CASES_PER_OPERATOR = 500
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.bool]
EXTREME_INTS = [0, -1, 2**31, 2**32, 2**62, 2**63 - 1, -(2**63)]


class RandomInputs:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def choice(self, options):
        return self.rng.choice(options)

    def either(self, valid, invalid):
        """Mostly a valid setting, sometimes an invalid one."""
        return self.choice(invalid) if self.rng.random() < 0.12 else self.choice(valid)

    def tensor(self, shape, dtype=torch.float32):
        """Mostly the intended shape and dtype; else another rank, size or dtype, or a strided view."""
        change = self.rng.random()
        if change < 0.04:
            shape = [self.choice([0, 1, 2, 3, 5, 16]) for _ in range(self.choice([0, 1, 2, 3, 4, 5]))]
        elif change < 0.08:
            shape = [max(0, size + self.choice([-1, 1])) for size in shape]
        elif change < 0.11:
            dtype = self.choice(DTYPES)
        values = torch.randn(shape, generator=self.generator) * 3
        tensor = values.to(dtype) if dtype.is_floating_point else values.round().clamp(0, 4).to(dtype)
        if 0.11 <= change < 0.17 and tensor.dim() >= 2:
            tensor = tensor.transpose(0, -1)
        elif 0.17 <= change < 0.2 and tensor.numel() > 1:
            tensor = tensor.flatten()[1:]
        return tensor

    def integer(self, intended):
        return self.either([intended], EXTREME_INTS)

    def index(self, count, bound):
        index = torch.randint(0, max(bound, 1), (count,), generator=self.generator)
        if self.rng.random() < 0.15 and count:
            index[self.rng.randrange(count)] = self.choice([-1, bound, 2**40])
        return self.tensor([count], torch.int64) if self.rng.random() < 0.05 else index


def patchify_args(r):
    p = r.choice([1, 2, 4])
    return (r.tensor([r.choice([1, 2]), 3, 4 * p, 4 * p]), r.integer(p))


def unpatchify_args(r):
    p = r.choice([1, 2, 4])
    return (r.tensor([r.choice([1, 2]), r.choice([1, 4, 16]), 3 * p * p]), r.integer(p))


def gather_args(r):
    batch, seq_len, count = r.choice([1, 3]), r.choice([1, 4, 16]), r.choice([0, 1, 6])
    return (r.tensor([batch, seq_len, r.choice([1, 8])]), r.index(count, batch), r.index(count, seq_len))


def gather_backward_args(r):
    batch, seq_len, count = r.choice([1, 3]), r.choice([1, 4, 16]), r.choice([0, 1, 6])
    # Sizes the caller asks for are left sane (a huge batch_size is a huge, valid, all-zero output).
    return (r.tensor([5, count, r.choice([1, 8])]), r.index(count, batch), r.index(count, seq_len),
            r.either([batch], [0, -1]), r.either([seq_len], [0, -1, 3, 2**62, 2**63 - 1]))


def kv_cache_attention_args(r):
    batch, new, heads, head_dim, max_len = r.choice([1, 2]), r.choice([1, 2]), r.choice([1, 2]), r.choice([8, 12]), 6
    qkv = [r.tensor([batch, new, heads, head_dim]) for _ in range(3)]
    caches = [r.tensor([batch, heads, max_len, head_dim]) for _ in range(2)]
    lengths = torch.randint(0, max_len - new + 2, (batch,), generator=r.generator, dtype=torch.int32)
    if r.rng.random() < 0.1:
        lengths = r.tensor([batch], r.choice([torch.int32, torch.int64, torch.float32])) * 2
    return (*qkv, *caches, lengths, r.either([0.25, 1.0], [0.0, float("inf"), float("nan")]))


def cfg_filter_sample_args(r):
    rows, vocab, guided = r.choice([1, 3]), r.choice([1, 7, 256]), r.rng.random() < 0.6
    return (r.tensor([2 * rows if guided else rows, vocab]), r.tensor([rows]) + 3 if guided else None,
            r.either([1.0, 0.5, 2.0], [0.0, -1.0, float("nan"), float("inf")]),
            r.either([1e-4, 0.0, 1.0], [-1.0, float("nan")]), r.either([0.485, -1.0], [float("nan")]),
            r.either([0.229, 2.0], [0.0, -1.0, float("inf")]), True, None)


def small_batch_linear_args(r):
    rows, in_features, out_features = r.choice([1, 3, 16]), r.choice([1, 16, 33]), r.choice([1, 8])
    bias = r.tensor([out_features]) if r.rng.random() < 0.7 else None
    return (r.tensor([rows, in_features]), r.tensor([out_features, in_features]), bias)


def block_step_args(make):
    def args(r):
        values = make()
        for _ in range(r.choice([0, 1, 2])):
            name = r.choice(list(values))
            value = values[name]
            values[name] = r.tensor(list(value.shape), value.dtype) if isinstance(value, torch.Tensor) else \
                r.either([value], [0.0, -1.0, float("nan")])
        return tuple(values.values())

    return args


# The random arguments of each operator, in the order of ops.OP_NAMES.
OPERATORS = dict(zip(ops.OP_NAMES, [patchify_args, unpatchify_args, gather_args, gather_backward_args,
                                    kv_cache_attention_args, cfg_filter_sample_args, small_batch_linear_args,
                                    block_step_args(llama_args), block_step_args(vit_args)]))


def same(actual, expected):
    if isinstance(actual, (tuple, list)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return False
    if not actual.dtype.is_floating_point:
        return torch.equal(actual, expected)
    # Rounding differs between kernel and reference, in proportion to the magnitudes involved.
    tolerance = 2e-2 if actual.dtype in (torch.float16, torch.bfloat16) else 1e-4
    finite = expected[expected.isfinite()]
    scale = 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)
    return torch.allclose(actual.double(), expected.double(), rtol=tolerance, atol=tolerance * scale, equal_nan=True)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_random_calls_fail_clearly_or_match_the_reference(name):
    operator, oracle, make_args = getattr(ops, name), getattr(reference, name), OPERATORS[name]
    inputs = RandomInputs(seed=sum(map(ord, name)))
    outcomes = {"matched": 0, "refused": 0}
    for case in range(CASES_PER_OPERATOR):
        args = make_args(inputs)
        oracle_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        described = f"case {case}: {[tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args]}"
        try:
            result = operator(*args)
        except RuntimeError as error:
            assert str(error).startswith(f"{name}:"), f"{described}: an error that does not name {name}: {error}"
            outcomes["refused"] += 1
            continue
        expected = oracle(*oracle_args)
        assert same(result, expected), f"{described}: differs from the reference"
        for position, (arg, oracle_arg) in enumerate(zip(args, oracle_args)):
            if isinstance(arg, torch.Tensor):
                assert same(arg, oracle_arg), f"{described}: argument {position} changed unlike the reference's"
        outcomes["matched"] += 1
    # Both kinds of call were made, in numbers that show the generator explores both sides.
    assert outcomes["matched"] >= CASES_PER_OPERATOR // 10 and outcomes["refused"] >= CASES_PER_OPERATOR // 20, outcomes


MIXED_DEVICE_CASES = 200


@pytest.mark.parametrize("name", [n for n in OPERATORS if n not in ("patchify", "unpatchify")])  # one tensor each
def test_random_calls_mixing_devices_fail_clearly(name):
    """One tensor argument of an otherwise random call moved to the meta device: the call must fail
    naming the operator (before this check, most operators returned uninitialised memory: the
    dispatcher sent such calls to the fake implementations)."""
    operator, make_args = getattr(ops, name), OPERATORS[name]
    inputs = RandomInputs(seed=7 + sum(map(ord, name)))
    calls = 0
    while calls < MIXED_DEVICE_CASES:
        args = list(make_args(inputs))
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if len(tensors) < 2:
            continue
        moved = inputs.choice(tensors)
        args[moved] = args[moved].to("meta")
        with pytest.raises(RuntimeError) as error:
            operator(*args)
        assert str(error.value).startswith(f"{name}:"), f"argument {moved} on meta: {error.value}"
        calls += 1
