"""The masked autoregressive generator (official name `MAR`): bidirectional ViT over all patches of
a level with the unknown ones masked; generates a few patches per step in a random order and hands
five conditions (own, top, right, bottom, left) to the next level."""
import torch
from torch import nn

from fractal_ext import ops
from fractal_ext.ops import reference
from fractal_ext.models.known import KnownPixels, mar_editing_orders, token_mask_to_pixels, unknown_token_counts
from fractal_ext.models.layers import ViTBlock, init_linear_and_norm, run_blocks
from fractal_ext.models.pixel_head import PixelLoss
from fractal_ext.pixels import IMAGENET
from fractal_ext.settings import SamplingControls
from fractal_ext.models.schedules import mar_schedule


def truncated_normal_mask_ratios(count, generator=None, device=None):
    """Masking ratios of training: normal(1.0, 0.25) truncated to [0, 1], by inverse CDF."""
    normal = torch.distributions.Normal(0.0, 1.0)
    low, high = normal.cdf(torch.tensor(-4.0)), normal.cdf(torch.tensor(0.0))
    u = low + (high - low) * torch.rand(count, generator=generator, device=device, dtype=torch.float64)
    return (1.0 + 0.25 * torch.special.ndtri(u)).clamp(0.0, 1.0)


class MAR(nn.Module):
    def __init__(self, seq_len, patch_size, cond_embed_dim, embed_dim, num_blocks, num_heads,
                 attn_dropout=0.1, proj_dropout=0.1, num_conds=1, guiding_pixel=False, grad_checkpointing=False,
                 normalisation=IMAGENET):
        super().__init__()
        self.seq_len = seq_len
        self.patch_size = patch_size
        self.channels = normalisation.channels
        self.num_conds = num_conds
        self.guiding_pixel = guiding_pixel
        self.grad_checkpointing = grad_checkpointing
        self.use_fused_ops = False  # training: patchify and the neighbour gather on fractal_ext.ops
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_emb = nn.Linear(self.channels * patch_size**2, embed_dim, bias=True)
        self.patch_emb_ln = nn.LayerNorm(embed_dim, eps=1e-6)
        self.cond_emb = nn.Linear(cond_embed_dim, embed_dim, bias=True)
        if guiding_pixel:
            self.pix_proj = nn.Linear(self.channels, embed_dim, bias=True)
        self.pos_embed_learned = nn.Parameter(torch.zeros(1, seq_len + num_conds + int(guiding_pixel), embed_dim))
        self.blocks = nn.ModuleList(
            [ViTBlock(embed_dim, num_heads, attn_dropout, proj_dropout) for _ in range(num_blocks)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(init_linear_and_norm)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.pos_embed_learned, std=0.02)
        if guiding_pixel:
            # Models the mean colour of this level's image from the parent's condition.
            self.guiding_pixel_loss = PixelLoss(c_channels=cond_embed_dim, width=128, depth=3, num_heads=4,
                                                r_weight=5.0, normalisation=normalisation)

    def patchify(self, imgs):
        return (ops.patchify if self.use_fused_ops else reference.patchify)(imgs, self.patch_size)

    def unpatchify(self, x):
        return (ops.unpatchify if self.use_fused_ops else reference.unpatchify)(x, self.patch_size)

    def sample_orders(self, bsz, controls: SamplingControls, device):
        if controls.raster_order:
            return torch.arange(self.seq_len, device=device).expand(bsz, -1)
        noise = torch.rand(bsz, self.seq_len, generator=controls.generator, device=device)
        return noise.argsort(dim=-1)

    def random_masking(self, orders, generator=None):
        """Training: per image a truncated-normal ratio; ceil(L * ratio) tokens of its order masked."""
        bsz = orders.shape[0]
        ratios = truncated_normal_mask_ratios(bsz, generator, orders.device)
        num_masked = torch.ceil(self.seq_len * ratios).long()
        in_front = torch.arange(self.seq_len, device=orders.device)[None] < num_masked[:, None]
        return torch.zeros(orders.shape, device=orders.device).scatter(1, orders, in_front.float())

    def random_masking_uniform(self, orders, generator=None):
        """Evaluation: one count uniform in 1..L for the batch; the first tokens of each order."""
        num_masked = int(torch.randint(1, self.seq_len + 1, (1,), generator=generator, device=orders.device))
        mask = torch.zeros(orders.shape, device=orders.device)
        return mask.scatter(1, orders[:, :num_masked], 1.0)

    def predict(self, x, mask, cond_list):
        """patches [B, L, C p^2], mask [B, L] (1 = unknown), cond_list -> 5 conditions [B, L, D]:
        middle, top, right, bottom, left."""
        return reference.neighbour_conditions(self.predict_middle(x, mask, cond_list))

    def predict_middle(self, x, mask, cond_list):
        """The transformer output of the patch tokens [B, L, D] (each token's own condition)."""
        tokens = self.patch_emb(x)
        tokens = torch.where(mask.bool().unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        # Conditions go in front in reverse order; the guiding pixel (if any) goes first.
        conds = self.cond_emb(torch.stack([cond_list[i] for i in reversed(range(self.num_conds))], dim=1))
        prefix = [self.pix_proj(cond_list[-1]).unsqueeze(1), conds] if self.guiding_pixel else [conds]
        tokens = torch.cat(prefix + [tokens], dim=1)
        tokens = self.patch_emb_ln(tokens + self.pos_embed_learned)
        tokens = run_blocks(self.blocks, tokens, self.grad_checkpointing and self.training)
        return self.norm(tokens)[:, -self.seq_len :]

    def forward(self, imgs, cond_list, generator=None, mask_all_tokens=False):
        """Training / NLL: images [B, C, H, W] -> (masked patches [M, C, p, p], their 5 conditions
        [M, D] each, guiding-pixel loss). M runs over batch then position, ascending."""
        patches = self.patchify(imgs)
        bsz = patches.shape[0]
        if mask_all_tokens:
            mask = torch.ones(bsz, self.seq_len, device=imgs.device)
        else:
            orders = self.sample_orders(bsz, SamplingControls(generator), imgs.device)
            if self.training:
                mask = self.random_masking(orders, generator)
            else:
                mask = self.random_masking_uniform(orders, generator)
        cond_list = list(cond_list)
        if self.guiding_pixel:
            guiding_pixels = imgs.mean(dim=(-2, -1))
            guiding_pixel_loss = self.guiding_pixel_loss(guiding_pixels, cond_list, generator)
            cond_list.append(guiding_pixels)
        else:
            guiding_pixel_loss = imgs.new_zeros(())
        keep = mask.reshape(-1).bool()
        if self.use_fused_ops:
            middle = self.predict_middle(patches, mask, cond_list)
            cond_next = list(ops.gather_neighbour_conditions(middle, *mask.bool().nonzero(as_tuple=True)).unbind(0))
        else:
            conds = self.predict(patches, mask, cond_list)
            cond_next = [c.reshape(bsz * self.seq_len, -1)[keep] for c in conds]
        patches = patches.reshape(bsz * self.seq_len, -1)[keep]
        return patches.reshape(-1, self.channels, self.patch_size, self.patch_size), cond_next, guiding_pixel_loss

    @torch.no_grad()
    def sample(self, cond_list, num_iter, cfg, cfg_schedule, temperature, filter_threshold,
               next_level_sample_function, visualize=False, controls: SamplingControls | None = None,
               known: KnownPixels | None = None, on_step=None):
        """cond_list (R = 2n rows with CFG) -> images [n, C, H, W]. With `known` (editing), tokens
        whose pixels are all known start unmasked with their true patch; the schedule and the order
        run over each image's unknown tokens only, so images are generated in groups of the same
        unknown-token count. `on_step(images, generated)`: the canvas after every step."""
        controls = controls or SamplingControls()
        guided = float(cfg) != 1.0
        bsz = cond_list[0].shape[0] // 2 if guided else cond_list[0].shape[0]
        if known is None:
            return self._sample_rows(cond_list, num_iter, cfg, cfg_schedule, temperature, filter_threshold,
                                     next_level_sample_function, controls, None, self.seq_len, on_step)
        images = known.pixels.clone()  # images with every pixel known stay as they are
        generated = known.mask.clone()
        unknown = unknown_token_counts(known.mask, self.patch_size)
        for count in sorted(set(unknown.tolist()) - {0}):
            group = torch.nonzero(unknown == count).flatten()
            rows = torch.cat([group, group + bsz]) if guided else group

            def report(group_images, group_generated, group=group):  # the group's canvas in the batch's
                images[group], generated[group] = group_images, group_generated
                on_step(images, generated)

            images[group] = self._sample_rows(
                [c[rows] for c in cond_list], num_iter, cfg, cfg_schedule, temperature, filter_threshold,
                next_level_sample_function, controls, known.rows(group), count, on_step and report,
            )
        return images

    def _sample_rows(self, cond_list, num_iter, cfg, cfg_schedule, temperature, filter_threshold,
                     next_level_sample_function, controls, known, num_unknown, on_step=None):
        """Images that all have `num_unknown` tokens to generate (all L without `known`)."""
        guided = float(cfg) != 1.0
        device = cond_list[0].device
        bsz = cond_list[0].shape[0] // 2 if guided else cond_list[0].shape[0]
        cond_list = list(cond_list)
        if self.guiding_pixel:
            # Drawn: an image that reaches here has unknown pixels (a fully known one is not generated).
            pixels = self.guiding_pixel_loss.sample(cond_list, temperature, cfg, filter_threshold, controls)
            cond_list.append(torch.cat([pixels, pixels]) if guided else pixels)

        patches = torch.zeros(bsz, self.seq_len, self.channels * self.patch_size**2, device=device)
        mask = torch.ones(bsz, self.seq_len, device=device)
        if known is None:
            orders = self.sample_orders(bsz, controls, device)
        else:
            known_patches, pixel_mask = known.tokens(self.patch_size)
            token_known = pixel_mask.all(dim=-1)
            patches = torch.where(token_known[..., None], known_patches, patches)
            mask = (~token_known).float()
            orders = mar_editing_orders(token_known, controls, self.seq_len)
        rows = torch.arange(bsz, device=device)[:, None]
        still_masked = num_unknown
        for step in mar_schedule(num_unknown, num_iter, float(cfg), cfg_schedule):
            conds = self.predict(
                torch.cat([patches, patches]) if guided else patches,
                torch.cat([mask, mask]) if guided else mask,
                cond_list,
            )
            # The order's first tokens stay masked; the ones after them are generated now,
            # handed on in ascending (image, position) order.
            keep_masked = still_masked - step.num_predicted
            positions = orders[:, keep_masked:still_masked].sort(dim=1).values
            batch_index = rows.expand_as(positions).reshape(-1)
            token_index = positions.reshape(-1)
            if guided:
                cond_next = [torch.cat([c[batch_index, token_index], c[batch_index + bsz, token_index]]) for c in conds]
            else:
                cond_next = [c[batch_index, token_index] for c in conds]
            next_known = None if known is None else KnownPixels.from_tokens(
                known_patches[batch_index, token_index], pixel_mask[batch_index, token_index], self.patch_size)
            sampled = next_level_sample_function(
                cond_list=cond_next, cfg=step.cfg, temperature=temperature,
                filter_threshold=filter_threshold, controls=controls, known=next_known,
            )
            patches[batch_index, token_index] = sampled.reshape(token_index.shape[0], -1).to(patches.dtype)
            mask[batch_index, token_index] = 0.0
            still_masked = keep_masked
            if on_step is not None:
                on_step(self.unpatchify(patches), token_mask_to_pixels(mask == 0, self.patch_size))
        return self.unpatchify(patches)
