"""Fast sampling: `FastSampler` (behind `FractalGen.sample`) and `generate` (labels in, images out)."""
from fractal_ext.sampler.fast_sampler import FastSampler
from fractal_ext.sampler.generate import default_sampling_settings, generate

__all__ = ["FastSampler", "generate", "default_sampling_settings"]
