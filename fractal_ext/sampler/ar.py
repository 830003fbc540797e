"""Fast AR level: one token per step through the LLaMA blocks, attending with the KV-cache
operator over the valid prefix only; caches allocated once per sampling run."""
import math

import torch

from fractal_ext import ops
from fractal_ext.models.ar import AR
from fractal_ext.models.known import KnownPixels, token_mask_to_pixels
from fractal_ext.models.schedules import ar_cfg_schedule
from fractal_ext.ops import reference
from fractal_ext.sampler.decode import (attention_on_caches, layer_norm, llama_block_decode, llama_block_weights,
                                          matmul_dtype)
from fractal_ext.sampler.graphs import buffers_key
from fractal_ext.sampler.plan import SamplingRun
from fractal_ext.sampler.workspace import Workspace


class FastAR:
    def __init__(self, generator: AR, next_level, level: int, workspace: Workspace):
        self.gen = generator
        self.next_level = next_level
        self.level = level
        self.workspace = workspace
        self.scale = 1.0 / math.sqrt(generator.head_dim)

    def sample(self, conds: torch.Tensor, cfg, cfg_schedule: str, run: SamplingRun, known=None) -> torch.Tensor:
        """conds [K, R, C] (AR uses the first) -> images [n, C, H, W] of this level. `cfg`: one
        scale, or one per image ([n], below level 0 in editing runs). `known` (editing): every
        row's patch at a step goes to the next level with its known pixels (a fully known one
        comes back as it is); a position known in every row the level can be given is
        teacher-forced without calling the next level."""
        gen = self.gen
        cond = conds[0]
        rows = cond.shape[0]
        n = rows // 2 if run.guided else rows
        patches = torch.zeros(n, gen.seq_len, gen.channels * gen.patch_size**2, device=cond.device, dtype=cond.dtype)
        pos = gen.pos_embed_learned[0]
        token = layer_norm(gen.cond_emb(cond) + pos[0], gen.patch_emb_ln)  # position 0: the condition
        blocks, caches = self.blocks_and_caches(token, run)
        if isinstance(cfg, torch.Tensor):  # per image: only below level 0, where the schedule is constant
            cfg_steps = [cfg] * gen.seq_len
        else:
            cfg_steps = ar_cfg_schedule(gen.seq_len, float(cfg), cfg_schedule)
        if known is not None:
            known_patches, pixel_mask = known.tokens(gen.patch_size)
            teacher_forced = run.editing.levels[self.level].always_known
        step = 0
        while step < gen.seq_len:
            if known is not None and step in teacher_forced:
                end = step
                while end < gen.seq_len and end in teacher_forced:
                    end += 1
                patches[:, step:end] = known_patches[:, step:end].to(patches.dtype)
                if end < gen.seq_len:
                    token = self.teacher_force(token, step, end, patches, blocks, caches, run)
                for position in range(step, end):
                    self.after_top_level_step(patches, position, run)
                step = end
                continue
            out = self.decode(token, step, blocks, caches, run)
            next_known = None if known is None else KnownPixels.from_tokens(
                known_patches[:, step], pixel_mask[:, step], gen.patch_size)
            patch = self.next_level.sample(out.unsqueeze(0), cfg_steps[step], "constant", run, next_known)
            patch = patch.reshape(n, -1)
            patches[:, step] = patch
            if step + 1 < gen.seq_len:
                both_halves = torch.cat([patch, patch]) if run.guided else patch
                token = layer_norm(gen.patch_emb(both_halves) + pos[step + 1], gen.patch_emb_ln)
            self.after_top_level_step(patches, step, run)
            step += 1
        return ops.unpatchify(patches, gen.patch_size)

    def blocks_and_caches(self, token, run: SamplingRun):
        """The blocks' weights and KV caches for `token`'s rows, looked up once per call."""
        gen = self.gen
        blocks = [llama_block_weights(block, token.shape[0], run.paths, self.workspace) for block in gen.blocks]
        caches = [
            self.workspace.kv_cache(("ar", self.level, index), token.shape[0], gen.num_heads, gen.seq_len,
                                    run.paths.cache_head_dim(gen.head_dim), matmul_dtype(token), token.device)
            for index in range(len(blocks))
        ]
        return blocks, caches

    def after_top_level_step(self, patches, position: int, run: SamplingRun):
        """Level 0: tells the run's callback that the patch at `position` is done (raster order:
        every position up to it is)."""
        if self.level == 0 and run.on_top_level_step:
            gen = self.gen
            done = (torch.arange(gen.seq_len, device=patches.device) <= position).expand(patches.shape[0], -1)
            run.on_top_level_step(lambda: (ops.unpatchify(patches, gen.patch_size),
                                           token_mask_to_pixels(done, gen.patch_size)))

    def teacher_force(self, token, start: int, end: int, patches, blocks, caches, run: SamplingRun):
        """Positions [start, end) hold known patches in every row (`patches` has them), and an
        unknown one follows: one causal pass over their inputs (`token`, then the patches
        start..end-2) fills the caches, instead of one step per position whose output would only
        predict a known token. -> the input token of position `end`."""
        gen = self.gen
        pos = gen.pos_embed_learned[0]

        def embedded(patch, positions):
            return layer_norm(gen.patch_emb(torch.cat([patch, patch]) if run.guided else patch) + positions,
                              gen.patch_emb_ln)

        x = torch.cat([token[:, None], embedded(patches[:, start : end - 1], pos[start + 1 : end])], dim=1)
        rope = gen.rope_table[start:end]
        positions = self.workspace.positions(start, x.shape[0], x.device)
        for weights, block_caches in zip(blocks, caches):
            x = reference.llama_block_positions(x, *weights.tensors, rope, *block_caches, positions, weights.eps,
                                                self.scale, attention=attention_on_caches)
        return embedded(patches[:, end - 1], pos[end])

    def decode(self, token, position: int, blocks, caches, run: SamplingRun):
        """token [R, D] at sequence `position` -> its output [R, D], caches extended by one."""
        rope = self.gen.rope_table[position]
        positions = self.workspace.positions(position, token.shape[0], token.device)

        def through_blocks(token, rope, positions):
            x = token
            for block_weights, block_caches in zip(blocks, caches):
                x = llama_block_decode(x, block_weights, rope, block_caches, positions, self.scale)
            return layer_norm(x, self.gen.norm)

        # Same shapes and the same cache buffers at every position: one graph per level and row count.
        key = ("ar", self.level, token.shape[0], token.dtype, buffers_key(caches))
        return run.graphs.run(key, through_blocks, token, rope, positions)
