"""Unconditional negative log-likelihood in bits per dimension (SPEC sections 1 and 3)."""
import math

import torch


@torch.no_grad()
def bits_per_dim(model, images: torch.Tensor, labels: torch.Tensor | None = None, num_passes: int = 1,
                 generator: torch.Generator | None = None) -> float:
    """Eval-mode loss / ln 2 of one batch of normalised images [B, 3, H, W], averaged over
    `num_passes` forward passes (MAR levels draw a random mask each pass; the official evaluation
    averages 10). Labels do not matter: in eval mode every row uses the unconditional latent."""
    if num_passes < 1:
        raise ValueError(f"num_passes must be >= 1, got {num_passes}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    expected = model.config.img_size_list[0]
    if images.shape[-2:] != (expected, expected):
        raise ValueError(f"images must be {expected}x{expected} for this model, got {tuple(images.shape[-2:])}")
    was_training = model.training
    model.eval()
    if labels is None:
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    try:
        losses = [float(model(images, labels, generator=generator)) for _ in range(num_passes)]
    finally:
        model.train(was_training)
    return sum(losses) / len(losses) / math.log(2)
