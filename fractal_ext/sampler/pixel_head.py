"""Fast pixel head: the 4-token causal transformer decoded with a KV cache, one new token per
channel (3 token passes instead of 3 full 4-token passes), and the guided-sampling operator
drawing each channel and producing its pixel value directly."""
import torch
import torch.nn.functional as F

from fractal_ext import ops
from fractal_ext.models.pixel_head import NUM_CHANNELS, PixelLoss
from fractal_ext.sampler.options import SamplingRun
from fractal_ext.sampler.workspace import Workspace


class FastPixelHead:
    def __init__(self, head: PixelLoss, workspace: Workspace):
        self.head = head
        self.workspace = workspace
        first = head.blocks[0].attn if len(head.blocks) else None
        self.num_heads = first.num_heads if first else 1
        self.head_dim = head.ln.normalized_shape[0] // self.num_heads

    def sample(self, cond: torch.Tensor, cfg: float, run: SamplingRun) -> torch.Tensor:
        """cond [R, c_channels] (R = 2n with guidance, conditional rows first) -> pixels [n, 3]."""
        head = self.head
        rows = cond.shape[0]
        n = rows // 2 if run.guided else rows
        cfg_rows = torch.full((n,), float(cfg), device=cond.device) if run.guided else None
        pixels = torch.empty(n, NUM_CHANNELS, device=cond.device)
        token = head.cond_proj(cond)
        for channel in range(NUM_CHANNELS):
            x = head.ln(token).unsqueeze(1)  # [R, 1, W]: the token at sequence position `channel`
            for index, block in enumerate(head.blocks):
                x = x + self._attend(block.attn, block.norm1(x), index, channel)
                x = x + block.mlp(block.norm2(x))
            with torch.autocast(device_type=cond.device.type, enabled=False):
                codebook, mlm = head.codebooks[channel], head.mlms[channel]
                logits = F.linear(head.norm(x[:, 0]).float(), codebook.weight.float(), mlm.bias.float()[0])
            ids, values = ops.cfg_filter_sample(logits, cfg_rows, run.temperature, run.filter_threshold, channel,
                                                run.controls.greedy, run.controls.generator)
            pixels[:, channel] = values
            if channel + 1 < NUM_CHANNELS:
                token = codebook(torch.cat([ids, ids]) if run.guided else ids)
        return pixels

    def _attend(self, attn, x, block_index: int, position: int):
        rows = x.shape[0]
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(rows, 1, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)
        k_cache, v_cache = self.workspace.kv_cache(
            ("pixel_head", id(self), block_index), rows, self.num_heads, NUM_CHANNELS, self.head_dim, x.dtype, x.device
        )
        positions = self.workspace.positions(position, rows, x.device)
        out = ops.kv_cache_attention(q, k, v, k_cache, v_cache, positions, attn.scale)
        return attn.proj(out.reshape(rows, 1, -1))
