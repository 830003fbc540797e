"""The CPU operators on bf16 weight matrices (the CPU bf16 sampling mode): small_batch_linear and
the block steps against references composed of torch ops on the same bf16 weights, and against
what torch itself achieves in bf16, relative to a float64 result of the same rounded inputs."""
import os
import subprocess
import sys
from pathlib import Path

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.sampler import onednn
from fractal_ext.sampler.decode import attention_on_caches
from fractal_ext.models.layers import rope_2d_table
from op_samples import filled_caches, llama_weights, vit_weights

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")

MATRICES = {"llama": ("wqkv", "wo", "w1", "w2", "w3"), "vit": ("qkv_weight", "proj_weight", "fc1_weight", "fc2_weight")}


def cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def bf16_linear_case(rows, in_features, out_features, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=generator)
    weight = (torch.randn(out_features, in_features, generator=generator) / in_features**0.5).bfloat16()
    bias = torch.randn(out_features, generator=generator)
    return x, weight, bias


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 15, 16, 17, 33])
@pytest.mark.parametrize("in_features, out_features", [(1, 1), (17, 5), (31, 33), (32, 16), (1000, 129)])
def test_small_batch_linear_with_bf16_weights(rows, in_features, out_features):
    x, weight, bias = bf16_linear_case(rows, in_features, out_features, rows * 1000 + in_features)
    ours = ops.small_batch_linear(x, weight, bias)
    assert ours.dtype == torch.float32 and ours.shape == (rows, out_features)
    # The exact result of what the kernel multiplies: x rounded to bf16 (as a bf16 linear rounds it).
    exact = F.linear(x.bfloat16().double(), weight.double(), bias.double())
    # fp32 sums of exact products: within a few fp32 roundings per term.
    magnitude = F.linear(x.bfloat16().double().abs(), weight.double().abs(), bias.double().abs())
    assert ((ours.double() - exact).abs() <= 1e-6 * in_features**0.5 * magnitude + 1e-7).all()
    torch.testing.assert_close(ours, reference.small_batch_linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    # At least as accurate as torch's own bf16 linear (which also rounds its output to bf16).
    theirs = F.linear(x.bfloat16(), weight, bias.bfloat16()).double()
    assert (ours.double() - exact).abs().max() <= (theirs - exact).abs().max() + 1e-6


def test_the_fallback_without_bf16_dot_products_computes_the_same_products():
    """$FRACTAL_EXT_DISABLE_BF16_DOT makes bf16 weights take the fp32-FMA kernels (read once per
    process): same exact products, other order of the fp32 sums."""
    script = (
        "import sys, torch; from fractal_ext import ops; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/../helpers'];"
        "from test_bf16_weights import bf16_linear_case;"
        "torch.save([ops.small_batch_linear(*bf16_linear_case(r, 1000, 257, r)) for r in (1, 5, 8, 12)], sys.argv[2])"
    )
    results = {}
    for disabled in ("1", "0"):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bf16_fallback_{os.getpid()}_{disabled}.pt"
        env = {**os.environ, "FRACTAL_EXT_DISABLE_BF16_DOT": disabled}
        subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(path)], env=env, check=True)
        results[disabled] = torch.load(path)
        path.unlink()
    for rows, fallback, dot in zip((1, 5, 8, 12), results["1"], results["0"]):
        x, weight, bias = bf16_linear_case(rows, 1000, 257, rows)
        torch.testing.assert_close(fallback, reference.small_batch_linear(x, weight, bias), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fallback, dot, rtol=1e-5, atol=1e-5)
        if cpu_has_avx512_bf16():  # the variable did switch kernels: the sums differ in their last bits
            assert not torch.equal(fallback, dot)


@pytest.mark.parametrize("path, rows", [("kernel", 1), ("kernel", 4), ("kernel", 9), ("onednn_bf16", 9),
                                       ("onednn_bf16", 16), ("onednn_bf16", 33)])
