"""kv_cache_attention: the compiled op against its plain-PyTorch reference and against full causal
attention, the exact in-place cache update, opcheck, and the input checks.

CUDA cases carry the `cuda` marker and are skipped on machines without a GPU.
"""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from fractal_ext import ops
from fractal_ext.ops import extension as _extension, reference

pytestmark = pytest.mark.skipif(
    not ops.EXTENSION_AVAILABLE, reason=f"fractal_ext._C is not built: {_extension.LOAD_ERROR}"
)

OP = torch.ops.fractal_ext.kv_cache_attention.default if ops.EXTENSION_AVAILABLE else None
CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
)
DEVICES = ["cpu", CUDA]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HEAD_DIMS = [16, 32, 64, 80, 128]

# (batch, new_len, heads, max_len, cache_seqlens, scale factor on 1/sqrt(head_dim))
CASES = {
    "b1_first_position": (1, 1, 1, 1, [0], 1.0),
    "b1_odd_prefix": (1, 1, 3, 17, [7], 1.0),
    "rows_differ_t2": (3, 2, 2, 9, [0, 4, 7], 1.0),
    "t3_long_cache_peaked": (2, 3, 4, 259, [254, 131], 4.0),
}


def make_inputs(batch, new_len, heads, head_dim, max_len, lengths, dtype, device, fused=False, seed=0):
    """q, k, v [B, T, H, D] (views of one fused qkv tensor when `fused`), random caches, lengths."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(dtype=dtype, device=device)

    if fused:
        qkv = randn(batch, new_len, 3 * heads * head_dim).view(batch, new_len, 3, heads, head_dim)
        q, k, v = qkv.unbind(2)
    else:
        q, k, v = (randn(batch, new_len, heads, head_dim) for _ in range(3))
    k_cache = randn(batch, heads, max_len, head_dim)
    v_cache = randn(batch, heads, max_len, head_dim)
    cache_seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    return q, k, v, k_cache, v_cache, cache_seqlens


def fp32_oracle(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """The reference on the same (rounded) inputs, computed in float32."""
    return reference.kv_cache_attention(
        q.float(), k.float(), v.float(), k_cache.float(), v_cache.float(), cache_seqlens, scale
    )


def torch_same_dtype(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """What plain PyTorch achieves in q's dtype: append, then masked SDPA in that dtype."""
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    new_len, max_len = q.shape[1], k_cache.shape[2]
    for b, start in enumerate(cache_seqlens.tolist()):
        k_cache[b, :, start:start + new_len] = k[b].transpose(0, 1)
        v_cache[b, :, start:start + new_len] = v[b].transpose(0, 1)
    query_pos = cache_seqlens.long()[:, None] + torch.arange(new_len, device=q.device)
    visible = torch.arange(max_len, device=q.device)[None, None, :] <= query_pos[:, :, None]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k_cache, v_cache, attn_mask=visible[:, None], scale=scale
    )
    return out.transpose(1, 2)


def bits(x):
    """The raw bit patterns of x, to compare tensors bitwise (NaN payloads, signed zeros)."""
    return x.view(torch.int32 if x.element_size() == 4 else torch.int16)


def max_error(x, y):
    return (x.float() - y.float()).abs().max().item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_matches_reference(case, head_dim, dtype, device):
    batch, new_len, heads, max_len, lengths, factor = CASES[case]
    inputs = make_inputs(batch, new_len, heads, head_dim, max_len, lengths, dtype, device)
    scale = factor / math.sqrt(head_dim)
    expected = fp32_oracle(*inputs, scale)
    baseline = torch_same_dtype(*inputs, scale) if dtype != torch.float32 else None
    out = OP(*inputs, scale)

    assert out.shape == inputs[0].shape and out.dtype == dtype and out.is_contiguous()
    assert torch.isfinite(out).all()
    if dtype == torch.float32:
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)
    else:
        eps = 0.125 * torch.finfo(dtype).eps * expected.abs().max().item()  # an eighth of an ulp
        ours, plain = max_error(out, expected), max_error(baseline, expected)
        assert ours <= 2 * plain + eps, f"error {ours:.3g} vs plain torch {plain:.3g} in {dtype}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fused", [False, True], ids=["separate_qkv", "fused_qkv_views"])
