"""Every named model configuration in one place: the five official architectures (paper, Table 1;
the official code's `models/fractalgen.py` constructors), the models this project trains and ships,
the sampling settings each was published or shipped with, and custom configurations from a JSON
file. `default_sampling_settings(model)` finds a model's settings by its architecture."""
import json
from pathlib import Path

from fractal_ext.models.config import FractalConfig
from fractal_ext.models.fractalgen import FractalGen

OFFICIAL_ARCHITECTURES = {
    "fractalar_in64": dict(img_size_list=(64, 4, 1), embed_dim_list=(1024, 512, 128), num_blocks_list=(32, 8, 3),
                           num_heads_list=(16, 8, 4), generator_type_list=("ar", "ar", "ar"), num_conds=1),
    "fractalmar_in64": dict(img_size_list=(64, 4, 1), embed_dim_list=(1024, 512, 128), num_blocks_list=(32, 8, 3),
                            num_heads_list=(16, 8, 4), generator_type_list=("mar", "mar", "ar"), num_conds=5),
    "fractalmar_base_in256": dict(img_size_list=(256, 16, 4, 1), embed_dim_list=(768, 384, 192, 64),
                                  num_blocks_list=(24, 6, 3, 1), num_heads_list=(12, 6, 3, 4),
                                  generator_type_list=("mar", "mar", "mar", "ar"), num_conds=5, guiding_pixel=True),
    "fractalmar_large_in256": dict(img_size_list=(256, 16, 4, 1), embed_dim_list=(1024, 512, 256, 64),
                                   num_blocks_list=(32, 8, 4, 1), num_heads_list=(16, 8, 4, 4),
                                   generator_type_list=("mar", "mar", "mar", "ar"), num_conds=5, guiding_pixel=True),
    "fractalmar_huge_in256": dict(img_size_list=(256, 16, 4, 1), embed_dim_list=(1280, 640, 320, 64),
                                  num_blocks_list=(40, 10, 5, 1), num_heads_list=(16, 8, 4, 4),
                                  generator_type_list=("mar", "mar", "mar", "ar"), num_conds=5, guiding_pixel=True),
}

# Published sampling settings of the official models (paper, Table 2; docs/semantics.md).
PUBLISHED_SAMPLING = {
    "fractalar_in64": dict(num_iter_list=(64, 16), cfg=11.0, cfg_schedule="linear", temperature=1.03,
                           filter_threshold=1e-4),
    "fractalmar_in64": dict(num_iter_list=(64, 16), cfg=6.5, cfg_schedule="linear", temperature=1.02,
                            filter_threshold=1e-4),
    "fractalmar_base_in256": dict(num_iter_list=(64, 16, 16), cfg=29.0, cfg_schedule="linear", temperature=1.1,
                                  filter_threshold=1e-4),
    "fractalmar_large_in256": dict(num_iter_list=(64, 16, 16), cfg=21.0, cfg_schedule="linear", temperature=1.1,
                                   filter_threshold=1e-4),
    "fractalmar_huge_in256": dict(num_iter_list=(64, 16, 16), cfg=19.0, cfg_schedule="linear", temperature=1.1,
                                  filter_threshold=1e-4),
}

