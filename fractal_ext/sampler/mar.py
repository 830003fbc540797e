"""Fast MAR level: condition tokens embedded once per call (one `cond_emb` matmul for all of
them), tokens generated per step taken from the host-side schedule (no `nonzero`), the
bidirectional pass on oneDNN GEMMs on the CPU (fractal_ext.sampler.bidirectional), and the five
neighbour conditions of the generated tokens gathered by the fused operator."""
from functools import partial

import torch

from fractal_ext import ops
from fractal_ext.models.known import KnownPixels, MarEditingSchedule, mar_editing_orders, token_mask_to_pixels
from fractal_ext.models.mar import MAR
from fractal_ext.models.schedules import mar_schedule
from fractal_ext.ops.reference import grid_side
from fractal_ext.sampler.bidirectional import ReorderedBlocks
from fractal_ext.sampler.plan import SamplingRun
from fractal_ext.sampler.pixel_head import FastPixelHead


class FastMAR:
    def __init__(self, generator: MAR, next_level, level: int, workspace):
        self.gen = generator
        self.next_level = next_level
        self.level = level
        self.workspace = workspace
        self.guiding_pixel_head = FastPixelHead(generator.guiding_pixel_loss, workspace) if generator.guiding_pixel else None

    def condition_tokens(self, conds: torch.Tensor, cfg, run: SamplingRun, known=None) -> torch.Tensor:
        """conds [K, R, C] -> the sequence prefix [R, P, D] with its position embeddings: the
        guiding pixel (if any: sampled now, or in an editing run the mean of a fully known
        image), then the conditions in reverse order."""
        gen = self.gen
        prefix = gen.cond_emb(conds[: gen.num_conds].flip(0)).transpose(0, 1)
        if self.guiding_pixel_head is not None:
            pixels = self.guiding_pixel_head.sample(conds[0], cfg, run)
            if known is not None:
                pixels = torch.where(known.fully_known()[:, None], known.pixels.mean(dim=(-2, -1)), pixels)
            pixels = torch.cat([pixels, pixels]) if run.guided else pixels
            prefix = torch.cat([gen.pix_proj(pixels.to(prefix.dtype)).unsqueeze(1), prefix], dim=1)
        return prefix + gen.pos_embed_learned[:, : prefix.shape[1]]

    def sample(self, conds: torch.Tensor, cfg, cfg_schedule: str, run: SamplingRun, known=None) -> torch.Tensor:
        """conds [K, R, C] -> images [n, C, H, W] of this level. `cfg`: one scale, or one per image
        ([n], below level 0 in editing runs). `known` (editing): fully known tokens start unmasked
        with their true patch and each image's schedule runs over its unknown tokens."""
        gen = self.gen
        rows = conds.shape[1]
        n = rows // 2 if run.guided else rows
        device = conds.device
        seq_len = gen.seq_len
        if known is not None and not run.editing.levels[self.level].counts:
            return known.pixels.clone()  # every image this level can be given is fully known
        prefix = self.condition_tokens(conds, cfg, run, known)
        token_pos = gen.pos_embed_learned[:, prefix.shape[1] :]
        # One spare token slot past the grid: what the padding rows of an editing step write.
        patches = torch.zeros(n, seq_len + 1, gen.channels * gen.patch_size**2, device=device, dtype=conds.dtype)
        masked = torch.ones(n, seq_len + 1, 1, dtype=torch.bool, device=device)
        if known is None:
            orders = gen.sample_orders(n, run.controls, device)
        else:
            known_patches, pixel_mask = known.tokens(gen.patch_size)
            token_known = pixel_mask.all(dim=-1)
            patches[:, :seq_len] = torch.where(token_known[..., None], known_patches.to(patches.dtype), 0.0)
            masked[:, :seq_len, 0] = ~token_known
            orders = mar_editing_orders(token_known, run.controls, seq_len)
        steps = self.step_tokens(cfg, cfg_schedule, run, orders, None if known is None else token_known)
        image_index = torch.arange(n, device=device)[:, None]
        for positions, valid, step_cfg in steps:
            tokens = torch.where(masked[:, :seq_len], gen.mask_token.to(prefix.dtype),
                                 gen.patch_emb(patches[:, :seq_len])) + token_pos
            tokens = torch.cat([tokens, tokens]) if run.guided else tokens
            x = gen.patch_emb_ln(torch.cat([prefix, tokens], dim=1))
            read = positions if valid is None else torch.where(valid, positions, 0)  # padding reads token 0
            middle = self._middle_conditions(x, read, run)
            batch_index = image_index.expand_as(positions).reshape(-1)
            token_index = read.reshape(-1)
            if run.guided:
                gathered = ops.gather_neighbour_conditions(
                    middle, torch.cat([batch_index, batch_index + n]), torch.cat([token_index, token_index])
                )
            else:
                gathered = ops.gather_neighbour_conditions(middle, batch_index, token_index)
            next_known = None
            if known is not None:
                next_mask = pixel_mask[batch_index, token_index]
                if valid is not None:  # a padding row is fully known: the next level generates nothing for it
                    next_mask = next_mask | ~valid.reshape(-1, 1)
                next_known = KnownPixels.from_tokens(known_patches[batch_index, token_index], next_mask, gen.patch_size)
            next_cfg = step_cfg[batch_index] if isinstance(step_cfg, torch.Tensor) else step_cfg
            sampled = self.next_level.sample(gathered, next_cfg, "constant", run, next_known)
            write_index = positions.reshape(-1)  # padding rows write the spare slot
            patches[batch_index, write_index] = sampled.reshape(write_index.shape[0], -1).to(patches.dtype)
            masked[batch_index, write_index] = False
            if self.level == 0 and run.on_top_level_step:
                run.on_top_level_step(lambda: (ops.unpatchify(patches[:, :seq_len].contiguous(), gen.patch_size),
                                               token_mask_to_pixels(~masked[:, :seq_len, 0], gen.patch_size)))
        return ops.unpatchify(patches[:, :seq_len].contiguous(), gen.patch_size)

    def step_tokens(self, cfg, cfg_schedule, run: SamplingRun, orders, token_known):
        """Yields, per step, (positions [n, k] ascending, valid [n, k] or None, guidance scale: one
        or one per image). Every image with the same number U of tokens to generate (plain
        sampling: U = L): the host-side schedule of U tokens, slices of the orders. Images that
        differ in U (editing): every image follows its own schedule, read from device tables by
        its U; a step hands on as many tokens per image as the largest count any image can have
        at that step, and the rest are padding."""
        gen = self.gen
        num_iter = run.num_iter_list[self.level]
        if token_known is None:
            counts = {gen.seq_len}
        elif self.level == 0:
            counts = set(run.editing.top_level_counts)
        else:
            counts = None
        if counts is not None and len(counts) == 1:
            still_masked = counts.pop()
            for step in mar_schedule(still_masked, num_iter, float(cfg), cfg_schedule):
                # The order's first tokens stay masked; the ones after them are generated now.
                keep_masked = still_masked - step.num_predicted
                yield orders[:, keep_masked:still_masked].sort(dim=1).values, None, step.cfg
                still_masked = keep_masked
            return
        per_image_cfg = isinstance(cfg, torch.Tensor)
        key = ("editing schedule", self.level, None if per_image_cfg else float(cfg), cfg_schedule)
        if key not in run.prepared:
            run.prepared[key] = MarEditingSchedule.build(
                gen.seq_len, num_iter, 1.0 if per_image_cfg else float(cfg), cfg_schedule,
                run.editing.levels[self.level].counts, orders.device)
        schedule = run.prepared[key]
        unknown = (~token_known).sum(dim=1)
        for step in range(len(schedule.slots)):
            positions, valid = schedule.step_tokens(step, orders, unknown)
            step_cfg = cfg if per_image_cfg or cfg_schedule == "constant" else schedule.cfg[unknown, step]
            yield positions, valid, step_cfg

    def _middle_conditions(self, x, positions, run: SamplingRun) -> torch.Tensor:
        """The bidirectional pass: [R, P + L, D] (condition prefix, then tokens) -> the middle
        conditions [R, L, D]. Elsewhere every step of a call has the same shapes (on CUDA: one
        replayed pass per level and row count); on the CPU the oneDNN pass computes the last block
        only for the tokens the neighbour gather reads, and the other conditions are left zero."""
        if not run.paths.onednn_mar_pass:
            return run.graphs.run(("mar", self.level, x.shape, x.dtype), partial(self._bidirectional_pass, run), x)
        read = tokens_read_by_gather(positions, self.gen.seq_len)
        read = torch.cat([read, read]) if run.guided else read
        return run.graphs.run(("mar", self.level, x.shape, x.dtype, read.shape),
                              partial(self._onednn_pass, run), x, read)

    def _bidirectional_pass(self, run: SamplingRun, x):
        prefix_len = x.shape[1] - self.gen.seq_len
        # The CPU bf16 mode without oneDNN's linear: the modules' GEMMs under autocast.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.paths.bf16_weights):
            for block in self.gen.blocks:
                x = block(x)
        return self.gen.norm(x[:, prefix_len:])

    def _reordered_blocks(self, run: SamplingRun, rows_hint: int) -> ReorderedBlocks:
        """fp32: reordered once per sampling run (the copy is held for the run only). bf16: the
        bf16 copy is made once per model and kept with the sampler's buffers."""
        if run.paths.bf16_weights:
            sources = [linear.weight for block in self.gen.blocks for linear in ReorderedBlocks.linears(block)]
            return self.workspace.prepared(("bf16 reordered MAR blocks", id(self.gen)), sources,
                                           lambda: ReorderedBlocks(self.gen.blocks, rows_hint, torch.bfloat16))
        key = ("reordered MAR blocks", self.level)
        if key not in run.prepared:
            run.prepared[key] = ReorderedBlocks(self.gen.blocks, rows_hint)
        return run.prepared[key]

    def _onednn_pass(self, run: SamplingRun, x, read):
        rows, prefix_len, dim = x.shape[0], x.shape[1] - self.gen.seq_len, x.shape[2]
        blocks = self._reordered_blocks(run, rows_hint=x.shape[0] * x.shape[1])
        conditions = self.gen.norm(blocks(x, outputs=read + prefix_len))
        middle = conditions.new_zeros(rows, self.gen.seq_len, dim)
        return middle.scatter_(1, read[..., None].expand_as(conditions), conditions)


def tokens_read_by_gather(positions: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[N, k] generated token positions -> [N, m] positions whose conditions the four-neighbour
    gather reads: the generated tokens and their top, right, bottom and left neighbours, the
    same m for every row (rows with fewer are filled up with other positions, ascending)."""
    side = grid_side(seq_len)
    generated = torch.zeros(positions.shape[0], seq_len, dtype=torch.bool, device=positions.device)
    grid = generated.scatter_(1, positions, True).view(-1, side, side)
    read = grid.clone()
    read[:, 1:] |= grid[:, :-1]  # the token below a generated one is its bottom neighbour
    read[:, :-1] |= grid[:, 1:]  # above: top
    read[:, :, 1:] |= grid[:, :, :-1]  # to its right: right
    read[:, :, :-1] |= grid[:, :, 1:]  # to its left: left
    read = read.view(-1, seq_len)
    count = int(read.sum(1).max())
    return torch.argsort((~read).to(torch.uint8), dim=1, stable=True)[:, :count]
