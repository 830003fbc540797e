"""Known-pixel masks for the usual edits: [H, W] bool, True = keep the pixel, False = generate it."""
import torch


def _check_size(size: int) -> int:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return size


def box_mask(size: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """Inpainting: every pixel known except the box of columns [x0, x1) and rows [y0, y1)."""
    _check_size(size)
    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
        raise ValueError(f"the box x0,y0,x1,y1 = {x0},{y0},{x1},{y1} must satisfy 0 <= x0 < x1 <= {size} and "
                         f"0 <= y0 < y1 <= {size}")
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = False
    return mask


def border_mask(size: int, width: int) -> torch.Tensor:
    """Outpainting: the image's border of `width` pixels is generated, the inside kept."""
    _check_size(size)
    if not (isinstance(width, int) and 1 <= width and 2 * width < size):
        raise ValueError(f"the border width must be an integer in [1, {(size - 1) // 2}] for {size}x{size} images, "
                         f"got {width!r}")
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[width:size - width, width:size - width] = True
    return mask


def centre_crop_mask(size: int, crop: int) -> torch.Tensor:
    """Uncropping: the centred `crop` x `crop` square is kept, everything around it generated."""
    _check_size(size)
    if not (isinstance(crop, int) and 1 <= crop < size):
        raise ValueError(f"the crop must be an integer in [1, {size - 1}] for {size}x{size} images, got {crop!r}")
    start = (size - crop) // 2
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[start:start + crop, start:start + crop] = True
    return mask


def lower_half_mask(size: int) -> torch.Tensor:
    """The lower half generated, the upper half kept."""
    return box_mask(size, 0, size // 2, size, size)
