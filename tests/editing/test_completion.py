"""Editing on the tiny reference models: known pixels come back bit-exactly, all-known and
all-unknown masks behave as stated, and the fast path equals the eager oracle."""
import pytest
import torch

from editing_cases import complete_tiny, random_masks
from fractal_ext.models.known import KnownPixels
from reference_models import TINY_MODELS, build_reference_model, normalised_images, reference_entry

PATHS = ("fast", "eager")


def kept(images, out, mask):
    keep = mask[:, None].expand_as(images)
    return torch.equal(out[keep], images[keep])


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("implementation", PATHS)
@pytest.mark.parametrize("batch, guided", [(1, True), (3, True), (3, False)])
def test_known_pixels_come_back_bit_exactly(name, implementation, batch, guided):
    mask = random_masks(batch, 16, seed=batch)
    out, images = complete_tiny(name, mask, cfg=None if guided else 1.0, implementation=implementation,
                                greedy=False, seed=4)
    assert kept(images, out, mask)
    assert not torch.equal(out[~mask[:, None].expand_as(images)], images[~mask[:, None].expand_as(images)])


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("per_image", [True, False])
def test_fast_path_equals_the_eager_oracle_on_greedy_raster_completions(name, per_image):
    mask = random_masks(4, 16, seed=7, per_image=per_image)
    fast, _ = complete_tiny(name, mask)
    eager, _ = complete_tiny(name, mask, implementation="eager")
    assert torch.equal(fast, eager)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("implementation", PATHS)
def test_no_known_pixel_is_plain_sampling(name, implementation):
    model = build_reference_model(name)
    args = reference_entry(name)["sample_args"]
    cond_list = model.build_cond_list(torch.tensor([1, 5]), args["cfg"])
    settings = (cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                args["filter_threshold"])
    nothing_known = KnownPixels(normalised_images(2, 16), torch.zeros(2, 16, 16, dtype=torch.bool))
    plain = model.sample(*settings, implementation=implementation, generator=torch.Generator().manual_seed(9))
    edited = model.sample(*settings, implementation=implementation, generator=torch.Generator().manual_seed(9),
                          known=nothing_known)
    assert torch.equal(edited, plain)


@pytest.mark.parametrize("implementation", PATHS)
def test_every_pixel_known_returns_the_images_without_generating(implementation, monkeypatch):
    model = build_reference_model("tiny_mar")
    images = normalised_images(2, 16)
    cond_list = model.build_cond_list(torch.tensor([1, 5]), 3.0)

    def refuse(*args, **kwargs):
        raise AssertionError("a generator level ran")

    monkeypatch.setattr(model.generator, "sample", refuse)
    monkeypatch.setattr(model.fast_sampler().top_level, "sample", refuse)
    out = model.sample(cond_list, (8, 4), 3.0, "linear", 1.0, 0.0, implementation=implementation,
                       known=KnownPixels(images, torch.ones(2, 16, 16, dtype=torch.bool)))
    assert torch.equal(out, images)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_every_step_of_an_editing_run_is_free_of_host_reads(name):
    # The fast path reads the mask on the host once, before the first step. After that nothing in
    # a step may read device values on the host: on a GPU that is a synchronisation.
    from capture_rehearsal import capture_violation
    from torch.utils._python_dispatch import TorchDispatchMode

    from capture_rehearsal import rehearsed_paths

    class NoHostReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            why = capture_violation(func, args, kwargs or {})
            if why in ("reads tensor values on the host", "indexes with a boolean mask (a data-dependent shape)"):
                raise AssertionError(f"{func} {why}")
            return func(*args, **(kwargs or {}))

    model = build_reference_model(name)
    sampler = model.fast_sampler()
    top_level_sample = sampler.top_level.sample

    def watched(*args, **kwargs):
        with NoHostReads():
            return top_level_sample(*args, **kwargs)

    sampler.top_level.sample = watched
    paths = rehearsed_paths("cpu", block_step_kernels=False, onednn_mar_pass=False)
    args = reference_entry(name)["sample_args"]
    mask = random_masks(3, 16, seed=2)
    cond_list = model.build_cond_list(torch.tensor([0, 1, 2]), args["cfg"])
    out = sampler.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                         args["filter_threshold"], paths=paths, known=KnownPixels(normalised_images(3, 16), mask))
    assert out.shape == (3, 3, 16, 16)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_replayed_steps_rehearse_their_capture_on_the_editing_path(name):
    from capture_rehearsal import rehearsed_paths

    mask = random_masks(3, 16, seed=5)
    rehearsed, _ = complete_tiny(name, mask, paths=rehearsed_paths("cpu", onednn_mar_pass=False))
    eager, _ = complete_tiny(name, mask, implementation="eager")
    assert torch.equal(rehearsed, eager)
