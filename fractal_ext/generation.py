"""Class-conditional generation with progress, and PNG grids. Uses the eager `model.sample`
(the fast sampler will take its place)."""
from pathlib import Path

import torch

from fractal_ext.data import denormalise_to_uint8


def level0_steps(model, num_iter_list) -> int:
    seq_len = (model.config.img_size_list[0] // model.config.img_size_list[1]) ** 2
    return seq_len if model.config.generator_type_list[0] == "ar" else min(seq_len, int(num_iter_list[0]))


@torch.no_grad()
def sample_labels(model, labels: torch.Tensor, num_iter_list, cfg: float, cfg_schedule: str = "linear",
                  temperature: float = 1.0, filter_threshold: float = 1e-4, generator: torch.Generator | None = None,
                  batch_size: int = 50, progress: bool = True) -> torch.Tensor:
    """Images uint8 [N, 3, H, W] of the classes `labels` [N], generated `batch_size` at a time;
    the progress bar ticks once per level-0 step."""
    from tqdm import tqdm

    model.eval()
    chunks = [labels[i : i + batch_size] for i in range(0, labels.shape[0], batch_size)]
    bar = tqdm(total=len(chunks) * level0_steps(model, num_iter_list), desc="sampling", unit="step",
               disable=not progress, dynamic_ncols=True)
    next_level = model.next_fractal
    plain_sample = next_level.sample

    def ticking_sample(*args, **kwargs):
        out = plain_sample(*args, **kwargs)
        bar.update(1)
        return out

    next_level.sample = ticking_sample  # instance attribute: counts the level-0 steps
    try:
        images = []
        for chunk in chunks:
            cond_list = model.build_cond_list(chunk, cfg)
            out = model.sample(cond_list, list(num_iter_list), cfg, cfg_schedule, temperature, filter_threshold,
                               generator=generator)
            images.append(denormalise_to_uint8(out))
    finally:
        del next_level.sample
        bar.close()
    return torch.cat(images)


def save_grid_png(images_u8: torch.Tensor, rows: int, path, pad: int = 2, scale: int = 1) -> Path:
    """uint8 [N, 3, H, W] -> one PNG, `rows` rows (row-major), `pad` white pixels between images."""
    from PIL import Image

    n, c, h, w = images_u8.shape
    cols = -(-n // rows)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = images_u8[i]
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), resample=Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
