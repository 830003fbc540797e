"""Training data: the embedded default (Fashion-MNIST from Debian's `dataset-fashion-mnist`) and an
image folder (one sub-folder per class) with the ADM centre crop of the official recipe (docs/training.md).

Datasets return 8-bit images `uint8 [C, S, S]` (C the model's channels) and integer labels; every
random choice (order, horizontal flips) is made by the training loop from its own checkpointed
generator, so a run is reproducible whatever the number of data-loader workers. A model's
`normalisation.normalise` maps 8-bit images to its input space (`normalise` here: the ImageNet
mean / std of the official models).
"""
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from fractal_ext.io.images import IMAGE_MODES
from fractal_ext.pixels import normalise  # noqa: F401  (re-exported: datasets hand out uint8 images)

FASHION_MNIST_DIR = Path(os.environ.get("FRACTAL_EXT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_HOWTO = ("install it with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu; `make setup` "
                       "does it), or point FRACTAL_EXT_FASHION_MNIST / --data_path at a folder holding "
                       "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset that cannot be used: missing, empty, malformed or unreadable."""


# ----------------------------------------------------------------------------- Fashion-MNIST
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) -> uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if len(data) < 4:
        raise DatasetError(f"{path} is not an IDX file: only {len(data)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (header {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise DatasetError(f"{path} is truncated or corrupt: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"Fashion-MNIST file {stem}[.gz] not found in {root}; {FASHION_MNIST_HOWTO}")


def load_fashion_mnist_arrays(split: str, root=None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of the 'train' or 'test' split."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise DatasetError(f"Fashion-MNIST folder {root} does not exist; {FASHION_MNIST_HOWTO}")
    image_stem, label_stem = FASHION_MNIST_FILES[split]
    images, labels = read_idx(_find_idx(root, image_stem)), read_idx(_find_idx(root, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, labels {labels.shape}")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(f"Fashion-MNIST {split} labels in {root} go up to {int(labels.max())}, expected < 10")
    return images, labels


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as uint8 images [C, S, S]: the 28x28 grey images zero-padded to `img_size`
    (default 32: 2 pixels on each side), grey (channels=1) or the grey value repeated into
    `channels` (3: the RGB models'); 10 classes. Held in memory (47 MB for train)."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str = "train", root=None, img_size: int = 32, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError(f"Fashion-MNIST is grey: channels must be 1 (grey) or 3 (repeated), got {channels}")
        self.channels = channels
        images, labels = load_fashion_mnist_arrays(split, root)
        if img_size < images.shape[-1]:
            raise ValueError(f"img_size must be >= {images.shape[-1]} for Fashion-MNIST, got {img_size}")
        pad_before = (img_size - images.shape[-1]) // 2
        pad_after = img_size - images.shape[-1] - pad_before
        grey = torch.nn.functional.pad(torch.from_numpy(images.copy()), (pad_before, pad_after, pad_before, pad_after))
        self.images = grey  # [N, S, S] uint8; channels are repeated on access
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.split = split

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index].unsqueeze(0).expand(self.channels, -1, -1).contiguous(), int(self.labels[index])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """The images uint8 [B, C, S, S] and labels [B] at `indices`, without per-item overhead."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self.images[indices].unsqueeze(1).expand(-1, self.channels, -1, -1).contiguous(), self.labels[indices]


# ----------------------------------------------------------------------------- image folder
def adm_center_crop(image, image_size: int):
    """ADM centre crop (docs/training.md): halve with a box filter while the short side is >= 2x the
    target, resize bicubically so the short side is the target, then crop the centre square."""
    from PIL import Image

    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return Image.fromarray(array[top : top + image_size, left : left + image_size])


class ImageFolder(torch.utils.data.Dataset):
    """Images in `root/<class name>/*.<ext>`, classes in sorted order of the sub-folder names,
    ADM centre-cropped to `img_size`, converted to `channels` (uint8 [C, S, S]: 1 grey, 2 grey +
    alpha, 3 RGB, 4 RGBA; an image without alpha gets an opaque one). Unreadable images raise
    DatasetError naming the file."""

    def __init__(self, root, img_size: int, channels: int = 3):
        if channels not in IMAGE_MODES:
            raise ValueError(f"channels must be in 1..4 (grey, grey + alpha, RGB, RGBA), got {channels}")
        self.channels = channels
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"image folder {root} does not exist")
        if not root.is_dir():
            raise DatasetError(f"image folder {root} is not a directory")
        self.classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        if not self.classes:
            raise DatasetError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image files>)")
        self.samples = []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((path, label))
        if not self.samples:
            raise DatasetError(f"image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its "
                               f"{len(self.classes)} class sub-folders")
        self.img_size = img_size
        self.root = root

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as handle:
                image = handle.convert(IMAGE_MODES[self.channels])
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DatasetError(f"cannot read image {path}: {error}") from error
        array = np.asarray(adm_center_crop(image, self.img_size))
        array = array[..., None] if array.ndim == 2 else array
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), label


# ----------------------------------------------------------------------------- construction
def build_dataset(name: str, split: str = "train", data_path=None, img_size: int = 32, channels: int = 3):
    """'fashion_mnist' (data_path: folder of the IDX files, default the Debian package's) or
    'imagefolder' (data_path: folder with `train/` and `val/`, or the class folders themselves),
    as uint8 images of `channels` (the model's)."""
    if name == "fashion_mnist":
        return FashionMNIST(split, data_path, img_size, channels)
    if name == "imagefolder":
        if data_path is None:
            raise DatasetError("--data_path is required with --dataset imagefolder")
        root = Path(data_path)
        split_dir = root / ("train" if split == "train" else "val")
        return ImageFolder(split_dir if split_dir.is_dir() else root, img_size, channels)
    raise ValueError(f"unknown dataset {name!r}; choose 'fashion_mnist' or 'imagefolder'")


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flips each image [B, C, H, W] horizontally with probability 1/2 (draws from `generator`)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    flip = flip.to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def collate_uint8(items):
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def iterate_batches(dataset, batch_size: int, limit: int | None = None, num_workers: int = 0):
    """(uint8 images, labels) of the first `limit` items (default all), in order, `batch_size` at a time."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if hasattr(dataset, "batch"):
        for start in range(0, count, batch_size):
            yield dataset.batch(torch.arange(start, min(start + batch_size, count)))
        return
    subset = torch.utils.data.Subset(dataset, range(count))
    yield from torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=num_workers,
                                           collate_fn=collate_uint8)
