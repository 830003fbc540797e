"""llama_block_step / vit_block_step (CPU: one decoding step of a whole block) against their
references, and the references against the model's own blocks."""

import pytest
import torch

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.models.layers import KVCache, LlamaBlock, ViTBlock, rope_2d_table
from op_samples import filled_caches, llama_args, llama_weights, vit_args, vit_weights

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("dim, heads, hidden", [(32, 2, 96), (48, 3, 40), (64, 4, 256)])
@pytest.mark.parametrize("kind", ["llama", "vit"])
def test_matches_reference(kind, rows, dim, heads, hidden):
    generator = torch.Generator().manual_seed(rows * 100 + dim)
    head_dim, max_len = dim // heads, 7
    x = torch.randn(rows, dim, generator=generator)
    k_cache, v_cache = filled_caches(rows, heads, max_len, head_dim, generator)
    lengths = torch.randint(0, max_len, (rows,), generator=generator, dtype=torch.int32)
    if kind == "llama":
        weights = llama_weights(dim, hidden, generator)
        rope = rope_2d_table(3, head_dim)[5]
        def step(x, k, v, fn):
            return fn(x, *weights.values(), rope, k, v, lengths, 1e-5, head_dim**-0.5)
        ours_fn, reference_fn = ops.llama_block_step, reference.llama_block_step
    else:
        weights = vit_weights(dim, hidden, generator)
        def step(x, k, v, fn):
            return fn(x, *weights.values(), k, v, lengths, 1e-6, head_dim**-0.5)
        ours_fn, reference_fn = ops.vit_block_step, reference.vit_block_step
    k_ours, v_ours = k_cache.clone(), v_cache.clone()
    ours = step(x, k_ours, v_ours, ours_fn)
    expected = step(x, k_cache, v_cache, reference_fn)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_ours, k_cache, rtol=1e-6, atol=1e-6)  # the appended rows, written in place
    torch.testing.assert_close(v_ours, v_cache, rtol=1e-6, atol=1e-6)


def test_llama_reference_matches_the_module_decoding_with_a_cache():
    torch.manual_seed(0)
    dim, heads, seq_len = 32, 2, 5
    block = LlamaBlock(dim, heads).eval()
    table = rope_2d_table(2, dim // heads)
    cache = KVCache(2, heads, seq_len, dim // heads, torch.float32, "cpu")
    k_cache, v_cache = torch.zeros_like(cache.k), torch.zeros_like(cache.v)
    for position in range(seq_len):
        x = torch.randn(2, dim)
        expected = block(x[:, None], table[position : position + 1], cache, position)[:, 0]
        lengths = torch.full((2,), position, dtype=torch.int32)
        attention, ffn = block.attention, block.feed_forward
        ours = ops.llama_block_step(x, block.attention_norm.weight, attention.wqkv.weight, attention.wo.weight,
                                    block.ffn_norm.weight, ffn.w1.weight, ffn.w2.weight, ffn.w3.weight,
                                    table[position], k_cache, v_cache, lengths, block.attention_norm.eps,
                                    (dim // heads) ** -0.5)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_vit_reference_matches_the_causal_module_on_a_whole_sequence():
    torch.manual_seed(0)
    dim, heads, seq_len = 32, 4, 4
    block = ViTBlock(dim, heads, causal=True).eval()
    for module in block.modules():  # non-trivial norms and biases
        for parameter in module.parameters(recurse=False):
            parameter.data.add_(0.1 * torch.randn_like(parameter))
    tokens = torch.randn(3, seq_len, dim)
    expected = block(tokens)
    k_cache, v_cache = torch.zeros(3, heads, seq_len, dim // heads), torch.zeros(3, heads, seq_len, dim // heads)
    attn, mlp = block.attn, block.mlp
    for position in range(seq_len):
        lengths = torch.full((3,), position, dtype=torch.int32)
        ours = ops.vit_block_step(tokens[:, position], block.norm1.weight, block.norm1.bias, attn.qkv.weight,
                                  attn.qkv.bias, attn.proj.weight, attn.proj.bias, block.norm2.weight,
                                  block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias,
                                  k_cache, v_cache, lengths, block.norm1.eps, attn.scale)
        torch.testing.assert_close(ours, expected[:, position], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=torch.randn(2, 32).double()), "x must be float32"),
        (dict(x=torch.randn(2, 1, 32)), "x must have 2 dimensions"),
        (dict(wqkv=torch.randn(96, 31)), r"wqkv must have shape \[96, 32\]"),
        (dict(w2=torch.randn(32, 65)), r"w2 must have shape \[32, 64\]"),
        (dict(w1=torch.tensor(1.0)), r"w1 must have shape \[hidden, dim\], got \[\]"),
        (dict(w3=torch.randn(64, 32).half()), "w3 must be float32"),
        (dict(attention_norm_weight=torch.ones(31)), r"attention_norm_weight must have shape \[32\]"),
        (dict(rope=torch.ones(16, 2)), r"rope must have shape \[head_dim / 2 = 8, 2\]"),
        (dict(k_cache=torch.zeros(2, 4, 4, 16)), "k_cache must have shape"),
        (dict(v_cache=torch.zeros(2, 2, 5, 16)), "v_cache must have the shape of k_cache"),
        (dict(cache_seqlens=torch.full((2,), 4, dtype=torch.int32)), r"llama_block_step: cache_seqlens\[0\]=4 .*overflows"),
        (dict(cache_seqlens=torch.ones(2)), "llama_block_step: cache_seqlens must be Int"),
        (dict(k_cache=torch.zeros(2, 2, 16, 4).transpose(2, 3)), "llama_block_step: k_cache must be contiguous"),
    ],
)
def test_llama_bad_input(change, message):
    args = llama_args() | change
    with pytest.raises(RuntimeError, match=message):
        ops.llama_block_step(*args.values())


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(qkv_bias=torch.zeros(95)), r"qkv_bias must have shape \[96\]"),
        (dict(fc1_weight=torch.randn(64, 33)), r"fc1_weight must have shape \[64, 32\]"),
        (dict(fc1_weight=torch.randn(64)), r"fc1_weight must have shape \[hidden, dim\], got \[64\]"),
        (dict(norm2_bias=torch.zeros(32, 1)), r"norm2_bias must have shape \[32\]"),
        (dict(cache_seqlens=torch.tensor([0, -1], dtype=torch.int32)), r"vit_block_step: cache_seqlens\[1\]=-1 .*overflows"),
        (dict(v_cache=torch.zeros(2, 2, 4, 16, dtype=torch.float64)), "vit_block_step: v_cache must be"),
    ],
)
def test_vit_bad_input(change, message):
    args = vit_args() | change
    with pytest.raises(RuntimeError, match=message):
        ops.vit_block_step(*args.values())


