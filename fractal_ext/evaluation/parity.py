"""Whether two ways of sampling one model draw from the same distribution, judged against the
spread of one way with two seeds: the check behind the CPU bf16 mode (fp32 stays the exact
default, bf16 changes the numbers but must not change the distribution).

Three distances between two sample sets of a Fashion-MNIST model: the total variation between
their pooled 16-bin pixel histograms (per channel, the largest), the difference of their
classifier agreement with the requested class, and the Fréchet distance between their shipped
classifier's penultimate features. A candidate set passes when each of its distances to a
baseline set is within the spread measured between the baseline and the baseline's way with
another seed (docs/performance.md, "bf16 on the CPU").
"""
import math
from dataclasses import dataclass

import torch

from fractal_ext.evaluation.metrics import FeatureStatistics, frechet_distance
from fractal_ext.sampler.generate import generate

HISTOGRAM_BINS = 16


@dataclass(frozen=True)
class SampleSet:
    histograms: torch.Tensor  # [C, bins], each row sums to 1
    agreement: float  # fraction of images the classifier assigns to their requested class
    features: FeatureStatistics  # of the classifier's penultimate features
    count: int


def describe_samples(images_u8: torch.Tensor, labels: torch.Tensor, classifier) -> SampleSet:
    """images_u8 [N, H, W, C] uint8 (as `generate` returns them), labels [N] the requested classes."""
    pixels = images_u8.float()
    histograms = torch.stack([torch.histc(pixels[..., c], bins=HISTOGRAM_BINS, min=0, max=256)
                              for c in range(pixels.shape[-1])])
    channels_first = images_u8.permute(0, 3, 1, 2)
    with torch.no_grad():
        agreement = float((classifier.predict(channels_first) == labels).float().mean())
        features = torch.cat([classifier.penultimate(channels_first[i : i + 500]) for i in range(0, len(labels), 500)])
    return SampleSet(histograms / histograms.sum(dim=1, keepdim=True), agreement, FeatureStatistics.of(features),
                     len(labels))


def distances(first: SampleSet, second: SampleSet) -> dict:
    return {
        "histogram_total_variation": float(0.5 * (first.histograms - second.histograms).abs().sum(dim=1).max()),
        "agreement_difference": abs(first.agreement - second.agreement),
        "classifier_frechet_distance": frechet_distance(first.features, second.features),
    }


def within_spread(candidate: dict, spread: dict, first: SampleSet, second: SampleSet,
                  margin: float = 1.5) -> dict:
    """Per distance, whether `candidate` (baseline to the set under test) is within `spread`
    (baseline to the baseline's way with another seed). One pair of seeds measures the spread
    once, so each bound has room: `margin` times the spread for the histogram and the Fréchet
    distance, and for the agreement the larger of the measured difference and 4 standard errors
    of a difference of two proportions of these sizes.

    The set under test is drawn with the baseline's seed: the two then share their random
    numbers, so what separates them is the change in the computation, not the seed's noise, and
    a shift smaller than the seed's spread still shows (the spread sets the bound, the coupling
    lowers the candidate's own noise)."""
    p = (first.agreement + second.agreement) / 2
    agreement_error = math.sqrt(max(p * (1 - p), 1e-12) * (1 / first.count + 1 / second.count))
    return {
        "histogram_total_variation":
            candidate["histogram_total_variation"] <= margin * spread["histogram_total_variation"],
        "agreement_difference": candidate["agreement_difference"] <= max(spread["agreement_difference"],
                                                                         4 * agreement_error),
        "classifier_frechet_distance": candidate["classifier_frechet_distance"]
        <= margin * spread["classifier_frechet_distance"],
    }


def precision_parity(model, classifier, num_images: int, settings: dict, candidates: dict, batch_size: int = 50,
                     seeds=(1, 2)) -> dict:
    """fp32 samples with seeds[0] (the baseline) and seeds[1] (the spread), and each candidate's
    samples ({name: generate's overrides, e.g. {"precision": "bf16"}}) with seeds[0];
    class-balanced labels, image i of class i // (num_images / classes). -> the spread's
    distances, and per candidate its distances, verdicts and overall `same_distribution`."""
    classes = model.num_classes
    if num_images % classes:
        raise ValueError(f"num_images must be a multiple of the {classes} classes, got {num_images}")
    labels = torch.arange(num_images) // (num_images // classes)

    def draw(seed, precision="fp32", **overrides):
        images = generate(model, labels, batch_size=batch_size, generator=torch.Generator().manual_seed(seed),
                          precision=precision, **{**settings, **overrides})
        return describe_samples(images, labels, classifier)

    baseline, other_seed = draw(seeds[0]), draw(seeds[1])
    spread = distances(baseline, other_seed)
    result = {"num_images": num_images, "seeds": list(seeds), "spread": spread,
              "agreement": {"baseline": baseline.agreement, "other_seed": other_seed.agreement}}
    for name, overrides in candidates.items():
        tested = draw(seeds[0], **overrides)
        candidate_distances = distances(baseline, tested)
        verdicts = within_spread(candidate_distances, spread, baseline, tested)
        result[name] = {"overrides": overrides, "distances": candidate_distances, "within_spread": verdicts,
                        "same_distribution": all(verdicts.values()), "agreement": tested.agreement}
    return result
