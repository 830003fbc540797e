"""The CUDA kernels of csrc/ (csrc/*/kernel.cuh) on the CPU, through tests/cuda_emulator (an
emulator of the CUDA execution model): built with torch's extension loader into build/cuda_emulator
(rebuilt when a source changes), wherever the CUDA headers are installed (no GPU needed). The
include root is csrc/, as for the extension."""
from __future__ import annotations

import functools
import os
import pathlib
import shutil
import sys

from torch.utils import cpp_extension

TESTS = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [TESTS / "cuda_emulator" / name for name in ("fiber_context.cpp", "runtime.cpp", "fenced_memory.cpp", "emulated_ops.cpp", "self_test_kernels.cpp")]
CSRC = TESTS.parent / "csrc"
BUILD = TESTS.parent / "build" / "cuda_emulator"


def cuda_include_dir() -> pathlib.Path | None:
    for home in (os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME, "/usr/local/cuda"):
        if home and (pathlib.Path(home) / "include" / "cuda_fp16.h").is_file():
            return pathlib.Path(home) / "include"
    return None


@functools.cache
def load():
    """(module, None), or (None, why) where the CUDA headers are missing. A failed build raises."""
    include = cuda_include_dir()
    if include is None:
        return None, "the CUDA headers (cuda_fp16.h) are not installed; set CUDA_HOME to a CUDA toolkit"
    if shutil.which("ninja") is None:  # pip's ninja sits beside the interpreter of a venv not activated
        os.environ["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    BUILD.mkdir(parents=True, exist_ok=True)
    module = cpp_extension.load(
        name="fractal_ext_cuda_emulator",
        build_directory=str(BUILD),
        sources=[str(s) for s in SOURCES],
        extra_include_paths=[str(CSRC), str(include)],
        # Hidden symbols: the kernels' inline functions must not interpose fractal_ext._C's. No
        # strict aliasing: CUDA code reads registers through reinterpret_cast (a uint4 as four
        # __half2), which GCC at -O2 otherwise miscompiles (fp16 attention came out wrong).
        extra_cflags=["-O2", "-std=c++20", "-fvisibility=hidden", "-fno-strict-aliasing", "-Wno-unknown-pragmas"],
        with_cuda=False,
    )
    return module, None
