"""The prepared GPU check (benchmarks/gpu_check.sh) runs where no GPU is lent to CI: what of it
can be checked without a GPU is checked here, so that a short GPU session is not spent on a typo."""
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import sanitize_ops
from fractal_ext import ops
from repo import ROOT


def test_the_sanitizer_inputs_pass_every_check_on_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sanitize_ops.py", "--device", "cpu"])
    assert sanitize_ops.main() == 0
    assert "every op ran on cpu" in capsys.readouterr().out


class _OperatorsCalled(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fractal_ext":
            self.names.add(func._opname)
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not (ops.EXTENSION_AVAILABLE and torch.backends.cuda.is_built()), reason="needs the extension and a CUDA torch")
def test_the_sanitizer_reaches_every_operator_with_a_cuda_kernel(monkeypatch):
    # A new CUDA kernel that the sanitizer script does not call would go unchecked on the GPU.
    monkeypatch.setattr(sys, "argv", ["sanitize_ops.py", "--device", "cpu"])
    with _OperatorsCalled() as called:
        assert sanitize_ops.main() == 0
    assert called.names == set(ops.OP_NAMES) - set(ops.REFERENCE_CUDA_OPS)


def test_gpu_check_is_valid_bash_and_refuses_a_machine_without_a_gpu(tmp_path):
    script = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"]).returncode == 0:
        pytest.skip("a GPU is visible: the script would run the whole check")
    result = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stdout
    assert (tmp_path / "out" / "gpu_check.log").exists()
