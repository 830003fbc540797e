"""The autoregressive generator (official name `AR`): patches in raster order, causal LLaMA blocks
with a 2-D rotary embedding, one condition per patch for the next level."""
import torch
from torch import nn

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.models.layers import KVCache, LlamaBlock, init_linear_and_norm, rope_2d_table, run_blocks
from fractal_ext.settings import SamplingControls
from fractal_ext.models.schedules import ar_cfg_schedule


class AR(nn.Module):
    def __init__(self, seq_len, patch_size, cond_embed_dim, embed_dim, num_blocks, num_heads,
                 grad_checkpointing=False, **unused_kwargs):
        # attn_dropout / proj_dropout / num_conds / guiding_pixel do not apply to AR levels.
        super().__init__()
        self.seq_len = seq_len
        self.patch_size = patch_size
        self.grad_checkpointing = grad_checkpointing
        self.use_fused_ops = False  # training: patchify on fractal_ext.ops
        self.patch_emb = nn.Linear(3 * patch_size**2, embed_dim, bias=True)
        self.patch_emb_ln = nn.LayerNorm(embed_dim, eps=1e-6)
        self.pos_embed_learned = nn.Parameter(torch.zeros(1, seq_len + 1, embed_dim))
        self.cond_emb = nn.Linear(cond_embed_dim, embed_dim, bias=True)
        self.blocks = nn.ModuleList([LlamaBlock(embed_dim, num_heads) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.register_buffer(
            "rope_table", rope_2d_table(reference.grid_side(seq_len), self.head_dim), persistent=False
        )
        self.apply(init_linear_and_norm)
        nn.init.normal_(self.pos_embed_learned, std=0.02)

    def patchify(self, imgs):
        return (ops.patchify if self.use_fused_ops else reference.patchify)(imgs, self.patch_size)

    def unpatchify(self, x):
        return (ops.unpatchify if self.use_fused_ops else reference.unpatchify)(x, self.patch_size)

    def embed(self, patches, cond, start: int = 0):
        """Input tokens of sequence positions [start, start + T): position 0 is the condition,
        position s >= 1 holds patch s-1. `patches` are the patches at positions that are >= 1."""
        tokens = self.patch_emb(patches)
        if start == 0:
            tokens = torch.cat([self.cond_emb(cond).unsqueeze(1), tokens], dim=1)
        positions = self.pos_embed_learned[:, start : start + tokens.shape[1]]
        return self.patch_emb_ln(tokens + positions)

    def predict(self, x, cond_list):
        """Teacher forcing: patches [B, L, 3p^2] -> [condition for each patch [B, L, D]]."""
        tokens = self.embed(x[:, :-1], cond_list[0])  # the last patch is never an input
        tokens = run_blocks(self.blocks, tokens, self.grad_checkpointing and self.training,
                            self.rope_table[: tokens.shape[1]])
        return [self.norm(tokens)]

    def forward(self, imgs, cond_list, generator=None):
        """Training: images [B, 3, H, W] -> (patches [B*L, 3, p, p], [conditions [B*L, D]], 0)."""
        patches = self.patchify(imgs)
        cond_next = self.predict(patches, cond_list)[0]
        patches = patches.reshape(-1, 3, self.patch_size, self.patch_size)
        return patches, [cond_next.reshape(patches.shape[0], -1)], imgs.new_zeros(())

    def setup_caches(self, batch: int, dtype, device) -> list[KVCache]:
        return [KVCache(batch, self.num_heads, self.seq_len, self.head_dim, dtype, device) for _ in self.blocks]

    def decode_step(self, token, position: int, caches: list[KVCache]):
        """One embedded token at `position` through the blocks with the KV caches -> its output [B, D]."""
        x = token
        for block, cache in zip(self.blocks, caches):
            x = block(x, self.rope_table[position : position + 1], cache, position)
        return self.norm(x)[:, 0]

    @torch.no_grad()
    def sample(self, cond_list, num_iter, cfg, cfg_schedule, temperature, filter_threshold,
               next_level_sample_function, visualize=False, controls: SamplingControls | None = None):
        """Generates the L patches one at a time (num_iter is ignored: always L steps)."""
        guided = float(cfg) != 1.0
        cond = cond_list[0]
        bsz = cond.shape[0] // 2 if guided else cond.shape[0]
        patches = torch.zeros(bsz, self.seq_len, 3 * self.patch_size**2, device=cond.device)
        caches = self.setup_caches(cond.shape[0], self.pos_embed_learned.dtype, cond.device)
        cfg_per_step = ar_cfg_schedule(self.seq_len, float(cfg), cfg_schedule)
        token = self.embed(patches.new_zeros(cond.shape[0], 0, patches.shape[-1]), cond)  # position 0: the condition
        for step in range(self.seq_len):
            cond_next = self.decode_step(token, step, caches)
            next_patch = next_level_sample_function(
                cond_list=[cond_next], cfg=cfg_per_step[step], temperature=temperature,
                filter_threshold=filter_threshold, controls=controls,
            )
            next_patch = next_patch.reshape(bsz, -1)
            patches[:, step] = next_patch
            if step + 1 < self.seq_len:
                both_halves = torch.cat([next_patch, next_patch]) if guided else next_patch
                token = self.embed(both_halves[:, None], None, start=step + 1)
        return self.unpatchify(patches)

