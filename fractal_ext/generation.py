"""Class-conditional generation with progress, and PNG grids, for the scripts in python/."""
from pathlib import Path

import torch

from fractal_ext.images import image_grid, save_png
from fractal_ext.sampler import generate


@torch.no_grad()
def sample_labels(model, labels: torch.Tensor, num_iter_list, cfg: float, cfg_schedule: str = "linear",
                  temperature: float = 1.0, filter_threshold: float = 1e-4, generator: torch.Generator | None = None,
                  batch_size: int = 50, progress: bool = True) -> torch.Tensor:
    """Images uint8 [N, 3, H, W] of the classes `labels` [N], generated `batch_size` at a time by
    the fast sampler; the progress bar ticks once per level-0 step."""
    model.eval()
    images = generate(model, labels, batch_size=batch_size, generator=generator, progress=progress,
                      num_iter_list=tuple(num_iter_list), cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature,
                      filter_threshold=filter_threshold)
    return images.permute(0, 3, 1, 2)


def save_grid_png(images_u8: torch.Tensor, rows: int, path, pad: int = 2, scale: int = 1) -> Path:
    """uint8 [N, 3, H, W] -> one PNG, `rows` rows (row-major), `pad` white pixels between images."""
    n = images_u8.shape[0]
    grid = image_grid(images_u8.permute(0, 2, 3, 1), columns=-(-n // rows), padding=pad, background=255)
    if scale != 1:
        grid = grid.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    return save_png(grid, path)
