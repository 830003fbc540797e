"""Models of 1 to 4 channels with their own pixel normalisation (grey, grey + alpha, RGB, RGBA):
the fast path equals the eager path, the pixel head samples its exact distribution, checkpoints
and training resume keep the channels, and bad channel settings are clear errors."""
import pytest
import torch

from chi_square import chi_square_p_value
from fractal_ext.io.checkpoints import load_model, save_model
from fractal_ext.models import FractalGen
from fractal_ext.models.known import KnownPixels
from fractal_ext.ops import reference
from fractal_ext.sampler import generate
from fractal_ext.sampler.pixel_head import FastPixelHead
from fractal_ext.sampler.plan import ComputePaths, SamplingRun
from fractal_ext.sampler.workspace import Workspace
from fractal_ext.settings import SamplingControls
from fractal_ext.training.loop import train
from channel_models import KINDS, NORMALISATION, tiny
from training_helpers import SyntheticImages, tiny_args

@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fast_path_equals_eager_path_on_greedy_raster_samples(kind, channels):
    model = tiny(kind, channels)
    settings = dict(cfg=2.0, cfg_schedule="linear", temperature=1.0, filter_threshold=1e-3, greedy=True, raster_order=True)
    eager = generate(model, [0, 1, 2], implementation="eager", **settings)
    fast = generate(model, [0, 1, 2], **settings)
    assert fast.shape == (3, 8, 8, channels)
    assert torch.equal(fast, eager)
    # Editing too: a mask cutting tokens, per image.
    mask = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    images = torch.randint(0, 256, (3, 8, 8, channels), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    from fractal_ext.editing import complete

    edited = {impl: complete(model, images, mask, [0, 1, 2], implementation=impl, **settings) for impl in ("eager", "fast")}
    assert torch.equal(edited["fast"], edited["eager"])
    assert torch.equal(edited["fast"][mask], images[mask])


def test_a_grey_model_of_a_named_architecture_is_not_that_model():
    from fractal_ext.models import build_model
    from fractal_ext.models.registry import registered_name

    assert registered_name(build_model("fractalmar_fmnist32").config) == "fractalmar_fmnist32"
    assert registered_name(build_model("fractalmar_fmnist32", channels=1).config) is None
    assert registered_name(build_model("fractalmar_fmnist28_grey").config) == "fractalmar_fmnist28_grey"


def test_uint8_round_trip_uses_the_models_normalisation():
    model = tiny("mar", 1)
    pixels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    normalised = model.normalisation.normalise(pixels)
    assert torch.allclose(normalised[0, 0, 0, 1], torch.tensor((1 / 255 - 0.3) / 0.4))
    assert torch.equal(model.normalisation.to_uint8(normalised), pixels)


@pytest.mark.parametrize("channels", [1, 4])
def test_pixel_head_draws_follow_its_exact_distribution(channels):
    """Many draws of the fast head from one context against the exact probabilities of the first
    and the last channel (the last one mixed over the channels before it, computed exactly for
    C = 1 and through the model's own teacher-forced logits for C = 4, its first three
    channels fixed to the drawn values); the wrong temperature is rejected."""
    head = tiny("ar", channels).next_fractal.next_fractal
    torch.manual_seed(1)
    with torch.no_grad():  # random weights give near-uniform logits: peaked ones make the test sharp
        for mlm in head.mlms:
            mlm.bias.copy_(2 * torch.randn(mlm.bias.shape))
    cond = torch.randn(1, 16) * 3
    draws, temperature = 30000, 1.1
    with torch.no_grad():
        run = SamplingRun((1,), temperature, 0.0, SamplingControls(torch.Generator().manual_seed(3)), guided=False,
                          paths=ComputePaths())
        pixels = FastPixelHead(head, Workspace()).sample(cond.expand(draws, -1), 1.0, run)
        tokens = torch.round(255 * (pixels * torch.tensor(head.pixel_std) + torch.tensor(head.pixel_mean))).long()
        first = head.logits_from_tokens(cond, torch.zeros(1, channels, dtype=torch.long))[:, 0]
        for temp, expect_fit in ((temperature, True), (1.5 * temperature, False)):
            probs = reference.guided_probabilities(first.double(), None, temp, 0.0)[0]
            p = chi_square_p_value(torch.bincount(tokens[:, 0], minlength=256), probs)
            assert (p > 1e-4) if expect_fit else (p < 1e-6)
        if channels > 1:
            # The last channel given the first ones: for the most frequent prefix of the draws.
            prefix, count = torch.unique(tokens[:, :-1], dim=0, return_counts=True)
            common = prefix[count.argmax()]
            chosen = (tokens[:, :-1] == common).all(dim=1)
            context = torch.cat([common, torch.zeros(1, dtype=torch.long)])[None]
            last = head.logits_from_tokens(cond, context)[:, -1]
            probs = reference.guided_probabilities(last.double(), None, temperature, 0.0)[0]
            assert chosen.sum() > 50
            assert chi_square_p_value(torch.bincount(tokens[chosen, -1], minlength=256), probs) > 1e-4


@pytest.mark.parametrize("channels", [1, 4])
def test_checkpoint_round_trip_and_training_resume(tmp_path, channels):
    model = tiny("mar", channels)
    save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.config.channels == channels and loaded.config.pixel_mean == NORMALISATION[channels][0]
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    dataset = SyntheticImages(size=16, channels=channels)
    common = ("--epochs", "1", "--save_last_freq", "0.5")
    full = train(tiny_args(tmp_path / "full", *common), model=tiny("mar", channels), dataset=dataset)
    train(tiny_args(tmp_path / "split", *common, "--stop_after", "2"), model=tiny("mar", channels), dataset=dataset)
    second = train(tiny_args(tmp_path / "split", *common, "--resume", str(tmp_path / "split")),
                   model=tiny("mar", channels, seed=5), dataset=dataset)
    assert full["losses"][2:] == second["losses"]


@pytest.mark.parametrize("overrides, message", [
    (dict(channels=0), r"channels must be an integer in 1..4"),
    (dict(channels=5), r"channels must be an integer in 1..4"),
    (dict(channels=1, pixel_mean=(0.5, 0.5)), r"pixel_mean must hold one finite number per channel \(1\)"),
    (dict(channels=2, pixel_std=(0.5,)), r"pixel_std must hold one finite number per channel \(2\)"),
    (dict(channels=1, pixel_std=(0.0,)), r"pixel_std must be > 0"),
    (dict(channels=1, pixel_mean=(float("nan"),)), "pixel_mean must hold one finite number"),
])
def test_bad_channel_settings_are_clear_errors(overrides, message):
    config = dict(img_size_list=(8, 2, 1), embed_dim_list=(32, 16, 16), num_blocks_list=(1, 1, 1),
                  num_heads_list=(2, 2, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=3)
    with pytest.raises(ValueError, match=message):
        FractalGen(**config, **overrides)


def test_images_of_other_channels_are_refused():
    model = tiny("mar", 1)
    with pytest.raises(ValueError, match=r"images must be \[B >= 1, 1, 8, 8\]"):
        model.train()(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"images must be \[B, 1, H, W\] for this model's 1 channel"):
        model.normalisation.normalise(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    from fractal_ext.editing import complete

    with pytest.raises(ValueError, match=r"uint8 images must be \[B, 8, 8, 1\]"):
        complete(model.eval(), torch.zeros(8, 8, 3, dtype=torch.uint8), torch.ones(8, 8, dtype=torch.bool), [0])
    cond_list = model.build_cond_list(torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match=r"known.pixels must be float32 \[1, 1, 8, 8\]"):
        model.sample(cond_list, (4, 4), 1.0, "constant", 1.0, 0.0,
                     known=KnownPixels(torch.zeros(1, 3, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool)))
