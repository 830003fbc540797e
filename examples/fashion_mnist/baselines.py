"""A simple likelihood baseline measured in the same units as the models: an independent
per-pixel histogram. Bits per dimension are over the C*H*W dimensions of C-channel images, as the
models' NLL (docs/semantics.md: eval loss = mean cross-entropy over the channels)."""
import math

import torch


class PixelHistogram:
    """Each pixel position gets its own 256-bin histogram, fit on training images with add-`alpha`
    smoothing; pixels are independent of each other.

    channels='independent': each (position, channel) has its own histogram.
    channels='tied': for grey images repeated into the channels (Fashion-MNIST for an RGB model):
    one histogram of the grey value per position, and the other channels (equal to the first)
    cost nothing. This is the per-pixel model a per-pixel head can reach on such data; `nll`
    refuses images whose channels differ. For 1-channel images both are the same.
    image_channels: the channels of the images (3 for the RGB models, 1 for grey ones)."""

    def __init__(self, height: int, width: int, channels: str = "tied", alpha: float = 1.0, image_channels: int = 3):
        if channels not in ("independent", "tied"):
            raise ValueError(f"channels must be 'independent' or 'tied', got {channels!r}")
        self.channels = channels
        self.alpha = alpha
        self.image_channels = image_channels
        planes = 1 if channels == "tied" else image_channels
        self.counts = torch.zeros(planes, height, width, 256, dtype=torch.float64)

    def _planes(self, images_u8: torch.Tensor) -> torch.Tensor:
        c = self.image_channels
        if images_u8.dtype != torch.uint8 or images_u8.dim() != 4 or images_u8.shape[1] != c:
            raise ValueError(f"images must be uint8 [B, {c}, H, W], got {images_u8.dtype} {tuple(images_u8.shape)}")
        if self.channels == "tied":
            if not bool((images_u8 == images_u8[:, :1]).all()):
                raise ValueError("channels='tied' needs grey images (every channel equal)")
            return images_u8[:, :1]
        return images_u8

    def fit(self, batches):
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            values = self._planes(images).long()  # [B, P, H, W]
            self.counts.scatter_add_(-1, values.permute(1, 2, 3, 0), torch.ones(values.permute(1, 2, 3, 0).shape,
                                                                                 dtype=torch.float64))
        return self

    def log_probs(self) -> torch.Tensor:
        smoothed = self.counts + self.alpha
        return (smoothed / smoothed.sum(-1, keepdim=True)).log()

    def bits_per_dim(self, batches) -> float:
        """Mean NLL in bits per dimension (C*H*W dimensions per image) over the images."""
        log_probs = self.log_probs()
        total_nats, dims = 0.0, 0
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            values = self._planes(images).long()  # [B, P, H, W]
            picked = log_probs.unsqueeze(0).expand(values.shape[0], -1, -1, -1, -1).gather(-1, values.unsqueeze(-1))
            total_nats -= float(picked.sum())
            dims += images[0].numel() * images.shape[0]
        return total_nats / dims / math.log(2)
