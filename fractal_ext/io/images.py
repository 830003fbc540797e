"""Image files: sampled images written as PNG grids and one PNG per image (uint8 [.., H, W, C], as
fractal_ext.sampler.generate returns them: C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA), and the images and masks an edit reads. Every file is
written atomically; its format comes from its extension, checked before any work by `image_format`."""
import math
from pathlib import Path

import numpy as np
import torch

from fractal_ext.io.atomic import write_atomically

# Larger grids would take gigabytes to build and encode: refused before the sampling.
MAX_GRID_PIXELS = 2**28
# Pillow's mode of images of C channels, and the conversions that lose nothing.
IMAGE_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
LOSSLESS_CONVERSIONS = {("L", "LA"), ("L", "RGB"), ("L", "RGBA"), ("LA", "RGBA"), ("RGB", "RGBA")}


def image_format(path) -> str:
    """The Pillow format that `path`'s extension names (".png" -> "PNG"); ValueError otherwise."""
    from PIL import Image

    formats = Image.registered_extensions()
    suffix = Path(path).suffix.lower()
    if suffix not in formats or formats[suffix] not in Image.SAVE:
        raise ValueError(f"{path}: the file name must end in an image extension Pillow writes (.png, .jpg, "
                         f".webp, ...), got {suffix or 'none'!r}")
    return formats[suffix]


def grid_shape(count: int, height: int, width: int, columns: int, padding: int = 2, scale: int = 1) -> tuple:
    """(height, width) of the grid image_grid / save_grid_png make; ValueError beyond MAX_GRID_PIXELS."""
    rows = max(1, math.ceil(count / columns))
    shape = ((rows * (height + padding) + padding) * scale, (columns * (width + padding) + padding) * scale)
    if shape[0] * shape[1] > MAX_GRID_PIXELS:
        raise ValueError(f"the grid would be {shape[1]} x {shape[0]} pixels, more than {MAX_GRID_PIXELS}: "
                         "lower --scale or the number of images")
    return shape


def image_grid(images_hwc: torch.Tensor, columns: int | None = None, padding: int = 2,
               background: int = 0) -> torch.Tensor:
    """uint8 [B, H, W, C] -> one uint8 [rows*(H+p)+p, columns*(W+p)+p, C] grid on `background`
    (opaque where there is an alpha channel)."""
    count, height, width, channels = images_hwc.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    grid = torch.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
                      background, dtype=torch.uint8)
    if channels in (2, 4):
        grid[..., -1] = 255
    for index, image in enumerate(images_hwc.cpu()):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_png(image_hwc: torch.Tensor, path) -> Path:
    """uint8 [H, W, C] -> an image file in the format of its extension, written atomically."""
    from PIL import Image

    pixels = image_hwc.cpu().numpy()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, mode=IMAGE_MODES[pixels.shape[-1]])
    image_format_name = image_format(path)
    return write_atomically(path, lambda stream: image.save(stream, format=image_format_name))


def save_grid_png(images_hwc: torch.Tensor, rows: int, path, pad: int = 2, scale: int = 1) -> Path:
    """uint8 [N, H, W, C] -> one PNG, `rows` rows (row-major), `pad` white pixels between images,
    upscaled `scale` times (nearest)."""
    n = images_hwc.shape[0]
    grid_shape(n, images_hwc.shape[1], images_hwc.shape[2], -(-n // rows), pad, scale)
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


def read_image(path, channels: int = 3) -> torch.Tensor:
    """An image file -> uint8 [H, W, channels] for a model of `channels`. What converts without
    loss is converted: grey to RGB (replicated, as the Fashion-MNIST data is), no alpha to an
    opaque one, RGB whose channels are equal to grey; anything else is refused."""
    from PIL import Image, UnidentifiedImageError

    wanted = IMAGE_MODES[channels]
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            mode = image.mode
            if mode == "RGB" and channels in (1, 2):
                array = np.array(image)
                if not (array == array[..., :1]).all():
                    raise ValueError(f"{path}: the model takes grey images, got a colour (RGB) image")
            elif mode != wanted and (mode, wanted) not in LOSSLESS_CONVERSIONS:
                raise ValueError(f"{path}: the model takes {channels}-channel images ({wanted}), got mode {mode} "
                                 "(convert it first)")
            array = np.array(image.convert(wanted))
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow reads") from None
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array)


def read_binary_mask(path) -> torch.Tensor:
    """A black-and-white image file -> bool [H, W], True where it is white. Every pixel must be
    black (0) or white (255) in every channel: anything else is refused, not thresholded."""
    pixels = read_image(path, 3)
    if not bool((pixels == pixels[..., :1]).all()):
        raise ValueError(f"{path}: a mask must be black and white, got coloured pixels")
    grey = pixels[..., 0]
    if not bool(((grey == 0) | (grey == 255)).all()):
        values = sorted(set(grey.unique().tolist()) - {0, 255})[:5]
        raise ValueError(f"{path}: a mask must hold only black (0) and white (255) pixels, got also {values}")
    return grey == 255


def save_animation(frames_hwc, path, frame_ms: int = 150, last_frame_ms: int = 1500) -> Path:
    """uint8 frames [H, W, C] -> an animated GIF (alpha dropped), written atomically; the last
    frame is held longer."""
    from PIL import Image

    if Path(path).suffix.lower() != ".gif":
        raise ValueError(f"{path}: an animation is written as a GIF: the file name must end in .gif")
    frames = [Image.fromarray(frame.cpu().numpy()[..., :3] if frame.shape[-1] >= 3 else frame.cpu().numpy()[..., 0])
              for frame in frames_hwc]
    durations = [frame_ms] * (len(frames) - 1) + [last_frame_ms]
    return write_atomically(path, lambda stream: frames[0].save(
        stream, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0))
