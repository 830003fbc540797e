"""Datasets: the embedded Fashion-MNIST, image folders with the ADM centre crop, clear errors;
the histogram baseline and the classifier used as evidence."""
import gzip
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fractal_ext.io import datasets as data
from examples.fashion_mnist.baselines import PixelHistogram
from fractal_ext.evaluation.fashion_classifier import FashionClassifier
from fractal_ext.io.datasets import (FASHION_MNIST_DIR, DatasetError, FashionMNIST, ImageFolder, adm_center_crop,
                              build_dataset, iterate_batches, normalise, read_idx)
from fractal_ext.training import train
from training_helpers import tiny_args, tiny_model

ROOT = Path(__file__).resolve().parents[2]
HAVE_FASHION_MNIST = (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(
    not HAVE_FASHION_MNIST,
    reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DIR} (apt-get install -y dataset-fashion-mnist)")


def write_idx(path: Path, array: np.ndarray, gz: bool = True, truncate: int = 0):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    payload = payload[: len(payload) - truncate] if truncate else payload
    (gzip.open if gz else open)(path, "wb").write(payload)


def fake_fashion_mnist(root: Path, count=20, truncate_images=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for images, labels in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                           ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        write_idx(root / f"{images}.gz", rng.integers(0, 256, (count, 28, 28)), truncate=truncate_images)
        write_idx(root / labels, np.arange(count) % 10, gz=False)
    return root


def write_png(path: Path, size=(40, 30), colour=(200, 10, 10)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


# ----------------------------------------------------------------------------- Fashion-MNIST
@needs_fashion_mnist
def test_real_fashion_mnist_is_padded_grey_32x32():
    test = FashionMNIST("test")
    assert len(test) == 10_000 and test.classes[9] == "Ankle boot"
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and 0 <= label < 10
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    images, labels = test.batch(torch.arange(500))
    assert images[:, :, :2].max() == 0 and images[:, :, -2:].max() == 0 and images[..., :2].max() == 0
    assert images.max() == 255 and sorted(labels.unique().tolist()) == list(range(10))
    x = normalise(images)
    assert x.dtype == torch.float32 and torch.allclose(x[:, 0].min(), torch.tensor(-0.485 / 0.229))
    assert len(FashionMNIST("train")) == 60_000


def test_idx_files_gz_or_raw(tmp_path):
    root = fake_fashion_mnist(tmp_path / "fm")
    dataset = FashionMNIST("train", root)
    assert len(dataset) == 20 and dataset.labels.tolist()[:11] == list(range(10)) + [0]
    raw = read_idx(root / "train-images-idx3-ubyte.gz")
    assert torch.equal(dataset.images[:, 2:30, 2:30], torch.from_numpy(raw.copy()))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install -y dataset-fashion-mnist"):
        FashionMNIST("train", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*not found.*apt-get install"):
        FashionMNIST("train", tmp_path / "empty")


def test_corrupt_fashion_mnist_files(tmp_path):
    root = fake_fashion_mnist(tmp_path / "fm", truncate_images=100)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        FashionMNIST("test", root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read"):
        FashionMNIST("test", root)
    with pytest.raises(ValueError, match="split must be"):
        FashionMNIST("validation", root)


# ----------------------------------------------------------------------------- image folder
def test_adm_center_crop_sizes():
    from PIL import Image

    wide = Image.new("RGB", (300, 130), (0, 0, 0))
    wide.paste((255, 255, 255), (145, 0, 155, 130))  # a white stripe in the middle
    out = np.asarray(adm_center_crop(wide, 32))
    assert out.shape == (32, 32, 3)
    assert out[:, 16].mean() > 100 and out[:, 0].mean() < 10  # the centre is kept
    assert np.asarray(adm_center_crop(Image.new("RGB", (20, 50)), 32)).shape == (32, 32, 3)  # upsampled


def test_image_folder_classes_and_items(tmp_path):
    for name in ("zebra", "ant"):
        for i in range(3):
            write_png(tmp_path / "imgs" / name / f"{i}.png", colour=(10 * i, 0, 0))
    (tmp_path / "imgs" / "ant" / "notes.txt").write_text("not an image")
    dataset = ImageFolder(tmp_path / "imgs", 16)
    assert dataset.classes == ["ant", "zebra"] and len(dataset) == 6
    image, label = dataset[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 1
    assert build_dataset("imagefolder", "train", tmp_path / "imgs", 16).classes == ["ant", "zebra"]
    images, labels = next(iter_batches(dataset))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1]


def iter_batches(dataset):
    return iterate_batches(dataset, 4)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        ImageFolder(tmp_path / "empty", 16)
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        ImageFolder(tmp_path / "noimages", 16)
    with pytest.raises(DatasetError, match="--data_path is required"):
        build_dataset("imagefolder", "train", None)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("cifar", "train")


def test_unreadable_image_is_named_during_training(tmp_path):
    for i in range(4):
        write_png(tmp_path / "imgs" / "a" / f"{i}.png")
        write_png(tmp_path / "imgs" / "b" / f"{i}.png")
    bad = tmp_path / "imgs" / "b" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dataset = ImageFolder(tmp_path / "imgs", 8)
    args = tiny_args(tmp_path / "run", "--epochs", "1")
    with pytest.raises(DatasetError, match=r"cannot read image .*b/2\.png"):
        train(args, model=tiny_model(), dataset=dataset)


def test_train_script_reports_bad_dataset_paths(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra, message in (
        (["--dataset", "imagefolder", "--data_path", str(tmp_path / "missing")], "does not exist"),
        (["--dataset", "fashion_mnist", "--data_path", str(tmp_path)], "apt-get install"),
    ):
        result = subprocess.run([sys.executable, str(ROOT / "python" / "train.py"), *extra, "--output_dir",
                                 str(tmp_path / "out"), "--no_progress"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "out").exists()  # a refused run leaves nothing behind


def test_random_hflip_is_seeded():
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.uint8).reshape(2, 3, 2, 4).repeat(8, 1, 1, 1)
    a = data.random_hflip(images, torch.Generator().manual_seed(0))
    b = data.random_hflip(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    flipped = [(torch.equal(x, y.flip(-1))) for x, y in zip(a, images)]
    assert 0 < sum(flipped) < len(flipped)


# ----------------------------------------------------------------------------- evidence tools
def test_pixel_histogram_bits_per_dim():
    # Position-wise: half the images are 0 and half 255 everywhere -> 1 bit per grey pixel.
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[2:] = 255
    tied = PixelHistogram(2, 2, "tied", alpha=0.0).fit([images])
    assert tied.bits_per_dim([images]) == pytest.approx(1 / 3)  # G and B cost nothing
    independent = PixelHistogram(2, 2, "independent", alpha=0.0).fit([images])
    assert independent.bits_per_dim([images]) == pytest.approx(1.0)
    smoothed = PixelHistogram(2, 2, "tied", alpha=1.0).fit([images])
    assert smoothed.bits_per_dim([images]) == pytest.approx(-math.log2(3 / 260) / 3)
    colour = images.clone()
    colour[:, 1] = 7
    with pytest.raises(ValueError, match="grey images"):
        tied.bits_per_dim([colour])
    grey = PixelHistogram(2, 2, "independent", alpha=0.0, image_channels=1).fit([images[:, :1]])
    assert grey.bits_per_dim([images[:, :1]]) == pytest.approx(1.0)  # the tied model's bits over one plane
    with pytest.raises(ValueError, match=r"uint8 \[B, 1, H, W\]"):
        grey.bits_per_dim([images])


def test_classifier_shapes():
    model = FashionClassifier()
    assert model(torch.zeros(5, 3, 32, 32, dtype=torch.uint8)).shape == (5, 10)
    assert model.predict(torch.zeros(3, 3, 32, 32, dtype=torch.uint8)).shape == (3,)
    assert sum(p.numel() for p in model.parameters()) < 100_000
    padded = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    padded[:, :, 2:30, 2:30] = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(model.eval()(padded[:, :, 2:30, 2:30]), model(padded))  # 28x28 is padded as in training
    with pytest.raises(ValueError, match=r"\[B, 1 or 3, 32 or 28, 32 or 28\]"):
        model(torch.zeros(1, 3, 30, 30, dtype=torch.uint8))


def test_grey_and_rgba_data_for_models_of_other_channels(tmp_path):
    from PIL import Image

    grey = FashionMNIST("test", img_size=28, channels=1)
    images, _ = grey.batch(torch.arange(2))
    assert images.shape == (2, 1, 28, 28) and torch.equal(images[:, 0], FashionMNIST("test").batch(torch.arange(2))[0][:, 0, 2:30, 2:30])
    with pytest.raises(ValueError, match="channels must be 1"):
        FashionMNIST("test", channels=4)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "imgs" / "a" / "x.png")
    rgba = build_dataset("imagefolder", "train", tmp_path / "imgs", 16, channels=4)[0][0]
    assert rgba.shape == (4, 16, 16) and torch.equal(rgba[:3], torch.from_numpy(rgb).permute(2, 0, 1)) and (rgba[3] == 255).all()
    assert build_dataset("imagefolder", "train", tmp_path / "imgs", 16, channels=1)[0][0].shape == (1, 16, 16)
