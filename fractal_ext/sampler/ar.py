"""Fast AR level: one token per step through the LLaMA blocks, attending with the KV-cache
operator over the valid prefix only; caches allocated once per sampling run."""
import math

import torch
import torch.nn.functional as F

from fractal_ext import ops, reference
from fractal_ext.models.ar import AR
from fractal_ext.models.layers import apply_rope
from fractal_ext.models.schedules import ar_cfg_schedule
from fractal_ext.sampler.options import SamplingRun
from fractal_ext.sampler.workspace import Workspace


class FastAR:
    def __init__(self, generator: AR, next_level, level: int, workspace: Workspace):
        self.gen = generator
        self.next_level = next_level
        self.level = level
        self.workspace = workspace
        self.scale = 1.0 / math.sqrt(generator.head_dim)

    def sample(self, conds: torch.Tensor, cfg: float, cfg_schedule: str, run: SamplingRun) -> torch.Tensor:
        """conds [K, R, C] (AR uses the first) -> images [n, 3, H, W] of this level."""
        gen = self.gen
        cond = conds[0]
        rows = cond.shape[0]
        n = rows // 2 if run.guided else rows
        patches = torch.zeros(n, gen.seq_len, 3 * gen.patch_size**2, device=cond.device, dtype=cond.dtype)
        pos = gen.pos_embed_learned[0]
        token = gen.patch_emb_ln(gen.cond_emb(cond) + pos[0])  # position 0: the condition
        for step, cfg_step in enumerate(ar_cfg_schedule(gen.seq_len, float(cfg), cfg_schedule)):
            out = self._decode(token, step)
            patch = self.next_level.sample(out.unsqueeze(0), cfg_step, "constant", run)
            patch = patch.reshape(n, -1)
            patches[:, step] = patch
            if step + 1 < gen.seq_len:
                token = gen.patch_emb_ln(gen.patch_emb(torch.cat([patch, patch]) if run.guided else patch) + pos[step + 1])
            if self.level == 0 and run.on_top_level_step:
                run.on_top_level_step()
        return reference.unpatchify(patches, gen.patch_size)

    def _decode(self, token, position: int):
        """token [R, D] at sequence `position` -> its output [R, D], caches extended by one."""
        gen = self.gen
        rows = token.shape[0]
        rope = gen.rope_table[position : position + 1]
        cache_positions = self.workspace.positions(position, rows, token.device)
        x = token.unsqueeze(1)
        for index, block in enumerate(gen.blocks):
            attention = block.attention
            h = block.attention_norm(x)
            q, k, v = F.linear(h, attention.wqkv.weight).view(rows, 1, 3, gen.num_heads, gen.head_dim).unbind(2)
            q, k = apply_rope(q, rope), apply_rope(k, rope)
            k_cache, v_cache = self.workspace.kv_cache(
                ("ar", self.level, index), rows, gen.num_heads, gen.seq_len, gen.head_dim, q.dtype, q.device
            )
            out = ops.kv_cache_attention(q, k, v, k_cache, v_cache, cache_positions, self.scale)
            x = x + attention.wo(out.reshape(rows, 1, -1))
            x = x + block.feed_forward(block.ffn_norm(x))
        return gen.norm(x[:, 0])
