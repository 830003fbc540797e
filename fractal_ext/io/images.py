"""Writing sampled images: PNG grids and one PNG per image (uint8 [.., H, W, 3], as
fractal_ext.sampler.generate returns them)."""
import math
from pathlib import Path

import torch


def image_grid(images_hwc: torch.Tensor, columns: int | None = None, padding: int = 2,
               background: int = 0) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> one uint8 [rows*(H+p)+p, columns*(W+p)+p, 3] grid on `background`."""
    count, height, width, _ = images_hwc.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    grid = torch.full((rows * (height + padding) + padding, columns * (width + padding) + padding, 3), background,
                      dtype=torch.uint8)
    for index, image in enumerate(images_hwc.cpu()):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_png(image_hwc: torch.Tensor, path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_hwc.cpu().numpy()).save(path)
    return path


def save_grid_png(images_hwc: torch.Tensor, rows: int, path, pad: int = 2, scale: int = 1) -> Path:
    """uint8 [N, H, W, 3] -> one PNG, `rows` rows (row-major), `pad` white pixels between images,
    upscaled `scale` times (nearest)."""
    n = images_hwc.shape[0]
    grid = image_grid(images_hwc, columns=-(-n // rows), padding=pad, background=255)
    if scale != 1:
        grid = grid.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    return save_png(grid, path)


def save_samples(images_hwc: torch.Tensor, labels, output_dir, columns: int | None = None) -> Path:
    """Writes grid.png and image_<index>_class_<label>.png; returns the grid's path."""
    output_dir = Path(output_dir)
    for index, (image, label) in enumerate(zip(images_hwc, labels)):
        save_png(image, output_dir / f"image_{index:04d}_class_{int(label)}.png")
    return save_png(image_grid(images_hwc, columns), output_dir / "grid.png")
