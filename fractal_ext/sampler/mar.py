"""Fast MAR level: condition tokens embedded once per call (one `cond_emb` matmul for all of
them), tokens generated per step taken from the host-side schedule (no `nonzero`), the
bidirectional pass on oneDNN GEMMs on the CPU (fractal_ext.sampler.bidirectional), and the five
neighbour conditions of the generated tokens gathered by the fused operator."""
from functools import partial

import torch

from fractal_ext import ops
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
        self.guiding_pixel_head = FastPixelHead(generator.guiding_pixel_loss, workspace) if generator.guiding_pixel else None

    def condition_tokens(self, conds: torch.Tensor, cfg: float, run: SamplingRun) -> torch.Tensor:
        """conds [K, R, C] -> the sequence prefix [R, P, D] with its position embeddings: the
        guiding pixel (sampled now, if any), then the conditions in reverse order."""
        gen = self.gen
        prefix = gen.cond_emb(conds[: gen.num_conds].flip(0)).transpose(0, 1)
        if self.guiding_pixel_head is not None:
            pixels = self.guiding_pixel_head.sample(conds[0], cfg, run)
            pixels = torch.cat([pixels, pixels]) if run.guided else pixels
            prefix = torch.cat([gen.pix_proj(pixels.to(prefix.dtype)).unsqueeze(1), prefix], dim=1)
        return prefix + gen.pos_embed_learned[:, : prefix.shape[1]]

    def sample(self, conds: torch.Tensor, cfg: float, cfg_schedule: str, run: SamplingRun) -> torch.Tensor:
        gen = self.gen
        rows = conds.shape[1]
        n = rows // 2 if run.guided else rows
        device = conds.device
        prefix = self.condition_tokens(conds, cfg, run)
        token_pos = gen.pos_embed_learned[:, prefix.shape[1] :]
        patches = torch.zeros(n, gen.seq_len, 3 * gen.patch_size**2, device=device, dtype=conds.dtype)
        masked = torch.ones(n, gen.seq_len, 1, dtype=torch.bool, device=device)
        orders = gen.sample_orders(n, run.controls, device)
        image_index = torch.arange(n, device=device)[:, None]
        still_masked = gen.seq_len
        schedule = mar_schedule(gen.seq_len, run.num_iter_list[self.level], float(cfg), cfg_schedule)
        for step in schedule:
            # The order's first tokens stay masked; the ones after them are generated now.
            keep_masked = still_masked - step.num_predicted
            positions = orders[:, keep_masked:still_masked].sort(dim=1).values
            tokens = torch.where(masked, gen.mask_token.to(prefix.dtype), gen.patch_emb(patches)) + token_pos
            tokens = torch.cat([tokens, tokens]) if run.guided else tokens
            x = gen.patch_emb_ln(torch.cat([prefix, tokens], dim=1))
            middle = self._middle_conditions(x, positions, run)
            batch_index = image_index.expand_as(positions).reshape(-1)
            token_index = positions.reshape(-1)
            if run.guided:
                gathered = ops.gather_neighbour_conditions(
                    middle, torch.cat([batch_index, batch_index + n]), torch.cat([token_index, token_index])
                )
            else:
                gathered = ops.gather_neighbour_conditions(middle, batch_index, token_index)
            sampled = self.next_level.sample(gathered, step.cfg, "constant", run)
            patches[batch_index, token_index] = sampled.reshape(token_index.shape[0], -1).to(patches.dtype)
            masked[batch_index, token_index] = False
            still_masked = keep_masked
            if self.level == 0 and run.on_top_level_step:
                run.on_top_level_step()
        return ops.unpatchify(patches, gen.patch_size)

    def _middle_conditions(self, x, positions, run: SamplingRun) -> torch.Tensor:
        """The bidirectional pass: [R, P + L, D] (condition prefix, then tokens) -> the middle
        conditions [R, L, D]. Elsewhere every step of a call has the same shapes (on CUDA: one
        replayed pass per level and row count); on the CPU in fp32 the oneDNN pass computes the
        last block only for the tokens the neighbour gather reads, and the other conditions are
        left zero."""
        if not run.paths.onednn_mar_pass:
            return run.graphs.run(("mar", self.level, x.shape, x.dtype), self._bidirectional_pass, x)
        read = tokens_read_by_gather(positions, self.gen.seq_len)
        read = torch.cat([read, read]) if run.guided else read
        return run.graphs.run(("mar", self.level, x.shape, x.dtype, read.shape),
                              partial(self._onednn_pass, run), x, read)

    def _bidirectional_pass(self, x):
        prefix_len = x.shape[1] - self.gen.seq_len
        for block in self.gen.blocks:
            x = block(x)
        return self.gen.norm(x[:, prefix_len:])

    def _onednn_pass(self, run: SamplingRun, x, read):
        rows, prefix_len, dim = x.shape[0], x.shape[1] - self.gen.seq_len, x.shape[2]
        key = ("reordered MAR blocks", self.level)
        if key not in run.prepared:
            run.prepared[key] = ReorderedBlocks(self.gen.blocks, rows_hint=x.shape[0] * x.shape[1])
        conditions = self.gen.norm(run.prepared[key](x, outputs=read + prefix_len))
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
