"""Loads the compiled extension once. Importing it registers the torch.ops.fractal_ext kernels."""
import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

LOAD_ERROR: str | None = None
try:
    from fractal_ext import _C  # noqa: F401
except ImportError as error:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = str(error)
    warnings.warn(
        f"fractal_ext: the C++/CUDA extension is not available ({LOAD_ERROR}); "
        "using the plain-PyTorch reference operators instead. "
        "Build it with `pip install --no-build-isolation .`.",
        RuntimeWarning,
        stacklevel=2,
    )

AVAILABLE = _C is not None
