"""`complete`: images with a known-pixel mask in, the same images with the unknown pixels generated out."""
import torch

from fractal_ext.models import FractalGen
from fractal_ext.models.known import KnownPixels
from fractal_ext.sampler.generate import generate


def normalised_images(images: torch.Tensor, model: FractalGen) -> torch.Tensor:
    """uint8 [B, H, W, C] / [H, W, C], or normalised float [B, C, H, W] / [C, H, W] -> float32
    [B, C, H, W] normalised as the model's pixels; ValueError for other layouts, sizes or
    channel counts."""
    size, channels = model.config.img_size_list[0], model.config.channels
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        batch = images if images.dim() == 4 else images[None]
        if images.dim() not in (3, 4) or tuple(batch.shape[1:]) != (size, size, channels):
            raise ValueError(f"uint8 images must be [B, {size}, {size}, {channels}] or [{size}, {size}, {channels}], "
                             f"got {tuple(images.shape)}")
        return model.normalisation.normalise(batch.permute(0, 3, 1, 2))
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 pixels or normalised floats, got {images.dtype}")
    batch = images if images.dim() == 4 else images[None]
    if images.dim() not in (3, 4) or tuple(batch.shape[1:]) != (channels, size, size):
        raise ValueError(f"normalised images must be [B, {channels}, {size}, {size}] or [{channels}, {size}, {size}], "
                         f"got {tuple(images.shape)}")
    batch = batch.float()
    if not bool(torch.isfinite(batch).all()):
        raise ValueError("images hold NaN or infinite values")
    return batch


def known_pixel_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """bool (or 0/1) [H, W] / [B, H, W] -> bool [B, size, size], True = known."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"known_mask must be a tensor, got {type(mask).__name__}")
    batch = mask if mask.dim() == 3 else mask[None]
    if mask.dim() not in (2, 3) or tuple(batch.shape[1:]) != (size, size):
        raise ValueError(f"known_mask must be [{size}, {size}] or [B, {size}, {size}], got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((batch == 0) | (batch == 1)).all()):
            raise ValueError("known_mask must be bool, or hold only 0 and 1 (1 = known)")
        batch = batch == 1
    return batch


@torch.no_grad()
def complete(model: FractalGen, images: torch.Tensor, known_mask: torch.Tensor, labels=None, *,
             batch_size: int = 16, output: str = "uint8", **options) -> torch.Tensor:
    """Generates the unknown pixels of `images` (inpainting, outpainting, uncropping; under
    another label: class-conditional editing). Known pixels come back bit-exactly.

    images: uint8 [B, H, W, C] (as `generate` returns them and PNGs load) or normalised float
        [B, C, H, W], C the model's channels; a single image without the batch dimension.
    known_mask: bool [H, W] (the same for every image) or [B, H, W]; True = keep, False = generate
        (fractal_ext.editing.box_mask, border_mask, centre_crop_mask make the usual ones).
    labels: one class per image, or None: unconditional (the `fake_latent` condition, cfg 1).
        One image with several labels is edited under each of them; one label applies to all.
    options: as `generate` takes them (generator, greedy, raster_order, implementation,
        precision, cuda_graphs, progress and the sampling settings num_iter_list, cfg,
        cfg_schedule, temperature, filter_threshold). output: "uint8" [B, H, W, C] or
        "normalised" [B, C, H, W].
    An image whose every pixel is known comes back unchanged without any generation; with no
    pixel known the result is what `generate` samples with the same generator."""
    size = model.config.img_size_list[0]
    device = next(model.parameters()).device
    pixels = normalised_images(images, model).to(device)
    mask = known_pixel_mask(known_mask, size).to(device)
    if labels is not None:
        labels = torch.as_tensor(labels, device=device)
        labels = labels.reshape(1) if labels.dim() == 0 else labels
        if labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
    counts = {pixels.shape[0], mask.shape[0]} | ({labels.shape[0]} if labels is not None else set())
    count = max(counts)
    if not counts <= {1, count}:
        raise ValueError(f"images ({pixels.shape[0]}), masks ({mask.shape[0]}) and labels "
                         f"({'none' if labels is None else labels.shape[0]}) must come in the same number, or one")
    known = KnownPixels(pixels.expand(count, -1, -1, -1).contiguous(), mask.expand(count, -1, -1).contiguous())
    if labels is not None:
        labels = labels.expand(count)
    return generate(model, labels, batch_size=batch_size, output=output, known=known, **options)
