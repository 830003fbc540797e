"""Scores a set of images against a reference set in one or more feature spaces: Fréchet distance,
Inception Score (where the space has class logits) and precision / recall (where the reference's
features are known)."""
import torch

from fractal_ext.evaluation.features import extract
from fractal_ext.evaluation.metrics import FeatureStatistics, frechet_distance, inception_score, precision_recall
from fractal_ext.evaluation.reference import DEFAULT_CACHE_DIR, ReferenceSet, reference_set


def score_images(images_u8: torch.Tensor, space, reference: ReferenceSet) -> dict:
    """Metrics of uint8 images [N, H, W, C] against `reference` in `space`: {"frechet_distance",
    "inception_score", "inception_score_std", "precision", "recall", "num_images", "reference"};
    a metric the space or the reference cannot give is None (with the reason under "notes")."""
    outputs = extract(space, images_u8)
    result = dict(num_images=len(images_u8), reference=reference.description, notes=[])
    result["frechet_distance"] = frechet_distance(FeatureStatistics.of(outputs["features"]), reference.statistics)
    if "logits" in outputs:
        result["inception_score"], result["inception_score_std"] = inception_score(
            outputs["logits"], splits=min(10, len(images_u8)))
    else:
        result["inception_score"] = result["inception_score_std"] = None
        result["notes"].append(f"no Inception Score: the {space.name} network file has no class logits")
    neighbours = 3
    if reference.features is None:
        result["precision"] = result["recall"] = None
        result["notes"].append("no precision/recall: the reference statistics file holds no features")
    elif min(len(reference.features), len(images_u8)) <= neighbours:
        result["precision"] = result["recall"] = None
        result["notes"].append(f"no precision/recall: {neighbours} nearest neighbours need more than {neighbours} "
                               "images on each side")
    else:
        result["precision"], result["recall"] = precision_recall(reference.features, outputs["features"], neighbours)
    return result


def score_in_spaces(images_u8: torch.Tensor, spaces, reference: str, num_reference: int | None = None,
                    cache_dir=DEFAULT_CACHE_DIR) -> dict:
    """`score_images` in each feature space against the reference `reference` (a statistics file or
    a dataset, see fractal_ext.evaluation.reference): {space name: metrics}."""
    height, _, channels = images_u8.shape[1:]
    return {space.name: score_images(images_u8, space, reference_set(reference, space, height, channels, num_reference,
                                                                     cache_dir))
            for space in spaces}
