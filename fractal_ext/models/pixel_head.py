"""The pixel head (official name `PixelLoss`): models the C channel values of one pixel.

A (C+1)-token causal transformer over [condition, channel 0, ..., channel C-1] (the official
models: [condition, R, G, B]): the logits of channel 0 come from the condition alone, channel c
from the condition and channels < c, each a 256-way softmax whose output layer is tied to that
channel's codebook. Channel c's codebook and output layer are named after "rgba"[c]
(r_codebook, r_mlm, ...: the official names for 3 channels).
"""
import torch
import torch.nn.functional as F
from torch import nn

from fractal_ext.ops import reference
from fractal_ext.pixels import IMAGENET, VOCAB_SIZE, Normalisation
from fractal_ext.models.layers import ViTBlock, init_linear_and_norm
from fractal_ext.settings import SamplingControls

CHANNEL_NAMES = "rgba"


class MlmLayer(nn.Module):
    """Output layer tied to a codebook: logits = x @ codebook^T + bias."""

    def __init__(self, vocab_size: int = VOCAB_SIZE):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, vocab_size))

    def forward(self, x, codebook_weight):
        return x @ codebook_weight.transpose(0, 1) + self.bias


class PixelLoss(nn.Module):
    def __init__(self, c_channels: int, width: int, depth: int, num_heads: int, r_weight: float = 1.0,
                 normalisation: Normalisation = IMAGENET):
        super().__init__()
        self.r_weight = r_weight
        self.channels = normalisation.channels
        self.pixel_mean, self.pixel_std = normalisation.mean, normalisation.std
        names = CHANNEL_NAMES[: self.channels]
        self.cond_proj = nn.Linear(c_channels, width)
        for name in names:  # registered in the official order: codebooks, norms and blocks, output layers
            setattr(self, f"{name}_codebook", nn.Embedding(VOCAB_SIZE, width))
        self.ln = nn.LayerNorm(width, eps=1e-6)
        self.blocks = nn.ModuleList([ViTBlock(width, num_heads, causal=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        for name in names:
            setattr(self, f"{name}_mlm", MlmLayer())
        self.register_buffer("pix_mean", torch.tensor(self.pixel_mean).reshape(1, -1), persistent=False)
        self.register_buffer("pix_std", torch.tensor(self.pixel_std).reshape(1, -1), persistent=False)
        self.apply(init_linear_and_norm)
        for codebook in self.codebooks:
            nn.init.normal_(codebook.weight, std=0.02)

    @property
    def codebooks(self):
        return tuple(getattr(self, f"{name}_codebook") for name in CHANNEL_NAMES[: self.channels])

    @property
    def mlms(self):
        return tuple(getattr(self, f"{name}_mlm") for name in CHANNEL_NAMES[: self.channels])

    def to_tokens(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised pixels [N, C] -> integers [N, C]. A 0.01-sigma noise before rounding breaks
        the ties of round-half-to-even (the official recipe; it never moves an exact k/255)."""
        scaled = (pixels * self.pix_std + self.pix_mean) * 255
        noise = torch.randn(scaled.shape, generator=generator, device=scaled.device, dtype=scaled.dtype)
        return (scaled + 1e-2 * noise).round().long()

    def logits_from_tokens(self, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """cond [N, c_channels], tokens [N, C] -> logits [N, C, 256] (fp32). Causal: the logits of
        channel i depend only on tokens < i."""
        x = torch.cat(
            [self.cond_proj(cond).unsqueeze(1)]
            + [codebook(tokens[:, i : i + 1]) for i, codebook in enumerate(self.codebooks)],
            dim=1,
        )
        x = self.ln(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = [
                mlm(x[:, i].float(), codebook.weight.float())
                for i, (mlm, codebook) in enumerate(zip(self.mlms, self.codebooks))
            ]
        return torch.stack(logits, dim=1)

    def predict(self, target, cond_list, generator: torch.Generator | None = None):
        """Teacher forcing: target pixels [N, C] (or [N, C, 1, 1]) -> (logits [N, C, 256], tokens)."""
        tokens = self.to_tokens(target.reshape(target.shape[0], self.channels), generator)
        return self.logits_from_tokens(cond_list[0], tokens), tokens

    def forward(self, target, cond_list, generator: torch.Generator | None = None):
        logits, tokens = self.predict(target, cond_list, generator)
        losses = [F.cross_entropy(logits[:, i], tokens[:, i]) for i in range(self.channels)]
        # Channel 0 weighs r_weight in training (the official recipe), the others 1; eval: the mean.
        if self.training:
            return sum(losses[1:], self.r_weight * losses[0]) / (self.r_weight + self.channels - 1)
        return sum(losses[1:], losses[0]) / self.channels

    @torch.no_grad()
    def sample(self, cond_list, temperature, cfg, filter_threshold=0, controls: SamplingControls | None = None,
               known=None):
        """cond_list[0] [R, c_channels] (R = 2n with CFG: conditional rows first) -> pixels [n, C].
        `known` (editing: KnownPixels of n 1x1 images): a known pixel is copied, not drawn."""
        controls = controls or SamplingControls()
        cond = cond_list[0]
        guided = float(cfg) != 1.0
        rows = cond.shape[0] // 2 if guided else cond.shape[0]
        tokens = torch.zeros(cond.shape[0], self.channels, dtype=torch.long, device=cond.device)
        pixels = torch.zeros(rows, self.channels, device=cond.device)
        cfg_per_row = torch.full((rows,), float(cfg), device=cond.device) if guided else None
        for channel in range(self.channels):
            logits = self.logits_from_tokens(cond, tokens)[:, channel]
            ids, values = reference.cfg_filter_sample(
                logits, cfg_per_row, temperature, filter_threshold, self.pixel_mean[channel], self.pixel_std[channel],
                controls.greedy, controls.generator
            )
            # Both halves of a CFG pair continue with the same drawn value.
            tokens[:, channel] = ids.repeat(2) if guided else ids
            pixels[:, channel] = values
        if known is not None:
            pixels = torch.where(known.mask.reshape(rows, 1), known.pixels.reshape(rows, self.channels), pixels)
        return pixels
