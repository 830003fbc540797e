"""The CUDA kernels of csrc/ (csrc/*/kernel.cuh) on the CPU, through tests/cuda_emulator, against the
reference ops: indexing, vector widths, warp collectives, multi-warp merges, grid-stride loops and
device assertions are checked without a GPU. The emulated entry points make the same input checks
and host-side launch decisions as the CUDA entry points csrc/*/cuda.cu (shared binding.h and
cuda_plan.h headers); only the launch itself differs. Last, the fast sampler takes its GPU path
on the emulated kernels, end to end.

Each tensor a kernel touches sits against an inaccessible page (a stand-in for compute-sanitizer's
memcheck: an access just out of bounds stops the test process with SIGSEGV, a stray write into the
few bytes before the page is reported). What the emulator cannot show (the memory model, real
timing, the hardware's approximate __expf) stays with the CUDA tests of the other files, run on a
GPU by benchmarks/gpu_check.sh.
"""
import contextlib
import sys

import pytest
import torch

import emulated_cuda
from repo import TINY_MODELS
from fractal_ext.ops import reference
from fractal_ext.pixels import PIXEL_MEAN, PIXEL_STD, to_uint8
from fractal_ext.models import FractalGen
from fractal_ext.sampler.plan import CUDA_HEAD_DIM_MULTIPLE
from fractal_ext.settings import SamplingControls
from capture_rehearsal import rehearsed_paths
from reference_models import reference_tensors, sample_tiny

H200_SMS = 132
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(scope="module")
def emulator():
    module, why = emulated_cuda.load()
    if module is None:
        pytest.skip(why)
    module.take_device_assertions()
    return module


@pytest.fixture(params=[("in_order", "tail"), ("reverse", "head"), ("shuffled", "tail")],
                ids=lambda p: f"{p[0]}-{p[1]}_fenced")
def emu(emulator, request):
    """The emulated kernels, with the threads of a block run in each of three orders (a race
    shows only when the reading thread runs before the writing one), every tensor against an
    inaccessible page at its end or its start (an access just past it faults)."""
    order, fence = request.param
    emulator.set_schedule(order, 2026)
    emulator.set_fence_side(fence)
    return emulator


@pytest.fixture(autouse=True)
def no_stray_assertions(request):
    yield
    if "emulator" in request.fixturenames:
        module, _ = emulated_cuda.load()
        assert module.take_device_assertions() == [], "a device assertion nobody expected"


# ---- the emulator itself --------------------------------------------------------------------


def test_warp_collectives_compute_what_the_hardware_does(emu):
    out = emu.self_test("collectives")
    lane = torch.arange(64) % 32
    assert torch.equal(out[:, 0], torch.full((64,), 496.0))  # xor-shuffle sum of 0..31
    assert torch.equal(out[:, 1], (lane * (lane + 1) / 2).float())  # shfl_up inclusive scan
    assert torch.equal(out[:, 2], torch.ones(64))  # ballot of odd lanes
    assert torch.equal(out[:, 3], (lane ^ 4).float())  # xor at width 8
    assert torch.equal(out[:, 4], torch.full((64,), 5.0))  # 64-bit broadcast from lane 5
    assert torch.equal(out[:, 5], torch.ones(64))  # any


def test_a_missing_barrier_shows_as_poisoned_shared_memory(emu):
    with_barrier = emu.self_test("exchange_with_barrier").flatten()
    assert torch.equal(with_barrier, ((torch.arange(64) + 1) % 64).float())
    without = emu.self_test("exchange_without_barrier").flatten()
    # Whatever the order, the first thread to run reads a slot not yet written.
    assert without.isnan().any()


@pytest.mark.parametrize("kernel, message", [
    ("shuffle_after_exit", r"names lane \d+, which has exited"),
    ("barrier_in_divergent_code", "exited while other threads of its block wait at __syncthreads"),
    ("barrier_against_shuffle", "deadlock"),
    ("too_much_shared_memory", "over the 48 KiB default limit"),
])
def test_execution_model_errors_are_caught(emu, kernel, message):
    with pytest.raises(RuntimeError, match=message):
        emu.self_test(kernel)


