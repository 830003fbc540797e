"""examples/fashion_mnist/fid_floor_ceiling.py: the histogram baseline's samples follow the class of
their place in the generation's label layout, and a small whole run scores real images (the floor)
closer to the test split than histogram samples (the ceiling) in both feature spaces."""
import json
import runpy
from pathlib import Path

import pytest
import torch

from fractal_ext.evaluation.features import FeatureSpaceError, find_inception_file
from fractal_ext.io.datasets import FASHION_MNIST_DIR, FashionMNIST

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = runpy.run_path(str(ROOT / "examples/fashion_mnist/fid_floor_ceiling.py"), run_name="floor_ceiling")

needs_fashion_mnist = pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                         reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DIR}")
try:
    find_inception_file()
    HAVE_INCEPTION = True
except FeatureSpaceError:
    HAVE_INCEPTION = False
needs_inception = pytest.mark.skipif(not HAVE_INCEPTION, reason="the FID Inception file is absent (make inception)")


@needs_fashion_mnist
def test_histogram_samples_have_their_class_in_the_label_layout():
    train = FashionMNIST("train", img_size=28, channels=1)
    per_class = 200
    samples = SCRIPT["histogram_samples"](train, 10 * per_class, 10, torch.Generator().manual_seed(0))
    assert samples.shape == (10 * per_class, 28, 28, 1) and samples.dtype == torch.uint8
    sample_means = samples.double().reshape(10, per_class, -1).mean(1)  # image i is of class i // per_class
    # Each class's samples average to its own class's mean image, not to another's.
    class_means = torch.stack([train.images[train.labels == label].double().reshape(-1, 28 * 28).mean(0)
                               for label in range(10)])
    assert torch.equal(torch.cdist(sample_means, class_means).argmin(1), torch.arange(10))
    # And every pixel has the mean and spread of its add-1-smoothed histogram: the standardised
    # differences of the 7840 sample means have mean square 1 (a wrong class, pixel or smoothing
    # moves it far from 1).
    values = torch.arange(256, dtype=torch.float64)
    z = []
    for label in range(10):
        pixels = train.images[train.labels == label].reshape(-1, 28 * 28).long()
        counts = torch.zeros(28 * 28, 256, dtype=torch.float64).scatter_add_(
            1, pixels.T, torch.ones(pixels.T.shape, dtype=torch.float64))
        probs = (counts + 1) / (counts.sum(1, keepdim=True) + 256)
        mean = probs @ values
        spread = (probs @ values**2 - mean**2).sqrt() / per_class**0.5
        z.append((sample_means[label] - mean) / spread)
    assert 0.85 < float(torch.cat(z).square().mean()) < 1.15


@needs_fashion_mnist
@needs_inception
def test_floor_scores_below_ceiling(tmp_path, capsys):
    output = tmp_path / "floor_ceiling.json"
    assert SCRIPT["main"](["--num_images", "30", "--num_reference", "30", "--threads", "2",
                           "--cache_dir", str(tmp_path / "cache"), "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["num_images"] == 30 and result["image_shape"] == [28, 28, 1]
    for space in ("inception", "classifier"):
        floor, ceiling = result["floor"][space], result["ceiling"][space]
        assert 0 < floor["frechet_distance"] < ceiling["frechet_distance"]
    assert result["ceiling"]["classifier"]["recall"] < result["floor"]["classifier"]["recall"]
    printed = capsys.readouterr().out
    assert "floor: inception FID" in printed and "ceiling: inception FID" in printed
