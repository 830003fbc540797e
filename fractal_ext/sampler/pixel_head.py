"""Fast pixel head: the (C+1)-token causal transformer decoded with a KV cache, one new token per
channel (C token passes instead of C full passes), and the guided-sampling operator drawing each
channel and producing its pixel value directly."""
import torch
import torch.nn.functional as F

from fractal_ext import ops
from fractal_ext.models.pixel_head import PixelLoss
from fractal_ext.sampler.decode import layer_norm, matmul_dtype, vit_block_decode, vit_block_weights
from fractal_ext.sampler.graphs import buffers_key
from fractal_ext.sampler.plan import SamplingRun
from fractal_ext.sampler.workspace import Workspace


class FastPixelHead:
    def __init__(self, head: PixelLoss, workspace: Workspace):
        self.head = head
        self.workspace = workspace
        first = head.blocks[0].attn if len(head.blocks) else None
        self.num_heads = first.num_heads if first else 1
        self.head_dim = head.ln.normalized_shape[0] // self.num_heads

    def sample(self, cond: torch.Tensor, cfg, run: SamplingRun, known=None) -> torch.Tensor:
        """cond [R, c_channels] (R = 2n with guidance, conditional rows first) -> pixels [n, C].
        `cfg`: one scale, or one per image ([n], editing runs). `known` (editing: KnownPixels of
        n 1x1 images): a known pixel is copied; its draw, made with the others (fixed shapes), is
        dropped."""
        head = self.head
        rows = cond.shape[0]
        n = rows // 2 if run.guided else rows
        cfg_rows = None
        if run.guided:
            cfg_rows = cfg.float() if isinstance(cfg, torch.Tensor) else torch.full((n,), float(cfg), device=cond.device)
        channels = head.channels
        pixels = torch.empty(n, channels, device=cond.device)
        token = F.linear(cond, head.cond_proj.weight, head.cond_proj.bias)
        blocks = [(vit_block_weights(block, rows, run.paths, self.workspace), block.attn.scale)
                  for block in head.blocks]
        caches = [
            self.workspace.kv_cache(("pixel_head", id(self), index), rows, self.num_heads, channels,
                                    run.paths.cache_head_dim(self.head_dim), matmul_dtype(token), token.device)
            for index in range(len(blocks))
        ]
        for channel in range(channels):
            positions = self.workspace.positions(channel, rows, cond.device)

            def channel_logits(token, positions, channel=channel):
                """The token at sequence position `channel` -> the logits of that channel [R, 256]."""
                x = layer_norm(token, head.ln)
                for (block_weights, scale), block_caches in zip(blocks, caches):
                    x = vit_block_decode(x, block_weights, block_caches, positions, scale)
                codebook, mlm = head.codebooks[channel], head.mlms[channel]
                with torch.autocast(device_type=token.device.type, enabled=False):
                    return torch.addmm(mlm.bias.float(), layer_norm(x, head.norm).float(), codebook.weight.float().t())

            # The draw stays outside the replayed step (see fractal_ext.sampler.graphs).
            key = ("pixel_head", id(self), channel, rows, token.dtype, buffers_key(caches))
            logits = run.graphs.run(key, channel_logits, token, positions)
            ids, values = ops.cfg_filter_sample(logits, cfg_rows, run.temperature, run.filter_threshold,
                                                head.pixel_mean[channel], head.pixel_std[channel],
                                                run.controls.greedy, run.controls.generator)
            pixels[:, channel] = values
            if channel + 1 < channels:
                token = F.embedding(torch.cat([ids, ids]) if run.guided else ids, head.codebooks[channel].weight)
        if known is not None:
            pixels = torch.where(known.mask.reshape(n, 1), known.pixels.reshape(n, channels), pixels)
        return pixels
