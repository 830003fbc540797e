"""`--animate out.gif` of the sampling and editing commands: the canvas after every level-0 step,
as a grid per frame (pixels not generated yet shown grey)."""
import torch

from fractal_ext.io.images import image_grid, save_animation

NOT_YET_SHOWN_AS = 128


class CanvasRecorder:
    """The `on_step` of `generate` / `complete`: keeps each chunk's canvases as uint8 images."""

    def __init__(self, model):
        self.model = model
        self.chunks = {}  # first image index -> [uint8 [n, H, W, C] per step]

    def __call__(self, first: int, images: torch.Tensor, generated: torch.Tensor):
        pixels = self.model.normalisation.to_uint8(images.float()).permute(0, 2, 3, 1)
        shown = torch.where(generated[..., None], pixels, torch.tensor(NOT_YET_SHOWN_AS, dtype=torch.uint8,
                                                                        device=pixels.device))
        self.chunks.setdefault(first, []).append(shown.cpu())

    def save(self, path, columns: int, scale: int):
        """One frame per step: every chunk's canvas at that step (a chunk that finished stays at its
        last one), then the final images."""
        chunks = [self.chunks[first] for first in sorted(self.chunks)]
        steps = max(len(canvases) for canvases in chunks)
        frames = []
        for step in range(steps):
            images = torch.cat([canvases[min(step, len(canvases) - 1)] for canvases in chunks])
            grid = image_grid(images, columns=columns, background=255)
            frames.append(grid.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1))
        return save_animation(frames, path)
