"""Pixel values: 8-bit integers and the models' normalised space.

The official models see each channel normalised with the ImageNet mean and std; a pixel integer
is round(255 * (x * std + mean)). The pixel head predicts one of 256 integer values per channel.
Every module that converts between the two spaces takes the constants from here.
"""
import torch

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
VOCAB_SIZE = 256  # 8-bit pixel values: the pixel head's vocabulary


def _per_channel(values, device) -> torch.Tensor:
    return torch.tensor(values, device=device).reshape(1, -1, 1, 1)


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 normalised with the ImageNet mean / std."""
    return (images_u8.float() / 255 - _per_channel(PIXEL_MEAN, images_u8.device)) / _per_channel(PIXEL_STD, images_u8.device)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised float [B, 3, H, W] -> uint8 pixels round(255 * (x * std + mean)), clamped."""
    pixels = images.float() * _per_channel(PIXEL_STD, images.device) + _per_channel(PIXEL_MEAN, images.device)
    return (255 * pixels).round().clamp(0, 255).to(torch.uint8)


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """Normalised [B, 3, H, W] -> pixels on the 0..1 scale (x * std + mean), not rounded."""
    return images * _per_channel(PIXEL_STD, images.device) + _per_channel(PIXEL_MEAN, images.device)


def token_to_pixel_value(tokens: torch.Tensor, channel: int) -> torch.Tensor:
    """Integer pixel value -> normalised value, in float32 exactly as the official code computes it."""
    mean = torch.tensor(PIXEL_MEAN[channel], dtype=torch.float32, device=tokens.device)
    std = torch.tensor(PIXEL_STD[channel], dtype=torch.float32, device=tokens.device)
    return (tokens.float() / 255 - mean) / std