def test_device_assertions_are_recorded(emu):
    emu.self_test("failing_assertion")
    assert emu.take_device_assertions() == [
        f"threadIdx.x != 3 failed in thread (3,0,0) of block ({b},0,0)" for b in (0, 1)]


# ---- kv_cache_attention -----------------------------------------------------------------------


def kv_inputs(batch, new_len, heads, head_dim, max_len, dtype, lengths):
    q, k, v = (torch.randn(batch, new_len, heads, head_dim).to(dtype) for _ in range(3))
    k_cache, v_cache = (torch.randn(batch, heads, max_len, head_dim).to(dtype) for _ in range(2))
    return q, k, v, k_cache, v_cache, torch.tensor(lengths, dtype=torch.int32)


def assert_kv_matches_reference(emu, q, k, v, k_cache, v_cache, lengths, sm_count):
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    expected = reference.kv_cache_attention(q, k, v, ref_k, ref_v, lengths, 0.3)
    out, plan = emu.kv_cache_attention(q, k, v, k_cache, v_cache, lengths, 0.3, sm_count)
    torch.testing.assert_close(out.float(), expected.float(), atol=TOLERANCE[q.dtype], rtol=TOLERANCE[q.dtype])
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)
    return plan


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [8, 16, 32, 64, 80, 128, 256])
@pytest.mark.parametrize("split", [False, True], ids=["one_warp_per_pair", "warps_split_the_keys"])
def test_kv_cache_attention(emu, dtype, head_dim, split):
    torch.manual_seed(head_dim)
    # Few pairs on a large GPU split each pair over warps; many pairs on one SM do not. 3 and 9
    # pairs leave warps of the last block without a pair.
    batch, heads, sm_count = (1, 3, H200_SMS) if split else (3, 3, 1)
    max_len = 150  # long enough for two warps even where a warp scores 64 keys a step
    inputs = kv_inputs(batch, 2, heads, head_dim, max_len, dtype, [148, 0, 61][:batch])
    plan = assert_kv_matches_reference(emu, *inputs, sm_count)
    assert (plan["warps_per_pair"] > 1) == split
    assert plan["inputs_vectorized"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kv_cache_attention_strided_and_misaligned_inputs(emu, dtype):
    torch.manual_seed(1)
    batch, new_len, heads, head_dim, max_len = 2, 1, 4, 32, 20
    _, _, _, k_cache, v_cache, lengths = kv_inputs(batch, new_len, heads, head_dim, max_len, dtype, [3, 19])
    fused = torch.randn(batch, new_len, 3, heads, head_dim).to(dtype)  # views of one qkv projection
    q, k, v = fused.unbind(2)
    assert emu.kv_cache_attention(q, k, v, k_cache.clone(), v_cache.clone(), lengths, 0.3, H200_SMS)[1][
        "inputs_vectorized"]
    assert_kv_matches_reference(emu, q, k, v, k_cache, v_cache, lengths, H200_SMS)
    flat = torch.randn(3 * batch * new_len * heads * head_dim + 1).to(dtype)[1:]  # one element off 16 bytes
    q, k, v = flat.view(3, batch, new_len, heads, head_dim).unbind(0)
    plan = assert_kv_matches_reference(emu, q, k, v, k_cache, v_cache, lengths, H200_SMS)
    assert not plan["inputs_vectorized"]


def test_kv_cache_overflow_trips_the_device_assertion_and_touches_nothing(emu):
    torch.manual_seed(2)
    q, k, v, k_cache, v_cache, _ = kv_inputs(3, 2, 2, 16, 10, torch.float32, [0, 0, 0])
    lengths = torch.tensor([4, 9, -1], dtype=torch.int32)  # 9 + 2 > 10 and -1: both out of range
    before_k, before_v = k_cache.clone(), v_cache.clone()
    out, _ = emu.kv_cache_attention(q, k, v, k_cache, v_cache, lengths, 0.3, H200_SMS)
    assertions = emu.take_device_assertions()
    assert assertions and all("in_range" in a for a in assertions)
    assert torch.equal(k_cache[1:], before_k[1:]) and torch.equal(v_cache[1:], before_v[1:])
    assert out[1:].isnan().all()
    ref_k, ref_v = before_k[:1].clone(), before_v[:1].clone()
    expected = reference.kv_cache_attention(q[:1], k[:1], v[:1], ref_k, ref_v, lengths[:1], 0.3)
    torch.testing.assert_close(out[:1], expected)
    assert torch.equal(k_cache[:1], ref_k)


def test_kv_cache_attention_kernel_limits_are_checked(emu):
    q, k, v, k_cache, v_cache, lengths = kv_inputs(1, 1, 1, 12, 4, torch.float32, [0])
    with pytest.raises(RuntimeError, match="multiple of 8"):
        emu.kv_cache_attention(q, k, v, k_cache, v_cache, lengths, 0.3, H200_SMS)


# ---- cfg_filter_sample ------------------------------------------------------------------------


def guided_cdf(logits, cfg, temperature, threshold):
    """Float64 cumulative distribution of each row (guided logits in float32, as the kernel)."""
    guided = reference.guided_logits(logits.float(), cfg, temperature, threshold).double()
    return guided.softmax(-1).cumsum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1, 37, 256, 600])
