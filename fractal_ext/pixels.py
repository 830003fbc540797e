"""Pixel values: 8-bit integers and a model's normalised space.

A model sees each channel normalised with its own mean and std (the official models: 3 channels
with the ImageNet mean and std); a pixel integer is round(255 * (x * std + mean)). The pixel
head predicts one of 256 integer values per channel. `Normalisation` holds one model's
constants (its config carries them); the module-level functions are the ImageNet ones, the
official models'.
"""
import math
from dataclasses import dataclass

import torch

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
VOCAB_SIZE = 256  # 8-bit pixel values: the pixel head's vocabulary
MAX_CHANNELS = 4  # grey, grey + alpha, RGB, RGBA


def check_normalisation(channels, mean, std) -> None:
    """ValueError unless channels is in 1..4 and mean / std hold one finite value per channel
    (std > 0)."""
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be an integer in 1..{MAX_CHANNELS} (grey .. RGBA), got {channels!r}")
    for name, values in (("pixel_mean", mean), ("pixel_std", std)):
        if len(values) != channels or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"{name} must hold one finite number per channel ({channels}), got {list(values)}")
    if not all(v > 0 for v in std):
        raise ValueError(f"pixel_std must be > 0 for every channel, got {list(std)}")


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std of a model's pixels (on the 0..1 scale)."""

    mean: tuple = PIXEL_MEAN
    std: tuple = PIXEL_STD

    def __post_init__(self):
        check_normalisation(len(self.mean), tuple(self.mean), tuple(self.std))

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _per_channel(self, values, device) -> torch.Tensor:
        return torch.tensor(values, device=device).reshape(1, -1, 1, 1)

    def normalise(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 normalised."""
        self._check_channels(images_u8)
        device = images_u8.device
        return (images_u8.float() / 255 - self._per_channel(self.mean, device)) / self._per_channel(self.std, device)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float [B, C, H, W] -> uint8 pixels round(255 * (x * std + mean)), clamped."""
        return (255 * self.unit_range(images.float())).round().clamp(0, 255).to(torch.uint8)

    def unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised [B, C, H, W] -> pixels on the 0..1 scale (x * std + mean), not rounded."""
        self._check_channels(images)
        return images * self._per_channel(self.std, images.device) + self._per_channel(self.mean, images.device)

    def _check_channels(self, images):
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"images must be [B, {self.channels}, H, W] for this model's {self.channels} channel(s), "
                             f"got {tuple(images.shape)}")


IMAGENET = Normalisation()


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 normalised with the ImageNet mean / std."""
    return IMAGENET.normalise(images_u8)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised float [B, 3, H, W] (ImageNet mean / std) -> uint8 pixels."""
    return IMAGENET.to_uint8(images)


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """Normalised [B, 3, H, W] (ImageNet mean / std) -> pixels on the 0..1 scale, not rounded."""
    return IMAGENET.unit_range(images)


def token_to_pixel_value(tokens: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Integer pixel value -> normalised value, in float32 exactly as the official code computes it
    (mean and std of the channel rounded to float32 first)."""
    mean = torch.tensor(mean, dtype=torch.float32, device=tokens.device)
    std = torch.tensor(std, dtype=torch.float32, device=tokens.device)
    return (tokens.float() / 255 - mean) / std