def test_the_sampler_takes_the_block_step_kernel_where_it_is_faster():
    from fractal_ext.sampler.decode import block_step_kernel_fits, block_step_path
    from fractal_ext.sampler.onednn import onednn_linear_available
    from fractal_ext.sampler.plan import choose_paths

    assert block_step_kernel_fits(4, 128) and not block_step_kernel_fits(8, 128)
    assert block_step_kernel_fits(16, 512) and not block_step_kernel_fits(17, 1024)
    fp32, bf16, fp16 = (choose_paths(torch.device("cpu"), precision, None) for precision in ("fp32", "bf16", "fp16"))
    assert fp32.block_step_kernels and not fp32.bf16_weights
    assert bf16.block_step_kernels and bf16.bf16_weights  # the CPU bf16 mode: kernels on bf16 weight copies
    assert not fp16.block_step_kernels and not fp16.bf16_weights  # autocast: composed steps
    assert [block_step_path(rows, 1024, fp32) for rows in (8, 16, 17)] == ["kernel", "kernel", "composed"]
    assert [block_step_path(rows, 128, fp32) for rows in (4, 5)] == ["kernel", "composed"]
    assert [block_step_path(rows, 128, fp16) for rows in (1, 16)] == ["composed", "composed"]
    # The CPU bf16 mode: beyond 8 rows (two passes of its kernels' GEMVs), oneDNN's bf16 GEMMs in
    # blocks 1024 wide, and in blocks 512 wide beyond the kernels' 16 rows.
    assert bf16.onednn_bf16_steps == onednn_linear_available()
    if bf16.onednn_bf16_steps:
        assert [block_step_path(rows, 1024, bf16) for rows in (8, 9, 64)] == ["kernel", "onednn_bf16", "onednn_bf16"]
        assert [block_step_path(rows, 512, bf16) for rows in (16, 17)] == ["kernel", "onednn_bf16"]
    assert [block_step_path(rows, 128, bf16) for rows in (4, 16)] == ["kernel", "composed"]
