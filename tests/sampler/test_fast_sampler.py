"""The fast sampling path computes what the eager path computes."""
import pytest
import torch

from chi_square import chi_square_p_value
from capture_rehearsal import RehearsedStepGraph
from fractal_ext.ops import reference
from fractal_ext.pixels import PIXEL_MEAN, PIXEL_STD
from fractal_ext.pixels import to_uint8
from fractal_ext.settings import SamplingControls
from fractal_ext.sampler import FastSampler, generate
from fractal_ext.sampler.ar import FastAR
from fractal_ext.sampler.graphs import StepGraphs
from fractal_ext.sampler.onednn import onednn_linear_available
from fractal_ext.sampler.plan import SamplingRun, choose_paths
from fractal_ext.sampler.pixel_head import FastPixelHead
from fractal_ext.sampler.workspace import Workspace
from reference_models import build_reference_model, pixel_head_of, reference_entry, reference_tensors

CPU_PATHS = choose_paths(torch.device("cpu"), "fp32", cuda_graphs=False)  # what a CPU fp32 run takes


@pytest.mark.parametrize("replayed", [False, True], ids=["plain", "replayed-steps"])
def test_ar_decoding_matches_eager_teacher_forcing(replayed):
    data = reference_tensors("tiny_ar")
    generator = build_reference_model("tiny_ar").generator
    patches, cond = data["l0.patches"], data["l0.cond_in"]
    fast = FastAR(generator, next_level=None, level=0, workspace=Workspace())
    run = SamplingRun((1,), 1.0, 0.0, SamplingControls(), guided=False, paths=CPU_PATHS,
                      graphs=StepGraphs(RehearsedStepGraph if replayed else None))
    pos = generator.pos_embed_learned[0]
    with torch.no_grad():
        expected = generator.predict(patches, [cond])[0]
        token = generator.patch_emb_ln(generator.cond_emb(cond) + pos[0])
        blocks, caches = fast.blocks_and_caches(token, run)
        for step in range(generator.seq_len):
            out = fast.decode(token, step, blocks, caches, run)
            torch.testing.assert_close(out, expected[:, step], rtol=1e-5, atol=1e-5)
            token = generator.patch_emb_ln(generator.patch_emb(patches[:, step]) + pos[step + 1])


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar4_gp"])
def test_pixel_head_decoding_matches_eager_logits(name, monkeypatch):
    head = pixel_head_of(build_reference_model(name))
    cond = reference_tensors(name)["px.cond"]
    seen = []

    def recording_sample(logits, cfg, temperature, threshold, mean, std, greedy, generator):
        seen.append(logits.clone())
        return reference.cfg_filter_sample(logits, cfg, temperature, threshold, mean, std, greedy, generator)

    monkeypatch.setattr("fractal_ext.ops.cfg_filter_sample", recording_sample)
    run = SamplingRun((1,), 1.0, 0.0, SamplingControls(greedy=True), guided=False, paths=CPU_PATHS)
    with torch.no_grad():
        pixels = FastPixelHead(head, Workspace()).sample(cond, 1.0, run)
        tokens = torch.round(255 * (pixels * torch.tensor(PIXEL_STD) + torch.tensor(PIXEL_MEAN)))
        expected = head.logits_from_tokens(cond, tokens.long())
    for channel in range(3):
        torch.testing.assert_close(seen[channel], expected[:, channel], rtol=1e-5, atol=1e-5)


