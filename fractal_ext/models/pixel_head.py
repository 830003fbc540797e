"""The pixel head (official name `PixelLoss`): models the 3 channel values of one pixel.

A 4-token causal transformer over [condition, R, G, B]: the logits of R come from the condition
alone, G from (condition, R), B from (condition, R, G), each a 256-way softmax whose output
layer is tied to that channel's codebook.
"""
import torch
import torch.nn.functional as F
from torch import nn

from fractal_ext.ops import reference
from fractal_ext.pixels import PIXEL_MEAN, PIXEL_STD, VOCAB_SIZE
from fractal_ext.models.layers import ViTBlock, init_linear_and_norm
from fractal_ext.settings import SamplingControls

NUM_CHANNELS = 3


class MlmLayer(nn.Module):
    """Output layer tied to a codebook: logits = x @ codebook^T + bias."""

    def __init__(self, vocab_size: int = VOCAB_SIZE):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, vocab_size))

    def forward(self, x, codebook_weight):
        return x @ codebook_weight.transpose(0, 1) + self.bias


class PixelLoss(nn.Module):
    def __init__(self, c_channels: int, width: int, depth: int, num_heads: int, r_weight: float = 1.0):
        super().__init__()
        self.r_weight = r_weight
        self.cond_proj = nn.Linear(c_channels, width)
        self.r_codebook = nn.Embedding(VOCAB_SIZE, width)
        self.g_codebook = nn.Embedding(VOCAB_SIZE, width)
        self.b_codebook = nn.Embedding(VOCAB_SIZE, width)
        self.ln = nn.LayerNorm(width, eps=1e-6)
        self.blocks = nn.ModuleList([ViTBlock(width, num_heads, causal=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.r_mlm = MlmLayer()
        self.g_mlm = MlmLayer()
        self.b_mlm = MlmLayer()
        self.register_buffer("pix_mean", torch.tensor(PIXEL_MEAN).reshape(1, 3), persistent=False)
        self.register_buffer("pix_std", torch.tensor(PIXEL_STD).reshape(1, 3), persistent=False)
        self.apply(init_linear_and_norm)
        for codebook in (self.r_codebook, self.g_codebook, self.b_codebook):
            nn.init.normal_(codebook.weight, std=0.02)

    @property
    def codebooks(self):
        return (self.r_codebook, self.g_codebook, self.b_codebook)

    @property
    def mlms(self):
        return (self.r_mlm, self.g_mlm, self.b_mlm)

    def to_tokens(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised pixels [N, 3] -> integers [N, 3]. A 0.01-sigma noise before rounding breaks
        the ties of round-half-to-even (the official recipe; it never moves an exact k/255)."""
        scaled = (pixels * self.pix_std + self.pix_mean) * 255
        noise = torch.randn(scaled.shape, generator=generator, device=scaled.device, dtype=scaled.dtype)
        return (scaled + 1e-2 * noise).round().long()

    def logits_from_tokens(self, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """cond [N, c_channels], tokens [N, 3] -> logits [N, 3, 256] (fp32). Causal: the logits of
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
        """Teacher forcing: target pixels [N, 3] (or [N, 3, 1, 1]) -> (logits [N, 3, 256], tokens)."""
        tokens = self.to_tokens(target.reshape(target.shape[0], NUM_CHANNELS), generator)
        return self.logits_from_tokens(cond_list[0], tokens), tokens

    def forward(self, target, cond_list, generator: torch.Generator | None = None):
        logits, tokens = self.predict(target, cond_list, generator)
        losses = [F.cross_entropy(logits[:, i], tokens[:, i]) for i in range(NUM_CHANNELS)]
        if self.training:
            return (self.r_weight * losses[0] + losses[1] + losses[2]) / (self.r_weight + 2)
        return (losses[0] + losses[1] + losses[2]) / 3

    @torch.no_grad()
    def sample(self, cond_list, temperature, cfg, filter_threshold=0, controls: SamplingControls | None = None,
               known=None):
        """cond_list[0] [R, c_channels] (R = 2n with CFG: conditional rows first) -> pixels [n, 3].
        `known` (editing: KnownPixels of n 1x1 images): a known pixel is copied, not drawn."""
        controls = controls or SamplingControls()
        cond = cond_list[0]
        guided = float(cfg) != 1.0
        rows = cond.shape[0] // 2 if guided else cond.shape[0]
        tokens = torch.zeros(cond.shape[0], NUM_CHANNELS, dtype=torch.long, device=cond.device)
        pixels = torch.zeros(rows, NUM_CHANNELS, device=cond.device)
        cfg_per_row = torch.full((rows,), float(cfg), device=cond.device) if guided else None
        for channel in range(NUM_CHANNELS):
            logits = self.logits_from_tokens(cond, tokens)[:, channel]
            ids, values = reference.cfg_filter_sample(
                logits, cfg_per_row, temperature, filter_threshold, channel, controls.greedy, controls.generator
            )
            # Both halves of a CFG pair continue with the same drawn value.
            tokens[:, channel] = ids.repeat(2) if guided else ids
            pixels[:, channel] = values
        if known is not None:
            pixels = torch.where(known.mask.reshape(rows, 1), known.pixels.reshape(rows, NUM_CHANNELS), pixels)
        return pixels
