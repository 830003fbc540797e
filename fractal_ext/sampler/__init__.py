"""The fast sampling path: `FastSampler` (behind `FractalGen.sample`), the same recursion as the
modules' eager `sample` on the fused operators, and `generate` (labels in, images out).

One sampling run: `FastSampler.sample` validates the arguments (fractal_ext.settings), chooses the
compute paths once (`plan.choose_paths`: block-step kernels, oneDNN GEMMs, CUDA graphs),
then runs the levels (`ar.py`, `mar.py`, `pixel_head.py`) on the run's buffers (`workspace.py`).
"""
from fractal_ext.sampler.fast_sampler import FastSampler
from fractal_ext.sampler.generate import generate

__all__ = ["FastSampler", "generate"]