def test_random_pixel_frequencies_match_eager_probabilities():
    """Many draws of the fast head from one fixed context, against the eager path's exact
    probabilities of the first channel (with guidance and the filter); a sampler with the wrong
    temperature is rejected by the same test."""
    head = pixel_head_of(build_reference_model("tiny_ar"))
    cond = reference_tensors("tiny_ar")["px.cond"][:1] * 3.0  # a peaked context
    uncond = reference_tensors("tiny_ar")["px.cond"][1:2]
    draws, cfg, temperature, threshold = 40000, 2.0, 1.05, 1e-3
    rows = torch.cat([cond.expand(draws, -1), uncond.expand(draws, -1)])
    with torch.no_grad():
        logits = head.logits_from_tokens(torch.cat([cond, uncond]), torch.zeros(2, 3, dtype=torch.long))[:, 0]
        probs = reference.guided_probabilities(logits.double(), torch.tensor([cfg]), temperature, threshold)[0]
        wrong = reference.guided_probabilities(logits.double(), torch.tensor([cfg]), temperature * 1.25, threshold)[0]

        def red_counts(temp):
            run = SamplingRun((1,), temp, threshold, SamplingControls(torch.Generator().manual_seed(3)), guided=True,
                              paths=CPU_PATHS)
            pixels = FastPixelHead(head, Workspace()).sample(rows, cfg, run)
            red = torch.round(255 * (pixels[:, 0] * PIXEL_STD[0] + PIXEL_MEAN[0])).long()
            return torch.bincount(red, minlength=256)

        counts = red_counts(temperature)
    assert chi_square_p_value(counts, probs) > 1e-4
    assert chi_square_p_value(counts, wrong) < 1e-6


def test_generate_chunks_labels_and_returns_uint8():
    model = build_reference_model("tiny_mar")
    settings = dict(num_iter_list=[4, 2], cfg=2.0, cfg_schedule="linear", temperature=1.0, filter_threshold=1e-3)
    labels = [0, 1, 2, 3, 4]
    whole = generate(model, labels, batch_size=8, greedy=True, raster_order=True, **settings)
    chunked = generate(model, labels, batch_size=2, greedy=True, raster_order=True, **settings)
    assert whole.shape == (5, 16, 16, 3) and whole.dtype == torch.uint8
    assert torch.equal(whole, chunked)
    normalised = generate(model, labels[:1], output="normalised", greedy=True, raster_order=True, **settings)
    assert normalised.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown sampling settings"):
        generate(model, labels, cfgg=2.0)


def test_fast_sampler_keeps_its_buffers_between_runs():
    model = build_reference_model("tiny_ar")
    sampler = model.fast_sampler()
    assert isinstance(sampler, FastSampler) and model.fast_sampler() is sampler
    args = reference_entry("tiny_ar")["sample_args"]
    labels = reference_tensors("tiny_ar")["in.labels"]
    cond_list = model.build_cond_list(labels, args["cfg"])
    first = sampler.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                           args["filter_threshold"], SamplingControls(greedy=True))
    buffers = {k: v[0].data_ptr() for k, v in sampler.workspace._buffers.caches.items()}
    assert buffers  # the AR level's and the pixel head's KV caches
    second = sampler.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                            args["filter_threshold"], SamplingControls(greedy=True))
    assert torch.equal(first, second)
    assert buffers == {k: v[0].data_ptr() for k, v in sampler.workspace._buffers.caches.items()}


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar4_gp"])
def test_reduced_precision_sampling_runs_and_stays_close(name):
    """bf16 / fp16 autocast (opt-in; the official evaluation samples under fp16 autocast on a GPU):
    images in range, and the greedy raster sample close to the fp32 one (argmax flips may move a
    few pixels)."""
    model = build_reference_model(name)
    args = reference_entry(name)["sample_args"]
    cond_list = model.build_cond_list(reference_tensors(name)["in.labels"], args["cfg"])
    images = {}
    for precision in ("fp32", "bf16", "fp16"):
        images[precision] = model.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"],
                                         args["temperature"], args["filter_threshold"], greedy=True,
                                         raster_order=True, precision=precision)
    for precision in ("bf16", "fp16"):
        assert images[precision].dtype == torch.float32 and torch.isfinite(images[precision]).all()
        close = (to_uint8(images[precision]).int() - to_uint8(images["fp32"]).int()).abs() <= 8
        assert close.float().mean() > 0.5
    with pytest.raises(ValueError, match="precision"):
        model.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                     args["filter_threshold"], precision="int8")


