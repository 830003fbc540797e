"""One definition of what the extension is built from, shared by setup.py and CMakeLists.txt.

`python build_config.py --cmake` prints the same plan as CMake `set(...)` lines.
"""
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.abspath(__file__))
CXX_FLAGS = ["-O3", "-std=c++20", "-fopenmp"]
NVCC_FLAGS = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"]
# Without a visible GPU we still compile for Hopper (the benchmark machine) and Ampere/Ada.
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0"


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def find_cuda_home():
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def cuda_library_include_dirs(cuda_home):
    """Headers of the CUDA libraries torch's CUDA headers include (cusparse.h, cublas_v2.h, ...).

    A minimal toolkit (nvcc and the runtime only) lacks them; torch's pip wheels ship them in
    site-packages/nvidia/*/include. Those directories are searched after the toolkit's own."""
    if os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    try:
        import torch
    except ImportError:
        return []
    site_packages = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    headers = glob.glob(os.path.join(site_packages, "nvidia", "*", "include", "cusparse.h"))
    return sorted(os.path.dirname(h) for h in headers)


def _visible_gpu_archs():
    try:
        import torch

        if torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    except Exception:  # a broken driver must not break a CPU build
        return None
    return None


@dataclass
class BuildPlan:
    with_cuda: bool
    reason: str
    cuda_home: str | None = None
    cuda_arch_list: str = ""
    sources: list = field(default_factory=list)
    system_include_dirs: list = field(default_factory=list)  # searched after the toolkit's
    defines: list = field(default_factory=list)  # "NAME" or "NAME=VALUE", for setup.py and CMake alike

    def describe(self):
        if self.with_cuda:
            return f"CUDA build (CUDA_HOME={self.cuda_home}, archs {self.cuda_arch_list})"
        return f"CPU-only build: {self.reason}"


def plan():
    cpu_sources = _sources("csrc/*.cpp") + _sources("csrc/*/*.cpp")
    if os.environ.get("FRACTAL_EXT_CPU_ONLY") == "1":
        return BuildPlan(False, "FRACTAL_EXT_CPU_ONLY=1", sources=cpu_sources)
    try:
        import torch
    except ImportError:
        return BuildPlan(False, "torch is not installed", sources=cpu_sources)
    if torch.version.cuda is None:
        return BuildPlan(False, "torch is a CPU-only build", sources=cpu_sources)
    cuda_home = find_cuda_home()
    if cuda_home is None:
        return BuildPlan(False, "nvcc not found (set CUDA_HOME)", sources=cpu_sources)
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or _visible_gpu_archs() or DEFAULT_CUDA_ARCHS
    archs = ";".join(a for a in archs.replace(" ", ";").split(";") if a)
    return BuildPlan(
        True,
        "",
        cuda_home=cuda_home,
        cuda_arch_list=archs,
        sources=cpu_sources + _sources("csrc/*/*.cu"),
        system_include_dirs=cuda_library_include_dirs(cuda_home),
        # The arch list travels as one preprocessor token list joined by underscores ("8.0_9.0"):
        # no quotes or semicolons to survive shells, and no commas, which nvcc splits -D options
        # at. csrc/module.cpp stringifies it and puts the commas back for fractal_ext._C.
        defines=["FRACTAL_EXT_WITH_CUDA", "FRACTAL_EXT_CUDA_ARCHS=" + archs.replace(";", "_")],
    )


def torch_cuda_home(p):
    """The CUDA toolkit torch's own CMake package needs, or None: for a CUDA build of torch it enables
    CUDA and links the toolkit's libraries even when the extension compiles no CUDA source."""
    if p.with_cuda:
        return p.cuda_home
    try:
        import torch
    except ImportError:
        return None
    return find_cuda_home() if torch.version.cuda is not None else None


def nvcc_version(cuda_home):
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]
    except OSError:
        return None


if __name__ == "__main__":
    p = plan()
    if "--cmake" in sys.argv:
        print(f"set(FRACTAL_EXT_WITH_CUDA {'ON' if p.with_cuda else 'OFF'})")
        print(f"set(FRACTAL_EXT_SOURCES {' '.join(p.sources)})")
        print(f"set(FRACTAL_EXT_CXX_FLAGS {' '.join(CXX_FLAGS)})")
        print(f"set(FRACTAL_EXT_NVCC_FLAGS {' '.join(NVCC_FLAGS)})")
        print(f"set(FRACTAL_EXT_CUDA_ARCHS \"{p.cuda_arch_list}\")")
        print(f"set(FRACTAL_EXT_CUDA_HOME \"{p.cuda_home or ''}\")")
        print(f"set(FRACTAL_EXT_DEFINES {' '.join(p.defines)})")
        print(f"set(FRACTAL_EXT_SYSTEM_INCLUDE_DIRS {' '.join(p.system_include_dirs)})")
        toolkit = torch_cuda_home(p)
        print(f"set(FRACTAL_EXT_TORCH_CUDA_HOME \"{toolkit or ''}\")")
        library_include_dirs = cuda_library_include_dirs(toolkit) if toolkit else []
        library_dirs = [os.path.join(os.path.dirname(d), "lib") for d in library_include_dirs]
        print(f"set(FRACTAL_EXT_CUDA_LIBRARY_DIRS {' '.join(library_dirs)})")
        print(f"set(FRACTAL_EXT_BUILD_DESCRIPTION \"{p.describe()}\")")
    else:
        print(p.describe())
