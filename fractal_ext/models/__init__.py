"""Checkpoint-compatible FractalGen models and the five official constructors."""
from fractal_ext.models.ar import AR
from fractal_ext.models.config import OFFICIAL_ARCHITECTURES, PUBLISHED_SAMPLING, FractalConfig
from fractal_ext.models.fractalgen import FractalGen
from fractal_ext.models.mar import MAR
from fractal_ext.models.pixel_head import PixelLoss
from fractal_ext.models.sampling_controls import SamplingControls


def build_model(name: str, **kwargs) -> FractalGen:
    """An official architecture by name, with the official constructor keywords as overrides."""
    if name not in OFFICIAL_ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(OFFICIAL_ARCHITECTURES)}")
    return FractalGen(**{**OFFICIAL_ARCHITECTURES[name], **kwargs})


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
    "AR", "MAR", "PixelLoss", "FractalGen", "FractalConfig", "SamplingControls", "build_model",
    "OFFICIAL_ARCHITECTURES", "PUBLISHED_SAMPLING", "fractalar_in64", "fractalmar_in64",
    "fractalmar_base_in256", "fractalmar_large_in256", "fractalmar_huge_in256",
]
