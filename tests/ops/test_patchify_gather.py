"""patchify / unpatchify and the four-neighbour condition gather against their references.

Every test runs on the CPU and, behind the `cuda` marker, on a CUDA device when one is present.
patchify, unpatchify and the gather forward only move values, so they must match bit for bit;
the gather backward adds, so low precisions get a tolerance relative to plain PyTorch.
"""
import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference

OPS = torch.ops.fractal_ext  # the compiled operators: these tests fail when the extension is missing

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
CUDA_ONLY = [DEVICES[1]]


def _indices(batch, seq_len, selected, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch_index = torch.randint(0, batch, (selected,), generator=g)
    token_index = torch.randint(0, seq_len, (selected,), generator=g)
    return batch_index.to(device), token_index.to(device)


# ---- patchify / unpatchify ------------------------------------------------------------------

# (images shape, patch size): the official ones first, then awkward ones.
PATCHIFY_CASES = [
    ((2, 3, 64, 64), 4),
    ((1, 3, 256, 256), 16),
    ((7, 3, 16, 16), 4),
    ((9, 3, 4, 4), 1),
    ((1, 1, 1, 1), 1),
    ((3, 5, 12, 8), 2),  # H != W
    ((2, 2, 9, 9), 3),  # odd patch size (runtime-length path)
    ((1, 3, 10, 10), 5),
    ((2, 4, 16, 16), 8),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,patch", PATCHIFY_CASES)
def test_patchify_matches_reference(device, shape, patch):
    images = torch.randn(shape, device=device)
    out = OPS.patchify(images, patch)
    torch.testing.assert_close(out, reference.patchify(images, patch), rtol=0, atol=0)
    assert out.is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,patch", [c for c in PATCHIFY_CASES if c[0][2] == c[0][3]])
def test_unpatchify_matches_reference_and_inverts(device, shape, patch):
    images = torch.randn(shape, device=device)
    patches = reference.patchify(images, patch)
    out = OPS.unpatchify(patches, patch)
    torch.testing.assert_close(out, reference.unpatchify(patches, patch), rtol=0, atol=0)
    torch.testing.assert_close(out, images, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_patchify_dtypes_exact(device, dtype):
    images = torch.randn(3, 3, 32, 32, device=device).to(dtype)
    for patch in (1, 2, 4, 16):
        patches = OPS.patchify(images, patch)
        assert patches.dtype == dtype
        torch.testing.assert_close(patches, reference.patchify(images, patch), rtol=0, atol=0)
        torch.testing.assert_close(OPS.unpatchify(patches, patch), images, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "layout", ["channels_last", "transposed", "sliced", "batch_strided", "expanded", "offset_by_one"]
)
def test_patchify_strided_inputs(device, layout):
    base = torch.randn(4, 3, 16, 16, device=device)
    images = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "sliced": torch.randn(4, 3, 16, 20, device=device)[..., 2:18],
        "batch_strided": base[::2],
        "expanded": base[:1].expand(3, -1, -1, -1),
        "offset_by_one": torch.randn(4 * 3 * 16 * 16 + 1, device=device)[1:].view(4, 3, 16, 16),
    }[layout]
    assert not images.is_contiguous() or layout == "offset_by_one"
    for patch in (1, 4, 8):
        patches = OPS.patchify(images, patch)
        torch.testing.assert_close(patches, reference.patchify(images, patch), rtol=0, atol=0)
        strided = patches.transpose(0, 1).contiguous().transpose(0, 1)  # same values, batch-minor
        torch.testing.assert_close(OPS.unpatchify(strided, patch), images, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_patchify_empty_batch(device):
    images = torch.randn(0, 3, 8, 8, device=device)
    assert OPS.patchify(images, 4).shape == (0, 4, 48)
    assert OPS.unpatchify(torch.randn(0, 4, 48, device=device), 4).shape == (0, 3, 8, 8)


@pytest.mark.parametrize("device", DEVICES)
def test_patchify_autograd(device):
    images = torch.randn(2, 3, 8, 8, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: OPS.patchify(x, 4), (images,))
    patches = torch.randn(2, 4, 12, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: OPS.unpatchify(x, 2), (patches,))


@pytest.mark.parametrize("device", DEVICES)
def test_patchify_opcheck(device):
    torch.library.opcheck(OPS.patchify.default, (torch.randn(2, 3, 8, 8, device=device), 4))
    torch.library.opcheck(OPS.unpatchify.default, (torch.randn(2, 16, 12, device=device), 2))


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.randn(3, 8, 8), 4), "patchify: images must have 4 dimensions"),
        ((torch.randn(1, 3, 8, 8), 0), r"patchify: patch_size must be in \[1, 1048576\], got 0"),
        ((torch.zeros(1, 3, 0, 0), 2**32), r"patchify: patch_size must be in \[1, 1048576\]"),
        ((torch.randn(1, 3, 8, 10), 4), "patchify: images height 8 and width 10 must be divisible by patch_size 4"),
        ((torch.zeros(1, 3, 8, 8, dtype=torch.int32), 4), "patchify: images must be float32, float16, bfloat16"),
    ],
)
def test_patchify_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        OPS.patchify(*args)


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.randn(16, 12), 2), "unpatchify: patches must have 3 dimensions"),
        ((torch.randn(1, 15, 12), 2), r"unpatchify: patches.size\(1\) must be a perfect square"),
        ((torch.randn(1, 16, 10), 2), r"unpatchify: patches.size\(2\) = 10 must be divisible by patch_size\^2 = 4"),
        ((torch.randn(1, 16, 12), -1), r"unpatchify: patch_size must be in \[1, 1048576\], got -1"),
        # 2^32 squared wraps to 0 in int64: the divisibility check divided by zero (SIGFPE) before the bound.
        ((torch.randn(1, 16, 12), 2**32), r"unpatchify: patch_size must be in \[1, 1048576\], got 4294967296"),
        ((torch.zeros(1, 16, 12, dtype=torch.int64), 2), "unpatchify: patches must be float32"),
    ],
)
def test_unpatchify_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        OPS.unpatchify(*args)


