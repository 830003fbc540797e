"""The prepared GPU check (benchmarks/gpu_check.sh) runs where no GPU is lent to CI: what of it
can be checked without a GPU is checked here, so that a short GPU session is not spent on a typo."""
import os
import subprocess
import sys

import pytest

from benchmarks import sanitize_ops
from repo import ROOT


def test_the_sanitizer_inputs_pass_every_check_on_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sanitize_ops.py", "--device", "cpu"])
    assert sanitize_ops.main() == 0
    assert "every op ran on cpu" in capsys.readouterr().out


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
