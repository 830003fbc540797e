"""Reference sets for the sample-quality metrics, in one feature space: the official statistics
files (`.npz` with `mu` and `sigma`, e.g. the ADM ImageNet statistics the paper's FIDs use), or a
dataset whose features are computed once and cached (statistics and features, for precision and
recall too).

A dataset reference is written `fashion_mnist:test`, `fashion_mnist:train` or `folder:PATH` (class
sub-folders of images, as training reads them; `PATH/val` when it has one).
"""
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fractal_ext.evaluation.features import DEFAULT_INCEPTION_DIR, extract
from fractal_ext.evaluation.metrics import FeatureStatistics
from fractal_ext.io.atomic import write_atomically

DEFAULT_CACHE_DIR = DEFAULT_INCEPTION_DIR / "reference_statistics"
DATASET_PREFIXES = ("fashion_mnist:", "folder:")


@dataclass
class ReferenceSet:
    """Statistics of a reference set, and its features where known (needed for precision/recall)."""

    description: str
    statistics: FeatureStatistics
    features: torch.Tensor | None = None


def load_statistics_file(path, dim: int) -> ReferenceSet:
    """An `.npz` of `mu` [D] and `sigma` [D, D] (the official files as they are; a `features` array
    [N, D] is used too when present). `dim`: the feature space's dimension, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not an .npz statistics file: {error}") from None
    missing = {"mu", "sigma"} - set(arrays)
    if missing:
        raise ValueError(f"{path} has no {' and no '.join(sorted(missing))} array (it holds {sorted(arrays)}); "
                         "a statistics file holds mu [D] and sigma [D, D]")
    try:
        statistics = FeatureStatistics(arrays["mu"], arrays["sigma"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if statistics.dim != dim:
        raise ValueError(f"{path} holds statistics of {statistics.dim} features; this feature space has {dim} "
                         "(statistics of another network?)")
    features = arrays.get("features")
    if features is not None and (features.ndim != 2 or features.shape[1] != dim):
        raise ValueError(f"{path}: features must be [N, {dim}], got {features.shape}")
    return ReferenceSet(str(path), statistics, None if features is None else torch.from_numpy(features).double())


def dataset_images(spec: str, img_size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    """uint8 images [N, H, W, C] of a dataset reference (`fashion_mnist:SPLIT` or `folder:PATH`) at the
    model's size and channels: all of them, or `limit` evenly spaced over the dataset (image folders
    are in class order: the first N would be a few classes)."""
    from fractal_ext.io.datasets import build_dataset

    if spec.startswith("fashion_mnist:"):
        split = spec.split(":", 1)[1]
        if split not in ("train", "test"):
            raise ValueError(f"reference {spec!r}: the Fashion-MNIST splits are train and test")
        dataset = build_dataset("fashion_mnist", split, None, img_size, channels)
    elif spec.startswith("folder:"):
        root = Path(spec.split(":", 1)[1])
        dataset = build_dataset("imagefolder", "test" if (root / "val").is_dir() else "train", root, img_size, channels)
    else:
        raise ValueError(f"reference {spec!r}: expected an .npz statistics file, fashion_mnist:train, "
                         "fashion_mnist:test or folder:PATH")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).round().long()
    if hasattr(dataset, "batch"):
        images = dataset.batch(indices)[0]
    else:
        images = torch.stack([dataset[int(index)][0] for index in indices])
    return images.permute(0, 2, 3, 1).contiguous()


def reference_set(spec: str, space, img_size: int, channels: int, limit: int | None = None,
                  cache_dir=DEFAULT_CACHE_DIR, log=print) -> ReferenceSet:
    """The reference set `spec` in feature space `space` (features.InceptionFeatures or
    ClassifierFeatures). Dataset references are computed on first use and cached in `cache_dir`
    (keyed by the dataset, count, size, channels and the feature network's file), then read back."""
    if not spec.startswith(DATASET_PREFIXES):
        return load_statistics_file(spec, space.dim)
    key = dict(reference=spec, limit=limit, selection="evenly spaced", img_size=img_size, channels=channels,
               space=space.name, network=space.fingerprint)
    cache = Path(cache_dir) / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.npz"
    if cache.is_file():
        cached = load_statistics_file(cache, space.dim)
        return ReferenceSet(f"{spec} ({cached.features.shape[0]} images)", cached.statistics, cached.features)
    images = dataset_images(spec, img_size, channels, limit)
    if log is not None:
        log(f"computing {space.name} features of {len(images)} images of {spec} (cached in {cache} for next time)")
    features = extract(space, images)["features"]
    statistics = FeatureStatistics.of(features)
    buffer = io.BytesIO()
    np.savez(buffer, mu=statistics.mu, sigma=statistics.sigma, features=features.numpy(), key=json.dumps(key))
    write_atomically(cache, lambda stream: stream.write(buffer.getvalue()))
    return ReferenceSet(f"{spec} ({len(images)} images)", statistics, features)

