"""Builds fractal_ext and its C++/CUDA extension `fractal_ext._C`.

The CUDA kernels are compiled when nvcc is found (CUDA_HOME, else /usr/local/cuda) and
torch is a CUDA build; otherwise a CPU-only extension is built and the build says so.
Sources and flags come from `build_config.py`, which CMakeLists.txt reads too.
"""
import os
import sys

from setuptools import find_packages, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_config  # noqa: E402


def extension_modules():
    from torch.utils import cpp_extension

    plan = build_config.plan()
    print(f"[fractal_ext] {plan.describe()}", flush=True)
    if plan.with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = plan.cuda_arch_list
        os.environ.setdefault("CUDA_HOME", plan.cuda_home)
        cpp_extension.CUDA_HOME = plan.cuda_home
        extension = cpp_extension.CUDAExtension
    else:
        extension = cpp_extension.CppExtension
    system_includes = [flag for d in plan.system_include_dirs for flag in ("-isystem", d)]
    return [
        extension(
            name="fractal_ext._C",
            sources=plan.sources,
            include_dirs=[os.path.join(build_config.ROOT, "csrc")],
            define_macros=[tuple(d.split("=", 1)) if "=" in d else (d, None) for d in plan.defines],
            extra_compile_args={
                "cxx": build_config.CXX_FLAGS + system_includes,
                "nvcc": build_config.NVCC_FLAGS + system_includes,
            },
            py_limited_api=False,
        )
    ]


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


# Name, version, dependencies and console scripts: pyproject.toml.
setup(
    packages=find_packages(include=["fractal_ext", "fractal_ext.*"]),
    package_data={"fractal_ext": ["assets/*.safetensors"]},
    ext_modules=extension_modules(),
    cmdclass={"build_ext": build_ext_class()},
)