# ---- four-neighbour gather --------------------------------------------------------------------

# (batch, seq_len, channels, selected): official-like shapes scaled down, then awkward ones.
GATHER_CASES = [
    (4, 256, 64, 9),  # sampling step: few tokens of a 16x16 grid
    (6, 16, 32, 60),  # level 1: many tokens of a 4x4 grid, with repeats
    (3, 256, 96, 600),  # training: most tokens, with repeats
    (1, 1, 1, 1),  # 1x1 grid: every neighbour is off the grid
    (1, 4, 3, 4),
    (2, 9, 5, 7),  # odd channels: scalar path
    (5, 25, 17, 33),
    (2, 49, 8, 0),  # nothing selected
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,seq_len,channels,selected", GATHER_CASES)
def test_gather_matches_reference(device, batch, seq_len, channels, selected):
    conditions = torch.randn(batch, seq_len, channels, device=device)
    batch_index, token_index = _indices(batch, seq_len, selected, device)
    out = OPS.gather_neighbour_conditions(conditions, batch_index, token_index)
    assert out.shape == (5, selected, channels)
    torch.testing.assert_close(
        out, reference.gather_neighbour_conditions(conditions, batch_index, token_index), rtol=0, atol=0
    )


@pytest.mark.parametrize("device", DEVICES)
def test_gather_grid_semantics(device):
    """The five slots are (middle, top, right, bottom, left), zero off the grid, on a 3x3 grid."""
    conditions = torch.arange(1, 10, device=device, dtype=torch.float32).view(1, 9, 1)
    token_index = torch.arange(9, device=device)
    out = OPS.gather_neighbour_conditions(conditions, torch.zeros_like(token_index), token_index)[..., 0]
    grid = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.float32)
    expected = torch.stack([
        grid,
        torch.tensor([[0, 0, 0], [1, 2, 3], [4, 5, 6]]),
        torch.tensor([[2, 3, 0], [5, 6, 0], [8, 9, 0]]),
        torch.tensor([[4, 5, 6], [7, 8, 9], [0, 0, 0]]),
        torch.tensor([[0, 1, 2], [0, 4, 5], [0, 7, 8]]),
    ]).float().view(5, 9)
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_dtypes_exact(device, dtype):
    conditions = torch.randn(3, 64, 40, device=device).to(dtype)
    batch_index, token_index = _indices(3, 64, 50, device)
    out = OPS.gather_neighbour_conditions(conditions, batch_index, token_index)
    assert out.dtype == dtype
    torch.testing.assert_close(
        out, reference.gather_neighbour_conditions(conditions, batch_index, token_index), rtol=0, atol=0
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channel_strided", "token_major", "sliced_channels", "offset_by_one"])
def test_gather_strided_inputs(device, layout):
    conditions = {
        "channel_strided": torch.randn(3, 16, 24, device=device)[..., ::2],
        "token_major": torch.randn(16, 3, 12, device=device).transpose(0, 1),
        "sliced_channels": torch.randn(3, 16, 20, device=device)[..., 3:15],
        "offset_by_one": torch.randn(3 * 16 * 12 + 1, device=device)[1:].view(3, 16, 12),
    }[layout]
    # Index columns of nonzero() are strided views, as a model produces them.
    mask = torch.rand(3, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    batch_index, token_index = mask.to(device).nonzero(as_tuple=True)
    pairs = mask.to(device).nonzero()
    for bi, ti in ((batch_index, token_index), (pairs[:, 0], pairs[:, 1])):
        out = OPS.gather_neighbour_conditions(conditions, bi, ti)
        torch.testing.assert_close(out, reference.gather_neighbour_conditions(conditions, bi, ti), rtol=0, atol=0)
        grad = torch.randn(12, 5, bi.shape[0], device=device).permute(1, 2, 0)  # channel-strided grad
        torch.testing.assert_close(
            OPS.gather_neighbour_conditions_backward(grad, bi, ti, 3, 16),
            reference.gather_neighbour_conditions_backward(grad, bi, ti, 3, 16),
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,seq_len,channels,selected", GATHER_CASES)
def test_gather_backward_matches_reference(device, batch, seq_len, channels, selected):
    grad = torch.randn(5, selected, channels, device=device)
    batch_index, token_index = _indices(batch, seq_len, selected, device, seed=3)
    out = OPS.gather_neighbour_conditions_backward(grad, batch_index, token_index, batch, seq_len)
    assert out.shape == (batch, seq_len, channels)
    expected = reference.gather_neighbour_conditions_backward(grad, batch_index, token_index, batch, seq_len)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gather_backward_low_precision(device, dtype):
    """Error against a float64 oracle at most twice what plain PyTorch reaches in the same dtype."""
    batch, seq_len, channels, selected = 3, 16, 64, 120  # many repeats: up to ~20 terms per row
    grad = torch.randn(5, selected, channels, device=device, dtype=torch.float64)
    batch_index, token_index = _indices(batch, seq_len, selected, device, seed=5)
    exact = reference.gather_neighbour_conditions_backward(grad, batch_index, token_index, batch, seq_len)
    low = grad.to(dtype)
    exact_low_inputs = reference.gather_neighbour_conditions_backward(
        low.double(), batch_index, token_index, batch, seq_len
    )
    torch_err = (
        reference.gather_neighbour_conditions_backward(low, batch_index, token_index, batch, seq_len).double()
        - exact_low_inputs
    ).abs().max()
    ours = OPS.gather_neighbour_conditions_backward(low, batch_index, token_index, batch, seq_len)
    assert ours.dtype == dtype
    our_err = (ours.double() - exact_low_inputs).abs().max()
    assert our_err <= 2 * torch_err + 1e-12, (our_err, torch_err)
    assert (ours.double() - exact).abs().max() < 0.1  # and close to the full-precision result


def test_gather_backward_cpu_deterministic_across_threads():
    grad = torch.randn(5, 3000, 64)
    batch_index, token_index = _indices(4, 256, 3000, "cpu", seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = OPS.gather_neighbour_conditions_backward(grad, batch_index, token_index, 4, 256)
        torch.set_num_threads(max(2, threads))
        multi = OPS.gather_neighbour_conditions_backward(grad, batch_index, token_index, 4, 256)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, multi)


@pytest.mark.parametrize("device", DEVICES)
def test_gather_autograd(device):
    conditions = torch.randn(2, 9, 3, device=device, dtype=torch.float64, requires_grad=True)
    batch_index = torch.tensor([0, 1, 1, 0, 1, 1], device=device)
    token_index = torch.tensor([4, 0, 8, 4, 5, 0], device=device)  # repeats share neighbours
    assert torch.autograd.gradcheck(
        lambda c: OPS.gather_neighbour_conditions(c, batch_index, token_index), (conditions,)
    )
    # The registered formula matches autograd through the reference.
    grad = torch.randn(5, 6, 3, device=device, dtype=torch.float64)
    (ours,) = torch.autograd.grad(OPS.gather_neighbour_conditions(conditions, batch_index, token_index), conditions,
                                  grad)
    (theirs,) = torch.autograd.grad(reference.gather_neighbour_conditions(conditions, batch_index, token_index),
                                    conditions, grad)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("device", DEVICES)
def test_gather_opcheck(device):
    conditions = torch.randn(2, 16, 8, device=device)
    batch_index, token_index = _indices(2, 16, 5, device)
    torch.library.opcheck(OPS.gather_neighbour_conditions.default, (conditions, batch_index, token_index))
    grad = torch.randn(5, 5, 8, device=device)
    torch.library.opcheck(
        OPS.gather_neighbour_conditions_backward.default, (grad, batch_index, token_index, 2, 16)
    )


def _gather_error_cases():
    c = torch.randn(2, 16, 4)
    b = torch.tensor([0, 1])
    t = torch.tensor([3, 15])
    return [
        ((c[0], b, t), "gather_neighbour_conditions: conditions must have 3 dimensions"),
        ((c.int(), b, t), "gather_neighbour_conditions: conditions must be float32"),
        ((torch.randn(2, 15, 4), b, t), r"conditions.size\(1\) must be a perfect square"),
        ((c, b.int(), t), "gather_neighbour_conditions: batch_index must be int64"),
        ((c, b, t.float()), "gather_neighbour_conditions: token_index must be int64"),
        ((c, b[None], t), "gather_neighbour_conditions: batch_index must have 1 dimension"),
        ((c, b, t[:1]), "batch_index and token_index must have the same length"),
        ((c, torch.tensor([0, 2]), t), r"batch_index\[1\] = 2 is out of range \[0, 2\)"),
        ((c, torch.tensor([-1, 0]), t), r"batch_index\[0\] = -1 is out of range"),
        ((c, b, torch.tensor([3, 16])), r"token_index\[1\] = 16 is out of range \[0, 16\)"),
    ]


@pytest.mark.parametrize("args,match", _gather_error_cases())
def test_gather_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        OPS.gather_neighbour_conditions(*args)


def _gather_backward_error_cases():
    g = torch.randn(5, 2, 4)
    b = torch.tensor([0, 1])
    t = torch.tensor([3, 15])
    return [
        ((g[0], b, t, 2, 16), "gather_neighbour_conditions_backward: grad must have 3 dimensions"),
        ((g[:4], b, t, 2, 16), r"grad must have shape \[5, M, C\]"),
        ((g.long(), b, t, 2, 16), "gather_neighbour_conditions_backward: grad must be float32"),
        ((g, b, t, 2, 15), "seq_len must be a perfect square"),
        ((g, b, t, 2, 2**63 - 1), r"seq_len must be in \[0, 2\^60\]"),
        ((g, b, t, -1, 16), "batch_size must be >= 0"),
        ((g[:, :1], b, t, 2, 16), r"grad.size\(1\) = 1 must equal the number of indices 2"),
        ((g, b, t, 1, 16), r"batch_index\[1\] = 1 is out of range \[0, 1\) \(batch_size\)"),
        ((g, b, t, 2, 4), r"token_index\[0\] = 3 is out of range|token_index\[1\] = 15 is out of range"),
        ((g, b.int(), t, 2, 16), "batch_index must be int64"),
    ]


@pytest.mark.parametrize("args,match", _gather_backward_error_cases())
def test_gather_backward_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        OPS.gather_neighbour_conditions_backward(*args)


@pytest.mark.parametrize("device", CUDA_ONLY)
def test_gather_errors_cuda_device_mismatch(device):
    conditions = torch.randn(2, 16, 4, device=device)
    b = torch.tensor([0, 1])
    t = torch.tensor([3, 15])
    with pytest.raises(RuntimeError, match="batch_index must be on the same device"):
        OPS.gather_neighbour_conditions(conditions, b, t.to(device))
    with pytest.raises(RuntimeError, match="token_index must be on the same device"):
        OPS.gather_neighbour_conditions(conditions, b.to(device), t)
    with pytest.raises(RuntimeError, match="batch_index must be on the same device"):
        OPS.gather_neighbour_conditions_backward(torch.randn(5, 2, 4, device=device), b, t.to(device), 2, 16)


def test_python_face_binds_the_compiled_ops():
    assert ops.EXTENSION_AVAILABLE
    assert ops.patchify is OPS.patchify.default
    assert ops.gather_neighbour_conditions_backward is OPS.gather_neighbour_conditions_backward.default
