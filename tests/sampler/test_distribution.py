"""Distribution-level check on the shipped (trained) model: many fast-path samples have the
pixel statistics of the eager path's samples, and a mis-tempered sampler fails the same check."""
import pytest
import torch

from fractal_ext.io.checkpoints import load_model
from fractal_ext.models.registry import NAMED_SAMPLING, SHIPPED_MODEL as SHIPPED, SHIPPED_MODEL_NAME
from fractal_ext.sampler import generate

BINS = 16


def pixel_statistics(images_u8):
    """Per-image mean per channel [N, C] and the pooled 16-bin histogram per channel [C, 16]."""
    pixels = images_u8.float()  # [N, H, W, C]
    means = pixels.mean(dim=(1, 2))
    histograms = torch.stack([torch.histc(pixels[..., c], bins=BINS, min=0, max=256) for c in range(pixels.shape[-1])])
    return means, histograms / histograms.sum(dim=1, keepdim=True)


def same_distribution(a, b) -> bool:
    """Per-image channel means agree (two-sample z on image-level means, |z| < 4) and the pooled
    histograms are close (total variation < 0.05)."""
    means_a, hist_a = pixel_statistics(a)
    means_b, hist_b = pixel_statistics(b)
    stderr = (means_a.var(0) / len(a) + means_b.var(0) / len(b)).sqrt()
    z = (means_a.mean(0) - means_b.mean(0)).abs() / stderr
    total_variation = 0.5 * (hist_a - hist_b).abs().sum(dim=1)
    return bool((z < 4).all() and (total_variation < 0.05).all())


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped model not present")
def test_fast_samples_match_eager_samples_of_the_trained_model():
    model = load_model(SHIPPED)
    settings = dict(NAMED_SAMPLING[SHIPPED_MODEL_NAME])
    labels = torch.arange(10).repeat(6)  # 60 images per path, every class

    def draw(implementation, seed, **overrides):
        return generate(model, labels, batch_size=30, generator=torch.Generator().manual_seed(seed),
                        implementation=implementation, **{**settings, **overrides})

    eager = draw("eager", 1)
    assert same_distribution(draw("fast", 2), eager)
    assert not same_distribution(draw("fast", 3, temperature=0.5), eager)  # the check can fail


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped model not present")
def test_cpu_bf16_samples_have_the_distribution_of_fp32_samples(monkeypatch):
    """The CPU bf16 mode against fp32 on the shipped model (100 images per set, every class): the
    pixel histogram, the classifier agreement and the classifier-feature Fréchet distance of bf16
    samples are within the spread of fp32 with another seed; a changed temperature is rejected by
    the same check. docs/performance.md gives the same comparison at more images.

    The pixel heads' steps (100 rows here) take oneDNN's bf16 GEMMs at every width, as the bf16
    mode's steps of more than 8 rows do at the official models' widths (512 and more; the shipped
    model's pixel heads are 32 wide, where they would run fp32): every bf16 path of a run is in."""
    from fractal_ext.evaluation.fashion_classifier import load_classifier
    from fractal_ext.evaluation.parity import precision_parity
    from fractal_ext.sampler import decode

    monkeypatch.setattr(decode, "ONEDNN_BF16_WIDTH", 1)

    model, classifier = load_model(SHIPPED), load_classifier()
    settings = dict(NAMED_SAMPLING[SHIPPED_MODEL_NAME])
    result = precision_parity(model, classifier, 100, settings, {
        "bf16": {"precision": "bf16"},
        "bf16 at 0.8 x the temperature": {"precision": "bf16", "temperature": 0.8 * settings["temperature"]},
    })
    assert result["bf16"]["same_distribution"], result
    assert not result["bf16 at 0.8 x the temperature"]["same_distribution"], result
