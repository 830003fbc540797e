"""Checkpoint-compatible FractalGen models, the official constructors and the registry of named
configurations."""
from fractal_ext.models.ar import AR
from fractal_ext.models.config import FractalConfig
from fractal_ext.models.fractalgen import FractalGen
from fractal_ext.models.mar import MAR
from fractal_ext.models.pixel_head import PixelLoss
from fractal_ext.models.registry import (NAMED_CONFIGS, OFFICIAL_ARCHITECTURES, PUBLISHED_SAMPLING, build_model,
                                         default_sampling_settings)


def fractalar_in64(**kwargs) -> FractalGen:
    return build_model("fractalar_in64", **kwargs)


def fractalmar_in64(**kwargs) -> FractalGen:
    return build_model("fractalmar_in64", **kwargs)


def fractalmar_base_in256(**kwargs) -> FractalGen:
    return build_model("fractalmar_base_in256", **kwargs)


def fractalmar_large_in256(**kwargs) -> FractalGen:
    return build_model("fractalmar_large_in256", **kwargs)


def fractalmar_huge_in256(**kwargs) -> FractalGen:
    return build_model("fractalmar_huge_in256", **kwargs)


__all__ = [
    "AR", "MAR", "PixelLoss", "FractalGen", "FractalConfig", "build_model", "default_sampling_settings",
    "NAMED_CONFIGS", "OFFICIAL_ARCHITECTURES", "PUBLISHED_SAMPLING", "fractalar_in64", "fractalmar_in64",
    "fractalmar_base_in256", "fractalmar_large_in256", "fractalmar_huge_in256",
]