@pytest.mark.parametrize("kind", ["llama", "vit"])
def test_block_steps_with_bf16_weight_matrices(kind, path, rows):
    """The block-step operators on bf16 weights, and (path "onednn_bf16", the CPU bf16 mode's
    steps of more than 8 rows) the step composed on oneDNN's bf16 GEMMs, which also round each
    GEMM's output to bf16."""
    if path == "onednn_bf16" and not onednn.onednn_linear_available():
        pytest.skip("torch has no oneDNN linear here")
    dim, heads, hidden, max_len = 64, 4, 176, 7
    generator = torch.Generator().manual_seed(rows)
    head_dim = dim // heads
    x = torch.randn(rows, dim, generator=generator)
    k_cache, v_cache = filled_caches(rows, heads, max_len, head_dim, generator)
    lengths = torch.randint(0, max_len, (rows,), generator=generator, dtype=torch.int32)
    weights = (llama_weights if kind == "llama" else vit_weights)(dim, hidden, generator)
    bf16 = {name: w.bfloat16() if name in MATRICES[kind] else w for name, w in weights.items()}
    as_fp64 = {name: w.double() for name, w in bf16.items()}
    if kind == "llama":
        rope = rope_2d_table(3, head_dim)[5]

        def step(fn, x, weights, k, v):
            return fn(x, *weights.values(), rope.to(x.dtype), k, v, lengths, 1e-5, head_dim**-0.5)
        ours_fn, reference_fn = ops.llama_block_step, reference.llama_block_step
    else:
        def step(fn, x, weights, k, v):
            return fn(x, *weights.values(), k, v, lengths, 1e-6, head_dim**-0.5)
        ours_fn, reference_fn = ops.vit_block_step, reference.vit_block_step
    if path == "onednn_bf16":
        ours_fn = partial(reference_fn, attention=attention_on_caches, linear=onednn.bf16_linear)
        ours_weights = {name: onednn.reorder(w, 16) if name in MATRICES[kind] else w for name, w in bf16.items()}
    else:
        ours_weights = bf16
    k_ours, v_ours, k_expected, v_expected = (c.clone() for c in (k_cache, v_cache, k_cache, v_cache))
    ours = step(ours_fn, x, ours_weights, k_ours, v_ours)
    expected = step(reference_fn, x, bf16, k_expected, v_expected)
    # The same block in float64 on the bf16 weights, activations unrounded: the truth that the
    # kernel and the reference each approach within the rounding of their GEMV inputs to bf16. Their
    # fp32 sums differ in order, so a few inputs round to neighbouring bf16 values: they differ by
    # about their own error, not by fp32 rounding.
    truth = step(reference_fn, x.double(), as_fp64, k_cache.double(), v_cache.double())
    reference_error = (expected.double() - truth).abs().max()
    assert (ours.double() - expected.double()).abs().max() <= 2 * reference_error
    torch.testing.assert_close(k_ours, k_expected, rtol=1e-2, atol=1e-2)  # the appended rows, written in place
    torch.testing.assert_close(v_ours, v_expected, rtol=1e-2, atol=1e-2)
    # And within what torch's bf16 autocast of the block reaches against it. The oneDNN step, whose
    # GEMM outputs are bf16 like autocast's, lands at 0.7-1.1x autocast's error: bounded as the MAR
    # levels' bf16 passes are (tests/sampler/test_bidirectional.py).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = step(reference_fn, x, bf16 | {name: bf16[name].float() for name in MATRICES[kind]},
                        k_cache.bfloat16(), v_cache.bfloat16())
    margin = 1.5 if path == "onednn_bf16" else 1.0
    assert (ours.double() - truth).abs().max() <= margin * (autocast.double() - truth).abs().max()


def test_bad_weight_dtypes_name_the_operator_and_argument():
    x, weight, _ = bf16_linear_case(2, 8, 4, 0)
    with pytest.raises(RuntimeError, match="small_batch_linear: weight must be float32 or bfloat16, got Half"):
        ops.small_batch_linear(x, weight.half(), None)
    with pytest.raises(RuntimeError, match="small_batch_linear: x must be Float"):
        ops.small_batch_linear(x.bfloat16(), weight, None)
    with pytest.raises(RuntimeError, match="small_batch_linear: bias must be Float"):
        ops.small_batch_linear(x, weight, torch.zeros(4, dtype=torch.bfloat16))