def test_cache_append_is_exact(fused, dtype, device):
    lengths = [3, 0, 11]
    q, k, v, k_cache, v_cache, cache_seqlens = make_inputs(3, 2, 4, 32, 13, lengths, dtype, device, fused)
    k_before, v_before, lengths_before = k_cache.clone(), v_cache.clone(), cache_seqlens.clone()
    OP(q, k, v, k_cache, v_cache, cache_seqlens, 0.2)

    expected_k, expected_v = k_before.clone(), v_before.clone()
    for b, start in enumerate(lengths):
        expected_k[b, :, start:start + 2] = k[b].transpose(0, 1)
        expected_v[b, :, start:start + 2] = v[b].transpose(0, 1)
    # Bitwise: the written slice equals k/v, everything else is untouched.
    assert torch.equal(bits(k_cache), bits(expected_k))
    assert torch.equal(bits(v_cache), bits(expected_v))
    assert not torch.equal(k_cache, k_before)
    assert torch.equal(cache_seqlens, lengths_before), "the op must not advance cache_seqlens"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_qkv_views_match_reference(dtype, device):
    inputs = make_inputs(2, 3, 8, 64, 20, [5, 17], dtype, device, fused=True)
    assert not inputs[0].is_contiguous()
    expected = fp32_oracle(*[x.clone() for x in inputs], 0.125)
    out = OP(*inputs, 0.125)
    tolerance = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(out.float(), expected.float(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unaligned_inputs_match_reference(dtype, device):
    """q, k, v starting off a 16-byte boundary (the CUDA kernel then reads them element-wise)."""
    batch, new_len, heads, head_dim = 2, 2, 3, 32
    numel = batch * new_len * heads * head_dim
    q, k, v = (torch.randn(numel + 1, dtype=dtype, device=device)[1:].view(batch, new_len, heads, head_dim)
               for _ in range(3))
    _, _, _, k_cache, v_cache, cache_seqlens = make_inputs(batch, new_len, heads, head_dim, 9, [6, 1], dtype, device)
    expected = fp32_oracle(q, k, v, k_cache.clone(), v_cache.clone(), cache_seqlens, 0.2)
    out = OP(q, k, v, k_cache, v_cache, cache_seqlens, 0.2)
    tolerance = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(out.float(), expected.float(), atol=tolerance, rtol=tolerance)
    assert torch.equal(bits(k_cache[0, :, 6:8]), bits(k[0].transpose(0, 1)))


@pytest.mark.parametrize("device", DEVICES)
def test_stale_cache_slots_do_not_leak(device):
    """Slots past the visible prefix may hold anything (torch.empty): NaN and inf there are ignored."""
    q, k, v, k_cache, v_cache, cache_seqlens = make_inputs(2, 1, 2, 16, 8, [2, 5], torch.float32, device)
    for b, start in enumerate([2, 5]):
        k_cache[b, :, start + 1:] = float("nan")
        v_cache[b, :, start + 1:] = float("inf")
    expected = reference.kv_cache_attention(q, k, v, k_cache.clone(), v_cache.clone(), cache_seqlens, 0.25)
    out = OP(q, k, v, k_cache, v_cache, cache_seqlens, 0.25)
    assert torch.isfinite(expected).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head_dim", [16, 64, 80])
@pytest.mark.parametrize("chunks", [[1] * 13, [5, 1, 1, 3, 1, 2]], ids=["one_by_one", "prefill_then_chunks"])
def test_incremental_decoding_equals_full_causal_attention(chunks, head_dim, device):
    batch, heads, length = 2, 3, sum(chunks)
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(batch, length, heads, head_dim, generator=generator).to(device) for _ in range(3))
    k_cache = torch.zeros(batch, heads, length + 2, head_dim, device=device)
    v_cache = torch.zeros_like(k_cache)
    cache_seqlens = torch.zeros(batch, dtype=torch.int32, device=device)
    scale = head_dim**-0.5
    outputs, position = [], 0
    for size in chunks:
        piece = slice(position, position + size)
        outputs.append(OP(q[:, piece], k[:, piece], v[:, piece], k_cache, v_cache, cache_seqlens, scale))
        cache_seqlens += size  # the caller advances the lengths
        position += size
    full = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale
    ).transpose(1, 2)
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(k_cache[:, :, :length], k.transpose(1, 2), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_new_positions(device):
    q, k, v, k_cache, v_cache, cache_seqlens = make_inputs(2, 0, 2, 16, 4, [1, 4], torch.float32, device)
    k_before = k_cache.clone()
    out = OP(q, k, v, k_cache, v_cache, cache_seqlens, 0.25)
    assert out.shape == (2, 0, 2, 16)
    assert torch.equal(k_cache, k_before)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fused", [False, True], ids=["separate_qkv", "fused_qkv_views"])
def test_opcheck(fused, device):
    inputs = make_inputs(2, 2, 3, 32, 7, [0, 5], torch.float32, device, fused)
    torch.library.opcheck(OP, (*inputs, 0.17))


def good_inputs(device="cpu"):
    return list(make_inputs(2, 1, 2, 16, 5, [1, 4], torch.float32, device))


def with_input(index, value):
    def change(args):
        args[index] = value(args[index])
        return args

    return change


BAD_INPUTS = {
    "q_rank": (with_input(0, lambda q: q[:, 0]), "q must have 4 dimensions"),
    "k_rank": (with_input(1, lambda k: k.unsqueeze(0)), "k must have 4 dimensions"),
    "k_cache_rank": (with_input(3, lambda c: c[0]), "k_cache must have 4 dimensions"),
    "cache_seqlens_rank": (with_input(5, lambda s: s[:, None]), "cache_seqlens must have 1 dimensions"),
    "q_integer": (with_input(0, lambda q: q.int()), "q must be float32, float16 or bfloat16"),
    "k_dtype": (with_input(1, lambda k: k.half()), "k must be Float, got Half"),
    "k_cache_dtype": (with_input(3, lambda c: c.half()), "k_cache must be Float"),
    "v_cache_dtype": (with_input(4, lambda c: c.bfloat16()), "v_cache must be Float"),
    "cache_seqlens_int64": (with_input(5, lambda s: s.long()), "cache_seqlens must be Int"),
    "cache_seqlens_length": (with_input(5, lambda s: torch.cat([s, s])), r"cache_seqlens must have shape \[2\]"),
    "v_shape": (with_input(2, lambda v: v[:, :, :1]), "v must have the shape of q"),
    "k_cache_head_dim": (with_input(3, lambda c: c[..., :8].contiguous()), "k_cache must have shape"),
    "k_cache_heads": (with_input(3, lambda c: c[:, :1].contiguous()), "k_cache must have shape"),
    "v_cache_length": (with_input(4, lambda c: c[:, :, :4].contiguous()), "v_cache must have the shape of k_cache"),
    "k_cache_non_contiguous": (with_input(3, lambda c: c.transpose(0, 1).contiguous().transpose(0, 1)),
                               "k_cache must be contiguous"),
    "cache_seqlens_overflow": (with_input(5, lambda s: torch.tensor([1, 5], dtype=torch.int32)), "overflows"),
    "cache_seqlens_negative": (with_input(5, lambda s: torch.tensor([-1, 0], dtype=torch.int32)), "overflows"),
    "cache_seqlens_meta_device": (with_input(5, lambda s: s.to("meta")), "must be on the same device"),
    "k_cache_meta_device": (with_input(3, lambda c: c.to("meta")), "must be on the same device"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_inputs_raise_clear_errors(name):
    change, message = BAD_INPUTS[name]
    args = change(good_inputs())
    with pytest.raises(RuntimeError, match=message):
        OP(*args, 0.25)


def test_head_dim_stride_is_rejected():
    q, k, v, k_cache, v_cache, cache_seqlens = good_inputs()
    strided_q = torch.randn(2, 1, 2, 32)[..., ::2]
    assert strided_q.shape == q.shape and strided_q.stride(-1) == 2
    with pytest.raises(RuntimeError, match="q must have unit stride over the head dimension"):
        OP(strided_q, k, v, k_cache, v_cache, cache_seqlens, 0.25)
    with pytest.raises(RuntimeError, match="v must have unit stride over the head dimension"):
        OP(q, k, strided_q, k_cache, v_cache, cache_seqlens, 0.25)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_bad_inputs_raise_clear_errors():
    args = good_inputs("cuda")
    cpu_lengths = args[:5] + [args[5].cpu()]
    with pytest.raises(RuntimeError, match="q and cache_seqlens must be on the same device"):
        OP(*cpu_lengths, 0.25)
    cpu_cache = args[:3] + [args[3].cpu()] + args[4:]
    with pytest.raises(RuntimeError, match="q and k_cache must be on the same device"):
        OP(*cpu_cache, 0.25)
    odd = list(make_inputs(2, 1, 2, 12, 5, [1, 4], torch.float32, "cuda"))
    with pytest.raises(RuntimeError, match="multiple of 8"):
        OP(*odd, 0.25)
    unaligned_cache = torch.zeros(args[3].numel() + 1, device="cuda")[1:].view(args[3].shape)
    with pytest.raises(RuntimeError, match="k_cache must start on a 16-byte boundary"):
        OP(*args[:3], unaligned_cache, *args[4:], 0.25)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_overflow_trips_device_assertion():
    """The kernel checks cache_seqlens on the device (no sync); a failed assertion poisons the CUDA
    context, so this runs in a child process."""
    script = textwrap.dedent(
        """
        import torch
        import fractal_ext.ops
        q = torch.randn(2, 1, 2, 16, device="cuda")
        cache = torch.zeros(2, 2, 5, 16, device="cuda")
        lengths = torch.tensor([1, 5], dtype=torch.int32, device="cuda")
        torch.ops.fractal_ext.kv_cache_attention(q, q, q, cache, cache.clone(), lengths, 0.25)
        torch.cuda.synchronize()
        print("NO ERROR")
        """
    )
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(ops.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    output = result.stdout + result.stderr
    assert "NO ERROR" not in output
    assert "device-side assert" in output or "kv_cache_attention" in output