@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("greedy", [True, False])
def test_cfg_filter_sample(emu, dtype, vocab, guided, greedy):
    torch.manual_seed(vocab)
    rows = 9  # three blocks of four warps, the last one partly idle
    logits = (torch.randn(2 * rows if guided else rows, vocab) * 3).to(dtype)
    logits[0, : vocab // 2] = float("-inf")  # tokens the distribution forbids
    cfg = torch.linspace(1.0, 7.0, rows) if guided else None
    seed, offset = 1234 + vocab, 8 * vocab
    tokens, values, plan = emu.cfg_filter_sample(logits, cfg, 1.05, 1e-4, PIXEL_MEAN[1], PIXEL_STD[1], greedy, seed, offset)
    assert plan["one_chunk"] == (vocab <= 256) and plan["vector_loads"] == (vocab % 4 == 0)
    assert torch.equal(values, reference.token_to_pixel_value(tokens, PIXEL_MEAN[1], PIXEL_STD[1]))
    cdf = guided_cdf(logits, cfg, 1.05, 1e-4)
    probs = torch.diff(cdf, dim=-1, prepend=torch.zeros(rows, 1, dtype=torch.float64))
    assert (probs.gather(1, tokens[:, None]) > 0).all(), "drew a token of probability 0"
    if greedy:
        expected, _ = reference.cfg_filter_sample(logits, cfg, 1.05, 1e-4, PIXEL_MEAN[1], PIXEL_STD[1], True)
        assert torch.equal(tokens, expected)
        return
    # Inverse CDF: the row's uniform lies in its token's interval of the float64 distribution.
    uniforms = emu.row_uniforms(seed, offset, rows)
    below = torch.where(tokens > 0, cdf.gather(1, (tokens - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
    above = cdf.gather(1, tokens[:, None]).squeeze(1)
    slack = 1e-5
    assert ((below - slack <= uniforms) & (uniforms <= above + slack)).all()


def test_cfg_filter_sample_reproduces_and_moves_with_the_offset(emu):
    torch.manual_seed(3)
    logits = torch.randn(64, 256)
    first = emu.cfg_filter_sample(logits, None, 1.0, 1e-4, 0.485, 0.229, False, 7, 0)[0]
    assert torch.equal(first, emu.cfg_filter_sample(logits, None, 1.0, 1e-4, 0.485, 0.229, False, 7, 0)[0])
    assert not torch.equal(first, emu.cfg_filter_sample(logits, None, 1.0, 1e-4, 0.485, 0.229, False, 7, 4)[0])


def test_cfg_filter_sample_rows_without_a_distribution(emu):
    logits = torch.randn(8, 300)  # two chunks: the NaN and -inf rows take the streaming path too
    logits[0, 17] = float("nan")
    logits[1] = float("-inf")
    logits[2, 5] = float("inf")
    logits[4 + 3, 260] = float("nan")  # an unconditional row
    for greedy in (True, False):
        tokens, values, _ = emu.cfg_filter_sample(logits, torch.full((4,), 3.0), 1.0, 1e-4, PIXEL_MEAN[2], PIXEL_STD[2], greedy, 5, 0)
        assert tokens[:4].tolist() == [0, 0, 0, 0] and values[:4].isnan().all()


@pytest.mark.parametrize("width, columns, vector_loads", [
    (259, slice(1, 257), False),  # rows 4 bytes off 16-byte alignment: element-wise loads
    (40, slice(0, 37), True),  # aligned rows whose last group of 4 is cut short by the vocabulary
])
def test_cfg_filter_sample_strided_rows(emu, width, columns, vector_loads):
    torch.manual_seed(4)
    logits = torch.randn(6, width)[:, columns]
    tokens, _, plan = emu.cfg_filter_sample(logits, torch.full((3,), 2.0), 1.0, 1e-4, 0.485, 0.229, True, 0, 0)
    assert plan["vector_loads"] == vector_loads
    assert torch.equal(tokens, reference.cfg_filter_sample(logits, torch.full((3,), 2.0), 1.0, 1e-4, 0.485, 0.229, True)[0])


# ---- patchify / unpatchify ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("patch, side", [(1, 5), (2, 6), (4, 8), (16, 32)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_patchify_and_unpatchify(emu, dtype, patch, side, layout):
    images = torch.randn(2, 3, side, side).to(dtype)
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        images = images.transpose(2, 3)
    sm_count = 1  # at most 8 blocks: the larger cases take the grid-stride loop
    patches, plan = emu.patchify(images, patch, sm_count)
    assert torch.equal(patches, reference.patchify(images, patch))
    vectorised = layout == "contiguous" and patch % 2 == 0
    assert (plan["vec"] > 1) == vectorised
    assert torch.equal(emu.unpatchify(patches, patch, sm_count)[0], reference.unpatchify(patches, patch))
    strided = torch.randn(2, patches.shape[1], patches.shape[2] + 3).to(dtype)[..., 3:]
    assert torch.equal(emu.unpatchify(strided, patch, H200_SMS)[0], reference.unpatchify(strided, patch))


# ---- four-neighbour gather ----------------------------------------------------------------------

# Corners, edges and inner tokens of a 4x4 grid, a token chosen twice, both batch rows.
BATCH_INDEX = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
TOKEN_INDEX = torch.tensor([0, 3, 5, 12, 15, 9, 9, 6])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels, strided", [(64, False), (8, False), (7, False), (64, True)])
def test_gather_neighbour_conditions(emu, dtype, channels, strided):
    torch.manual_seed(channels)
    conditions = torch.randn(2, 16, channels).to(dtype)
    if strided:
        conditions = torch.randn(2, channels, 16).to(dtype).transpose(1, 2)
    out, plan = emu.gather_neighbour_conditions(conditions, BATCH_INDEX, TOKEN_INDEX, H200_SMS)
    assert torch.equal(out, reference.gather_neighbour_conditions(conditions, BATCH_INDEX, TOKEN_INDEX))
    aligned_rows = not strided and channels * dtype.itemsize % 16 == 0
    assert (plan["unit_bytes"] == 16) == aligned_rows

    grad = torch.randn(5, len(BATCH_INDEX), channels).to(dtype)
    if strided:
        grad = torch.randn(channels, 5, len(BATCH_INDEX)).to(dtype).permute(1, 2, 0)
    sums, plan = emu.gather_neighbour_conditions_backward(grad, BATCH_INDEX, TOKEN_INDEX, 2, 16, 1)
    assert plan["vectorised"] == aligned_rows
    exact = reference.gather_neighbour_conditions_backward(grad.double(), BATCH_INDEX, TOKEN_INDEX, 2, 16)
    # Summed in float32 (float64 for float64) and rounded once: within an ulp of the exact sum.
    ulp = {torch.float32: 2 ** -23, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7, torch.float64: 2 ** -52}[dtype]
    torch.testing.assert_close(sums.double(), exact, atol=1e-6, rtol=2 * ulp)
    assert sums.dtype == dtype


def test_gather_with_an_out_of_range_index_asserts_and_zeroes_its_rows(emu):
    conditions = torch.randn(2, 16, 8)
    batch_index, token_index = torch.tensor([0, 2, 1]), torch.tensor([5, 5, 16])
    out, _ = emu.gather_neighbour_conditions(conditions, batch_index, token_index, H200_SMS)
    assertions = emu.take_device_assertions()  # every lane of the rows (k, m) of the two bad indices
    assert len(assertions) == 2 * 5 * 32 and all(a.startswith("in_range failed") for a in assertions)
    assert torch.equal(out[:, 1:], torch.zeros(5, 2, 8))
    good = reference.gather_neighbour_conditions(conditions, batch_index[:1], token_index[:1])
    assert torch.equal(out[:, :1], good)
    sums, _ = emu.gather_neighbour_conditions_backward(torch.ones(5, 3, 8), batch_index, token_index, 2, 16, 1)
    assert len(emu.take_device_assertions()) == 2 * 5 * 32
    assert sums.sum() == 5 * 8  # only the good index's five rows were added


# ---- the sampler's CUDA path on the emulated kernels -------------------------------------------


def the_cuda_path(precision="fp32"):
    """The compute paths the fast sampler takes on a GPU, on the CPU: block steps composed of
    matmuls and the attention operator, the MAR pass through the model's modules, KV caches laid
    out for CUDA, steps replayed (the capture rehearsed)."""
    return rehearsed_paths("cpu", precision, block_step_kernels=False, onednn_mar_pass=False,
                           cache_head_dim_multiple=CUDA_HEAD_DIM_MULTIPLE)


@contextlib.contextmanager
def cuda_kernels_behind_the_cpu_operators(emulator):
    """torch.ops.fractal_ext.* on CPU tensors run their CUDA kernels on the emulator (threads in
    order, tensors fenced at their end). Autograd formulas, and the steps' capture rehearsal,
    see the operators as usual: one call each."""
    emulator.set_schedule("in_order", 0)
    emulator.set_fence_side("tail")

    def cfg_filter_sample(logits, cfg, temperature, filter_threshold, pixel_mean, pixel_std, greedy, generator):
        # The Philox seed of a draw comes from the generator (not a CUDA generator's own stream).
        seed = 0 if greedy else int(torch.randint(2**62, (), generator=generator))
        return emulator.cfg_filter_sample(logits, cfg, temperature, filter_threshold, pixel_mean, pixel_std, greedy, seed,
                                          0)[:2]

    kernels = {
        "kv_cache_attention": lambda *args: emulator.kv_cache_attention(*args, H200_SMS)[0],
        "cfg_filter_sample": cfg_filter_sample,
        "gather_neighbour_conditions": lambda *args: emulator.gather_neighbour_conditions(*args, H200_SMS)[0],
        "gather_neighbour_conditions_backward":
            lambda *args: emulator.gather_neighbour_conditions_backward(*args, H200_SMS)[0],
        "patchify": lambda *args: emulator.patchify(*args, H200_SMS)[0],
        "unpatchify": lambda *args: emulator.unpatchify(*args, H200_SMS)[0],
    }
    library = torch.library.Library("fractal_ext", "IMPL")
    try:
        for name, kernel in kernels.items():
            library.impl(name, kernel, "CPU")
        yield
    finally:
        library._destroy()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_greedy_samples_of_the_cuda_path_on_emulated_kernels_are_exact(name, emulator):
    # With replayed steps: on the CPU their first runs rehearse the CUDA graph captures.
    with cuda_kernels_behind_the_cpu_operators(emulator):
        images = sample_tiny(name, "cpu", cuda_graphs=True, greedy=True, paths=the_cuda_path())
    assert torch.equal(to_uint8(images), reference_tensors(name)["out.greedy_raster_sample_u8"])


@pytest.mark.parametrize("name", TINY_MODELS)
def test_greedy_completions_of_the_cuda_path_on_emulated_kernels_equal_the_eager_oracle(name, emulator):
    # Editing: per-image masks cutting tokens at every level (padded steps, per-image schedules).
    from editing_cases import complete_tiny, random_masks

    mask = random_masks(3, 16, seed=8)
    with cuda_kernels_behind_the_cpu_operators(emulator):
        emulated, _ = complete_tiny(name, mask, paths=the_cuda_path())
    eager, _ = complete_tiny(name, mask, implementation="eager")
    assert torch.equal(emulated, eager)


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("kind", ["ar", "mar_guiding"])
def test_grey_and_rgba_samples_of_the_cuda_path_on_emulated_kernels(kind, channels, emulator):
    from channel_models import tiny

    from fractal_ext.models import default_sampling_settings
    from fractal_ext.sampler import generate

    model = tiny(kind, channels)
    settings = dict(cfg=2.0, cfg_schedule="linear", temperature=1.0, filter_threshold=1e-3, greedy=True,
                    raster_order=True)
    eager = generate(model, [0, 1], implementation="eager", **settings)
    num_iter_list = default_sampling_settings(model)["num_iter_list"]
    cond_list = model.build_cond_list(torch.tensor([0, 1]), 2.0)
    with cuda_kernels_behind_the_cpu_operators(emulator):
        emulated = model.fast_sampler().sample(cond_list, num_iter_list, 2.0, "linear", 1.0, 1e-3,
                                               SamplingControls(greedy=True, raster_order=True), paths=the_cuda_path())
    assert torch.equal(model.normalisation.to_uint8(emulated).permute(0, 2, 3, 1), eager)


def test_head_dims_the_cuda_kernel_lacks_are_padded(emulator):
    # AR levels of head dim 12 and a pixel head of head dim 4 (a custom model): the CUDA attention
    # kernel takes multiples of 8, so on CUDA the caches get zero columns up to 8 and 16.
    torch.manual_seed(0)
    model = FractalGen(img_size_list=(8, 2, 1), embed_dim_list=(48, 24, 16), num_blocks_list=(1, 1, 1),
                       num_heads_list=(4, 2, 4), generator_type_list=("ar", "ar", "ar"), class_num=4,
                       attn_dropout=0.0, proj_dropout=0.0).eval()
    cond_list = model.build_cond_list(torch.tensor([0, 3]), 2.0)

    def sample():
        return model.fast_sampler().sample(cond_list, (4, 4), 2.0, "linear", 1.0, 1e-4,
                                           SamplingControls(greedy=True, raster_order=True), paths=the_cuda_path())

    on_the_cpu_kernels = sample()
    with cuda_kernels_behind_the_cpu_operators(emulator):
        on_the_cuda_kernels = sample()
    assert torch.equal(to_uint8(on_the_cuda_kernels), to_uint8(on_the_cpu_kernels))


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar4_gp"])
def test_fp16_samples_of_the_cuda_path_on_emulated_kernels(name, emulator):
    # fp16 autocast, what precision="auto" picks on CUDA: the attention kernel gets half rows.
    paths = the_cuda_path("fp16")
    on_the_cpu_kernels = sample_tiny(name, "cpu", cuda_graphs=True, greedy=True, precision="fp16", paths=paths)
    with cuda_kernels_behind_the_cpu_operators(emulator):
        emulated = sample_tiny(name, "cpu", cuda_graphs=True, greedy=True, precision="fp16", paths=paths)
    assert torch.equal(to_uint8(emulated), to_uint8(on_the_cpu_kernels))


def test_the_gpu_checks_sanitizer_inputs_pass_the_cuda_kernels(emulator, monkeypatch, capsys):
    # benchmarks/sanitize_ops.py, run under compute-sanitizer by the GPU check, on the emulated
    # kernels (backward passes included): every input passes the CUDA entry points' own checks.
    from benchmarks import sanitize_ops

    monkeypatch.setattr(sys, "argv", ["sanitize_ops.py", "--device", "cpu"])
    with cuda_kernels_behind_the_cpu_operators(emulator):
        assert sanitize_ops.main() == 0
    assert "every op ran on cpu" in capsys.readouterr().out
