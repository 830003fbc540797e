"""A model's configuration (the FractalGen constructor keywords) and the validation of custom level
lists. The named configurations live in fractal_ext.models.registry."""
import dataclasses
import json
from dataclasses import dataclass

from fractal_ext.pixels import PIXEL_MEAN, PIXEL_STD, Normalisation, check_normalisation


@dataclass
class FractalConfig:
    img_size_list: tuple
    embed_dim_list: tuple
    num_blocks_list: tuple
    num_heads_list: tuple
    generator_type_list: tuple
    label_drop_prob: float = 0.1
    class_num: int = 1000
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    guiding_pixel: bool = False
    num_conds: int = 1
    r_weight: float = 1.0
    grad_checkpointing: bool = False
    # Pixels: channels per pixel (1 grey .. 4 RGBA) and each channel's mean / std on the 0..1 scale.
    # None: the ImageNet values for 3 channels (the official models), 0.5 / 0.5 otherwise.
    channels: int = 3
    pixel_mean: tuple | None = None
    pixel_std: tuple | None = None

    def __post_init__(self):
        if self.pixel_mean is None:
            self.pixel_mean = PIXEL_MEAN if self.channels == 3 else (0.5,) * self.channels
        if self.pixel_std is None:
            self.pixel_std = PIXEL_STD if self.channels == 3 else (0.5,) * self.channels
        self.pixel_mean, self.pixel_std = tuple(self.pixel_mean), tuple(self.pixel_std)
        check_normalisation(self.channels, self.pixel_mean, self.pixel_std)

    def normalisation(self) -> Normalisation:
        return Normalisation(self.pixel_mean, self.pixel_std)

    def constructor_kwargs(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.constructor_kwargs(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FractalConfig":
        try:
            values = json.loads(text)
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        except (TypeError, ValueError) as error:
            raise ValueError(f"not a valid fractal_ext model config: {error}") from error

    def architecture(self) -> tuple:
        """What decides the weights' layout and the computation (not dropout or training knobs)."""
        generators = len(self.img_size_list) - 1
        return (self.img_size_list, self.embed_dim_list, self.num_blocks_list, self.num_heads_list,
                tuple(self.generator_type_list[:generators]), self.num_conds, self.guiding_pixel, self.channels,
                self.pixel_mean, self.pixel_std)

    def validate(self):
        levels = len(self.img_size_list)
        if levels < 2:
            raise ValueError(f"img_size_list needs at least 2 levels (a generator and the pixel head), got {self.img_size_list}")
        for name in ("embed_dim_list", "num_blocks_list", "num_heads_list"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"{name} must have one entry per level ({levels}), got {getattr(self, name)}")
        if len(self.generator_type_list) < levels - 1:
            raise ValueError(f"generator_type_list needs one entry per generator level ({levels - 1}), "
                             f"got {self.generator_type_list}")
        if self.img_size_list[-1] != 1:
            raise ValueError(f"the last level models single pixels: img_size_list must end in 1, got {self.img_size_list}")
        for outer, inner in zip(self.img_size_list, self.img_size_list[1:]):
            if inner >= outer or outer % inner:
                raise ValueError(f"each image size must be a proper multiple of the next, got {self.img_size_list}")
        for dim, heads in zip(self.embed_dim_list, self.num_heads_list):
            if heads < 1 or dim % heads:
                raise ValueError(f"embed_dim {dim} is not divisible by num_heads {heads}")
        for i, kind in enumerate(self.generator_type_list[: levels - 1]):
            if kind not in ("ar", "mar"):
                raise ValueError(f"generator_type_list entries must be 'ar' or 'mar', got {kind!r}")
            if kind == "ar" and (self.embed_dim_list[i] // self.num_heads_list[i]) % 4:
                raise ValueError(f"AR level {i}: head_dim must be a multiple of 4 for the 2-D rotary embedding")
            if kind == "mar" and i > 0 and self.generator_type_list[i - 1] == "ar" and self.num_conds > 1:
                raise ValueError(f"level {i} is MAR with num_conds={self.num_conds} but follows an AR level, "
                                 "which passes a single condition")
        if not 1 <= self.num_conds <= 5:
            raise ValueError(f"num_conds must be in 1..5, got {self.num_conds}")
        if self.class_num < 1:
            raise ValueError(f"class_num must be >= 1, got {self.class_num}")
        if not 0.0 <= self.label_drop_prob <= 1.0:
            raise ValueError(f"label_drop_prob must be in [0, 1], got {self.label_drop_prob}")
