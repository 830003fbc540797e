"""The build: the extension loads, describes itself, and every operator has a CPU kernel."""
import json
import os
import subprocess
import sys

import pytest
import torch

import fractal_ext
from fractal_ext import ops
from fractal_ext.ops import extension as _extension

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_extension_loads():
    assert _extension.AVAILABLE, f"fractal_ext._C failed to load: {_extension.LOAD_ERROR}"
    assert _extension.LOAD_ERROR is None
    assert ops.EXTENSION_AVAILABLE


def test_extension_build_constants():
    ext = _extension._C
    assert isinstance(ext.WITH_CUDA, bool)
    assert isinstance(ext.CUDA_ARCHS, str)
    assert torch.__version__.startswith(ext.TORCH_VERSION)
    if ext.WITH_CUDA:
        assert ext.CUDA_ARCHS and all(a[0].isdigit() for a in ext.CUDA_ARCHS.split(","))
        assert ext.CUDA_VERSION >= 11000
    else:
        assert ext.CUDA_ARCHS == "" and ext.CUDA_VERSION == 0


@pytest.fixture(scope="module")
def info_report():
    result = subprocess.run(
        [sys.executable, "-m", "fractal_ext.cli.info", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_info_reports_the_build(info_report):
    ext = _extension._C
    assert info_report["fractal_ext_version"] == fractal_ext.__version__
    assert info_report["torch_version"] == torch.__version__
    assert info_report["extension_loaded"] is True
    assert info_report["extension_error"] is None
    assert info_report["extension_with_cuda"] == ext.WITH_CUDA
    assert info_report["extension_cuda_archs"] == ext.CUDA_ARCHS
    assert list(info_report["ops"]) == list(ops.OP_NAMES)
    assert info_report["cuda_graphs_default"] == (info_report["ops"]["kv_cache_attention"]["CUDA"] == "native")


def test_info_human_readable_runs():
    result = subprocess.run(
        [sys.executable, "-m", "fractal_ext.cli.info"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "extension        loaded" in result.stdout
    for name in ops.OP_NAMES:
        assert name in result.stdout


@pytest.mark.parametrize("name", ops.OP_NAMES)
def test_every_op_has_a_native_cpu_kernel(name, info_report):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fractal_ext::{name}", "CPU")
    assert info_report["ops"][name]["CPU"] == "native"


@pytest.mark.parametrize("name", ops.OP_NAMES)
def test_cuda_kernels_native_or_reference(name, info_report):
    """A CUDA build compiles a CUDA kernel for every operator but the CPU-only decoding ones; a
    CPU-only build runs every operator on CUDA tensors through its reference."""
    if not torch.backends.cuda.is_built():
        pytest.skip("torch without CUDA: no CUDA dispatch at all")
    cpu_only_operators = {"small_batch_linear", "llama_block_step", "vit_block_step"}
    native = _extension._C.WITH_CUDA and name not in cpu_only_operators
    assert info_report["ops"][name]["CUDA"] == ("native" if native else "reference")


@pytest.mark.parametrize("name", ["patchify", "unpatchify", "gather_neighbour_conditions",
                                  "gather_neighbour_conditions_backward"])
def test_cuda_build_has_native_patchify_gather(name, info_report):
    if not _extension._C.WITH_CUDA:
        pytest.skip("CPU-only build")
    assert info_report["ops"][name]["CUDA"] == "native"


def _plan(monkeypatch, **env):
    import build_config  # the repository root is on the tests' path (pyproject.toml)

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return build_config.plan()


def test_build_plan_cpu_only(monkeypatch):
    plan = _plan(monkeypatch, FRACTAL_EXT_CPU_ONLY="1")
    assert not plan.with_cuda
    assert "FRACTAL_EXT_CPU_ONLY=1" in plan.describe() and plan.describe().startswith("CPU-only build")
    assert not any(s.endswith(".cu") for s in plan.sources)
    assert "csrc/module.cpp" in plan.sources
    assert os.path.join("csrc", "patchify", "cpu.cpp") in plan.sources


def test_build_plan_cuda_archs_define(monkeypatch):
    monkeypatch.delenv("FRACTAL_EXT_CPU_ONLY", raising=False)
    plan = _plan(monkeypatch, TORCH_CUDA_ARCH_LIST="8.0 9.0+PTX")
    if not plan.with_cuda:
        pytest.skip(plan.reason)
    assert plan.cuda_arch_list == "8.0;9.0+PTX"
    assert "FRACTAL_EXT_CUDA_ARCHS=8.0_9.0+PTX" in plan.defines  # nvcc splits -D at commas
    assert os.path.join("csrc", "patchify", "cuda.cu") in plan.sources


def test_source_distribution_holds_everything_the_build_needs(tmp_path):
    """An sdist must build on its own, CUDA kernels included: the build plan, every C++/CUDA source
    and header, and the shipped weights (setuptools alone adds only this machine's planned sources)."""
    import tarfile

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    needed = {path for path in tracked.stdout.split()
              if path.startswith(("csrc/", "fractal_ext/")) or path in ("build_config.py", "setup.py", "pyproject.toml")}
    source = tmp_path / "source"  # a copy, so that the sdist's egg-info is not written into the checkout
    for path in needed | {"MANIFEST.in", "README.md", "requirements.txt", "CMakeLists.txt"}:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(open(os.path.join(ROOT, path), "rb").read())
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")],
                            cwd=source, capture_output=True, text=True, env={**os.environ, "FRACTAL_EXT_CPU_ONLY": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (archive,) = (tmp_path / "dist").iterdir()
    with tarfile.open(archive) as tar:
        packed = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert sorted(needed - packed) == []