@pytest.mark.skipif(not onednn_linear_available(), reason="torch has no oneDNN linear here")
def test_cpu_bf16_steps_of_many_rows_run_on_onednn_and_stay_close(monkeypatch):
    """The CPU bf16 mode's block steps of more than 8 rows (here 16: 8 images, guided) on oneDNN's
    bf16 GEMMs, taken at every width of the tiny model: packed weight copies made, and the greedy
    raster sample close to fp32's."""
    from fractal_ext.sampler import decode

    monkeypatch.setattr(decode, "ONEDNN_BF16_WIDTH", 1)
    model = build_reference_model("tiny_ar")
    args = reference_entry("tiny_ar")["sample_args"]
    labels = torch.arange(8) % 10
    images = {}
    for precision in ("fp32", "bf16"):
        images[precision] = model.sample(model.build_cond_list(labels, args["cfg"]), args["num_iter_list"],
                                         args["cfg"], args["cfg_schedule"], args["temperature"],
                                         args["filter_threshold"], greedy=True, raster_order=True, precision=precision)
    prepared = model.fast_sampler().workspace._prepared
    assert any(key[0] == "onednn bf16" for key in prepared)
    assert not any(key[0] == "bf16" for key in prepared)  # no step took the kernels' copies
    close = (to_uint8(images["bf16"]).int() - to_uint8(images["fp32"]).int()).abs() <= 8
    assert close.float().mean() > 0.5


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar4_gp"])
def test_cpu_bf16_mode_makes_its_weight_copies_once_and_again_after_the_weights_change(name):
    """precision="bf16" on the CPU: bf16 copies of the weight matrices (and, for MAR, the
    reordered bf16 blocks) made on the first run, reused by the next, remade when a weight changes
    in place (an optimiser step): never stale, same images as a model that never sampled."""
    import copy

    model = build_reference_model(name)
    args = reference_entry(name)["sample_args"]
    labels = reference_tensors(name)["in.labels"][:2]  # 4 rows, guided: the kernels' steps at every width

    def sample(model):
        return model.sample(model.build_cond_list(labels, args["cfg"]),
                            args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                            args["filter_threshold"], greedy=True, raster_order=True, precision="bf16")

    first = sample(model)
    prepared = model.fast_sampler().workspace._prepared
    copies = {key: entry[2] for key, entry in prepared.items()}
    if name.startswith("tiny_mar"):  # its pixel heads get more rows than the kernels take: fp32 composed steps
        assert any(key[0] == "bf16 reordered MAR blocks" for key in copies) == onednn_linear_available()
    else:
        assert any(key[0] == "bf16" and value.dtype == torch.bfloat16 for key, value in copies.items())
    assert torch.equal(sample(model), first)
    assert all(prepared[key][2] is value for key, value in copies.items())  # reused, not remade
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    updated = sample(model)
    assert all(prepared[key][2] is not value for key, value in copies.items())
    assert torch.equal(updated, sample(copy.deepcopy(model)))  # a copy builds its own sampler
    assert not torch.equal(updated, first)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar4_gp"])
def test_concurrent_threads_sampling_one_model_get_their_own_images(name, device):
    """A thread pool serving requests from one model: each run's KV caches are its thread's own
    (with shared caches the runs overwrote each other's keys and values in 10 trials of 10). On
    CUDA the runs capture and replay graphs while the other threads launch kernels."""
    import threading

    model = build_reference_model(name).to(device)
    requests = {"a": [0, 1, 2, 3], "b": [5, 6], "c": [9]}
    alone = {key: generate(model, labels, greedy=True, raster_order=True) for key, labels in requests.items()}
    for _ in range(2):
        together, start = {}, threading.Barrier(len(requests))

        def serve(key):
            start.wait()
            together[key] = generate(model, requests[key], greedy=True, raster_order=True)

        threads = [threading.Thread(target=serve, args=(key,)) for key in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for key in requests:
            assert torch.equal(together[key], alone[key]), key


def test_models_that_sampled_still_copy_and_pickle():
    """The fast sampler's buffers are not part of the model: deepcopy (an EMA copy) and torch.save
    of the whole module work after sampling, and the copies sample the same images."""
    import copy
    import io

    model = build_reference_model("tiny_ar")
    images = generate(model, [1, 2], greedy=True)
    copied = copy.deepcopy(model)
    assert "_fast_sampler" not in vars(copied)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert "_fast_sampler" in vars(model) and "_fast_sampler" not in vars(loaded)
    for other in (copied, loaded):
        assert torch.equal(generate(other, [1, 2], greedy=True), images)
