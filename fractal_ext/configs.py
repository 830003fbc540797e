"""Named model configurations: the official ones (fractal_ext.models.OFFICIAL_ARCHITECTURES) and
the small ones this project trains itself, plus custom configs from a JSON file."""
import json
from pathlib import Path

from fractal_ext.models import OFFICIAL_ARCHITECTURES, FractalGen

SMALL_CONFIGS = {
    # 32x32 images (Fashion-MNIST padded to 32x32, 3 channels), 10 classes. Level 0: MAR over an
    # 8x8 grid of 4x4 patches; level 1: MAR over the 16 pixels of a patch; then the pixel head.
    # Sized for CPU training (0.9M parameters); dropout off (the run sees about one epoch).
    "fractalmar_fmnist32": dict(
        img_size_list=(32, 4, 1), embed_dim_list=(128, 48, 32), num_blocks_list=(4, 1, 1),
        num_heads_list=(4, 4, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=10,
        attn_dropout=0.0, proj_dropout=0.0, label_drop_prob=0.1, r_weight=5.0,
    ),
}

# The model this project trained and ships (README: how, and the evidence that it is real).
SHIPPED_MODEL = Path(__file__).parent / "assets" / "fractalmar_fmnist32.safetensors"

# Sampling settings of the shipped model (python/sample.py defaults).
SMALL_SAMPLING = {
    "fractalmar_fmnist32": dict(num_iter_list=(16, 16), cfg=3.0, cfg_schedule="linear", temperature=1.0,
                                filter_threshold=1e-4),
}


def model_kwargs(name: str | None = None, config_path=None) -> dict:
    """Constructor keywords of a named config (official or small) or of a JSON config file
    (FractalGen keywords, e.g. as written by FractalConfig.to_json)."""
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
    if name in OFFICIAL_ARCHITECTURES:
        return dict(OFFICIAL_ARCHITECTURES[name])
    if name in SMALL_CONFIGS:
        return dict(SMALL_CONFIGS[name])
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(OFFICIAL_ARCHITECTURES) + sorted(SMALL_CONFIGS)} "
                     "or pass a JSON config file")


def build_named_model(name: str | None = None, config_path=None, **overrides) -> FractalGen:
    """FractalGen of a named or JSON config; `overrides` (constructor keywords; None values are
    ignored) replace the config's values."""
    kwargs = model_kwargs(name, config_path)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return FractalGen(**kwargs)
