"""FractalGen: a chain of generator levels ending in the pixel head, as in the paper.

Level 0 turns class labels into conditions; each generator turns (images of its level,
conditions) into (patches for the next level, their conditions); the last level is the pixel
head. `sample` recurses the same way, from the class condition down to single pixels.
"""
from functools import partial

import torch
from torch import nn

from fractal_ext.models.ar import AR
from fractal_ext.models.config import FractalConfig
from fractal_ext.models.known import KnownPixels, validate_known_pixels
from fractal_ext.models.mar import MAR
from fractal_ext.models.pixel_head import PixelLoss
from fractal_ext.settings import SamplingControls, validate_sampling_args

GENERATORS = {"ar": AR, "mar": MAR}


class FractalGen(nn.Module):
    def __init__(self, img_size_list, embed_dim_list, num_blocks_list, num_heads_list, generator_type_list,
                 label_drop_prob=0.1, class_num=1000, attn_dropout=0.1, proj_dropout=0.1, guiding_pixel=False,
                 num_conds=1, r_weight=1.0, grad_checkpointing=False, channels=3, pixel_mean=None, pixel_std=None,
                 fractal_level=0):
        super().__init__()
        config = FractalConfig(
            img_size_list=tuple(img_size_list), embed_dim_list=tuple(embed_dim_list),
            num_blocks_list=tuple(num_blocks_list), num_heads_list=tuple(num_heads_list),
            generator_type_list=tuple(generator_type_list), label_drop_prob=label_drop_prob,
            class_num=class_num, attn_dropout=attn_dropout, proj_dropout=proj_dropout,
            guiding_pixel=guiding_pixel, num_conds=num_conds, r_weight=r_weight,
            grad_checkpointing=grad_checkpointing, channels=channels, pixel_mean=pixel_mean, pixel_std=pixel_std,
        )
        if fractal_level == 0:
            config.validate()
        self.config = config
        self.fractal_level = fractal_level
        self.num_fractal_levels = len(config.img_size_list)
        level = fractal_level
        dims = config.embed_dim_list

        if level == 0:
            self.num_classes = class_num
            self.label_drop_prob = label_drop_prob
            self.class_emb = nn.Embedding(class_num, dims[0])
            self.fake_latent = nn.Parameter(torch.zeros(1, dims[0]))
            nn.init.normal_(self.class_emb.weight, std=0.02)
            nn.init.normal_(self.fake_latent, std=0.02)

        self.generator = GENERATORS[config.generator_type_list[level]](
            seq_len=(config.img_size_list[level] // config.img_size_list[level + 1]) ** 2,
            patch_size=config.img_size_list[level + 1],
            cond_embed_dim=dims[level - 1] if level > 0 else dims[0],
            embed_dim=dims[level],
            num_blocks=config.num_blocks_list[level],
            num_heads=config.num_heads_list[level],
            attn_dropout=attn_dropout,
            proj_dropout=proj_dropout,
            guiding_pixel=guiding_pixel if level > 0 else False,
            num_conds=num_conds,
            grad_checkpointing=grad_checkpointing,
            normalisation=config.normalisation(),
        )
        if level < self.num_fractal_levels - 2:
            self.next_fractal = FractalGen(**config.constructor_kwargs(), fractal_level=level + 1)
        else:
            self.next_fractal = PixelLoss(
                c_channels=dims[level], width=dims[level + 1], depth=config.num_blocks_list[level + 1],
                num_heads=config.num_heads_list[level + 1], r_weight=r_weight, normalisation=config.normalisation(),
            )

    def class_condition(self, labels, generator=None):
        """Level-0 condition of each image: its class embedding; in training a `label_drop_prob`
        fraction is replaced by `fake_latent` (CFG training); in eval every row is (the NLL is
        unconditional)."""
        if self.training:
            class_embedding = self.class_emb(labels)
            drop = torch.rand(labels.shape[0], generator=generator, device=labels.device) < self.label_drop_prob
            drop = drop.unsqueeze(-1).to(class_embedding.dtype)
            return drop * self.fake_latent + (1 - drop) * class_embedding
        return self.fake_latent.expand(labels.shape[0], -1)

    def forward(self, imgs, cond_list, generator: torch.Generator | None = None, mask_all_tokens: bool = False):
        """Training loss. At level 0 `cond_list` holds the class labels [B].
        `mask_all_tokens` masks every MAR token (the deterministic evaluation of the references)."""
        if self.fractal_level == 0:
            self.check_training_input(imgs, cond_list)
            cond_list = [self.class_condition(cond_list, generator)] * 5
        gen_kwargs = {"mask_all_tokens": mask_all_tokens} if isinstance(self.generator, MAR) else {}
        imgs, cond_list, guiding_pixel_loss = self.generator(imgs, cond_list, generator=generator, **gen_kwargs)
        if isinstance(self.next_fractal, FractalGen):
            loss = self.next_fractal(imgs, cond_list, generator=generator, mask_all_tokens=mask_all_tokens)
        else:
            loss = self.next_fractal(imgs, cond_list, generator=generator)
        return loss + guiding_pixel_loss

    @torch.no_grad()
    def sample(self, cond_list, num_iter_list, cfg, cfg_schedule, temperature, filter_threshold, fractal_level=0,
               visualize=False, *, generator: torch.Generator | None = None, greedy: bool = False,
               raster_order: bool = False, implementation: str = "fast", precision: str = "fp32",
               cuda_graphs: bool | None = None, controls: SamplingControls | None = None,
               known: KnownPixels | None = None, on_step=None):
        """Official generation entry point: condition list -> normalised images [B, C, H, W].
        `temperature` multiplies the logits, as in the official code: above 1 is sharper, below 1
        noisier.

        Keyword-only extras: `generator` for every random choice, `greedy` (most likely token
        instead of a draw), `raster_order` (MAR order 0..L-1 instead of a random one), and
        `implementation`: "fast" (fused operators, fractal_ext.sampler) or "eager" (the plain
        PyTorch modules, the oracle the fast path is tested against); `precision` of the fast path:
        "fp32" (what the eager path computes), "bf16" or "fp16" (autocast); `cuda_graphs` of the
        fast path: None (on for CUDA), True or False (see FastSampler.sample). `known` (editing:
        KnownPixels of the B images, fractal_ext.editing makes them): the known pixels are kept and
        the rest is generated around them; an image with every pixel known comes back as it is.
        `on_step(images, generated)`: called after every level-0 step with the canvas: the images
        so far [B, C, H, W] (normalised) and which of their pixels exist yet [B, H, W] (known or
        generated; the others hold nothing meaningful). The official `visualize=True` (a live
        display) is refused: `on_step` is its replacement."""
        if controls is None:
            controls = SamplingControls(generator, greedy, raster_order)
        if fractal_level == 0:
            if visualize:
                raise ValueError("visualize=True (the official code's live display) is not supported: pass "
                                 "on_step=callable(images, generated) to get the canvas after each step, or use "
                                 "fractal-sample --animate out.gif")
            if implementation == "fast":
                return self.fast_sampler().sample(cond_list, num_iter_list, cfg, cfg_schedule, temperature,
                                                  filter_threshold, controls, precision=precision,
                                                  cuda_graphs=cuda_graphs, known=known, on_step=on_step)
            if implementation != "eager":
                raise ValueError(f"implementation must be 'fast' or 'eager', got {implementation!r}")
            validate_sampling_args(self, cond_list, num_iter_list, cfg, cfg_schedule, temperature, filter_threshold)
            if known is not None:
                validate_known_pixels(self, known, cond_list, cfg)
                if bool(known.fully_known().all()):
                    return known.pixels.clone()
        if fractal_level < self.num_fractal_levels - 2:
            next_level_sample_function = partial(
                self.next_fractal.sample, num_iter_list=num_iter_list, cfg_schedule="constant",
                fractal_level=fractal_level + 1,
            )
        else:
            next_level_sample_function = self.next_fractal.sample
        return self.generator.sample(
            cond_list, num_iter_list[fractal_level], cfg, cfg_schedule, temperature, filter_threshold,
            next_level_sample_function, visualize, controls=controls, known=known,
            **({"on_step": on_step} if on_step is not None else {}),
        )

    def set_use_fused_ops(self, enabled: bool = True):
        """Route the training forward's patchify and MAR neighbour gathering through the fused
        operators of fractal_ext.ops (same results; the eager references stay the default)."""
        level = self
        while isinstance(level, FractalGen):
            level.generator.use_fused_ops = enabled
            level = level.next_fractal
        return self

    def __getstate__(self):
        # The fast sampler only caches buffers (KV caches, per thread): copies and pickles of the
        # model (copy.deepcopy for an EMA copy, torch.save of the module) leave it out and build
        # their own on first use.
        state = super().__getstate__()
        state.pop("_fast_sampler", None)
        return state

    def fast_sampler(self):
        """The fast sampler of this model, built on first use and kept (with its buffers).

        The one place where the models reach the fast path: fractal_ext.sampler is built on the
        modules (it imports them, never the other way round), so it is imported here, on first use."""
        if getattr(self, "_fast_sampler", None) is None:
            from fractal_ext.sampler import FastSampler

            self._fast_sampler = FastSampler(self)
        return self._fast_sampler

    def check_training_input(self, imgs, labels):
        """Normalised fp32 images [B, C, H, W] with pixels in range, and one label in [0, class_num)
        per image; the value checks cost one host synchronisation per step between them."""
        size, channels = self.config.img_size_list[0], self.config.channels
        if imgs.dim() != 4 or imgs.shape[0] == 0 or imgs.shape[1] != channels or imgs.shape[-2:] != (size, size):
            raise ValueError(f"images must be [B >= 1, {channels}, {size}, {size}], got {tuple(imgs.shape)}")
        if imgs.dtype != self.fake_latent.dtype:
            raise ValueError(f"images must be {self.fake_latent.dtype} like the model's weights, got {imgs.dtype}")
        self._check_label_layout(labels)
        if labels.shape[0] != imgs.shape[0] or labels.device != imgs.device:
            raise ValueError(f"labels must hold one class per image ({imgs.shape[0]}, on {imgs.device}), got "
                             f"{labels.shape[0]} on {labels.device}")
        pixels = self.normalisation.unit_range(imgs.detach())
        # One tolerance step of 0.5/255: beyond it a pixel would round outside [0, 255]. Written so
        # that NaN (which min and max propagate) fails too.
        pixels_ok, labels_ok = torch.stack([
            (pixels.min() >= -0.5 / 255) & (pixels.max() <= 255.5 / 255), self._labels_in_range(labels),
        ]).tolist()
        if not pixels_ok:
            raise ValueError("images must be pixels in [0, 1] normalised with the model's mean "
                             f"{self.config.pixel_mean} and std {self.config.pixel_std}; got values outside that "
                             "range, or NaN")
        if not labels_ok:
            self._raise_labels_out_of_range(labels)

    @property
    def normalisation(self):
        """The model's pixel normalisation (fractal_ext.pixels.Normalisation): uint8 <-> model space."""
        return self.config.normalisation()

    def check_labels(self, labels):
        """Class labels: a 1-D integer tensor of values in [0, class_num)."""
        self._check_label_layout(labels)
        if labels.numel() and not bool(self._labels_in_range(labels)):
            self._raise_labels_out_of_range(labels)

    @staticmethod
    def _check_label_layout(labels):
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64) or labels.dim() != 1:
            described = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a 1-D integer tensor, got {described}")

    def _labels_in_range(self, labels):
        return (labels.min() >= 0) & (labels.max() < self.num_classes)

    def _raise_labels_out_of_range(self, labels):
        raise ValueError(f"labels must be in [0, {self.num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")

    def build_cond_list(self, labels: torch.Tensor, cfg: float) -> list[torch.Tensor]:
        """Level-0 condition list for class labels [B], as the official generation builds it: class embeddings, with
        CFG followed by as many `fake_latent` rows; repeated once per condition slot."""
        self.check_labels(labels)
        cond = self.class_emb(labels)
        if float(cfg) != 1.0:
            cond = torch.cat([cond, self.fake_latent.expand(labels.shape[0], -1)])
        return [cond] * self.config.num_conds

    def unconditional_cond_list(self, count: int) -> list[torch.Tensor]:
        """Level-0 condition list of `count` unconditional images (the `fake_latent` row; no guidance)."""
        return [self.fake_latent.expand(count, -1)] * self.config.num_conds
