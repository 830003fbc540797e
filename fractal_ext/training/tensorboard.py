"""TensorBoard logging of a training run (main process only), beside the JSON log: the loss, the
learning rate and the gradient norm every `--log_freq` steps, and the online evaluation's metrics
and a grid of its first samples. Written to OUTPUT_DIR/tensorboard (`tensorboard --logdir`)."""
from pathlib import Path

import torch


class TensorBoardLog:
    """`folder` None: logs nothing. Every rank checks that the package is there (so that all stop
    when it is not); only the main process (`writes`) writes."""

    def __init__(self, folder: Path | None, writes: bool = True):
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard), "
                             "or leave --tensorboard out") from None
        if writes:
            self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, step: int, prefix: str, **values):
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def evaluation(self, step: int, metrics: dict, grid: torch.Tensor):
        """metrics: {feature space: {frechet_distance, inception_score, precision, recall, ...}};
        grid: the first samples, uint8 [N, H, W, C]."""
        if self.writer is None:
            return
        from fractal_ext.io.images import image_grid

        for space, values in metrics.items():
            self.scalars(step, f"eval_{space}", **{key: values[key] for key in
                                                    ("frechet_distance", "inception_score", "precision", "recall")})
        picture = image_grid(grid, padding=1, background=255)
        if picture.shape[-1] in (2, 4):
            picture = picture[..., :-1]  # colour only
        self.writer.add_image("eval/samples", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