# The models this project trains itself.
PROJECT_CONFIGS = {
    # 32x32 images (Fashion-MNIST padded to 32x32, 3 channels), 10 classes. Level 0: MAR over an
    # 8x8 grid of 4x4 patches; level 1: MAR over the 16 pixels of a patch; then the pixel head.
    # Sized for CPU training (0.9M parameters); dropout off (the run sees about one epoch).
    "fractalmar_fmnist32": dict(
        img_size_list=(32, 4, 1), embed_dim_list=(128, 48, 32), num_blocks_list=(4, 1, 1),
        num_heads_list=(4, 4, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=10,
        attn_dropout=0.0, proj_dropout=0.0, label_drop_prob=0.1, r_weight=5.0,
    ),
    # Fashion-MNIST at its own size and in grey: 28x28 = a 7x7 grid of 4x4 patches, one channel
    # normalised with the data's own mean / std. Level 0: MAR over the 49 patches; level 1: MAR
    # over the 16 pixels of a patch; then a one-channel pixel head. Sized for long CPU training.
    "fractalmar_fmnist28_grey": dict(
        img_size_list=(28, 4, 1), embed_dim_list=(160, 64, 32), num_blocks_list=(6, 2, 1),
        num_heads_list=(5, 4, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=10,
        attn_dropout=0.0, proj_dropout=0.0, label_drop_prob=0.1, r_weight=1.0,
        channels=1, pixel_mean=(0.286,), pixel_std=(0.353,),
    ),
}
PROJECT_SAMPLING = {
    "fractalmar_fmnist32": dict(num_iter_list=(16, 16), cfg=3.0, cfg_schedule="linear", temperature=1.0,
                                filter_threshold=1e-4),
    "fractalmar_fmnist28_grey": dict(num_iter_list=(24, 16), cfg=7.0, cfg_schedule="linear", temperature=1.0,
                                     filter_threshold=1e-4),
}

# The model this project trained and ships (docs/fashion_mnist.md: how, and the evidence that it is real),
# and its first model, kept as an example of an RGB model (noisier: 0.75 epoch).
SHIPPED_MODEL_NAME = "fractalmar_fmnist28_grey"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "fractalmar_fmnist28_grey.safetensors"
RGB_EXAMPLE_MODEL = Path(__file__).resolve().parents[1] / "assets" / "fractalmar_fmnist32.safetensors"

NAMED_CONFIGS = {**OFFICIAL_ARCHITECTURES, **PROJECT_CONFIGS}
NAMED_SAMPLING = {**PUBLISHED_SAMPLING, **PROJECT_SAMPLING}


def model_kwargs(name: str | None = None, config_path=None) -> dict:
    """Constructor keywords of a named config or of a JSON config file (FractalGen keywords, e.g. as
    written by FractalConfig.to_json)."""
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise FileNotFoundError(f"model config file not found: {path}")
        try:
            values = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"model config file {path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"model config file {path} must hold a JSON object of FractalGen keywords")
        return values
    if name in NAMED_CONFIGS:
        return dict(NAMED_CONFIGS[name])
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(NAMED_CONFIGS)} or pass a JSON config file")


def build_model(name: str | None = None, config_path=None, **overrides) -> FractalGen:
    """FractalGen of a named or JSON config; `overrides` (constructor keywords; None values are
    ignored) replace the config's values."""
    kwargs = model_kwargs(name, config_path)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return FractalGen(**kwargs)


def registered_name(config: FractalConfig, names=None) -> str | None:
    """The named configuration whose architecture `config` has (any class count or dropout), or None.
    `names` restricts the search (default: every named configuration)."""
    for name in names or NAMED_CONFIGS:
        # Dropout, class count and training knobs come from `config`; the pixels from the named
        # configuration (3 channels, ImageNet, where it says nothing).
        pixels = dict(channels=3, pixel_mean=None, pixel_std=None)
        named = FractalConfig(**{**config.constructor_kwargs(), **pixels, **NAMED_CONFIGS[name]})
        if named.architecture() == config.architecture():
            return name
    return None


def official_name(config: FractalConfig) -> str | None:
    """The official model whose architecture `config` has (any class count), or None."""
    return registered_name(config, OFFICIAL_ARCHITECTURES)


def default_sampling_settings(model: FractalGen) -> dict:
    """The published settings of an official architecture, those of a model this project trained,
    or plain ones (every level in L steps, no guidance)."""
    name = registered_name(model.config)
    if name is not None:
        return dict(NAMED_SAMPLING[name])
    sizes = model.config.img_size_list
    return dict(num_iter_list=tuple((a // b) ** 2 for a, b in zip(sizes, sizes[1:])), cfg=1.0,
                cfg_schedule="constant", temperature=1.0, filter_threshold=1e-4)
