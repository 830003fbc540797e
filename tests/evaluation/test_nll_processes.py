"""The NLL evaluation under torchrun: two processes give the result of one, to the last bit."""
import json
import os
import subprocess
import sys

import torch

from channel_models import tiny
from fractal_ext.io.checkpoints import save_model
from fractal_ext.io.images import save_png
from repo import ROOT


def nll(model_file, data, seed, launcher=()):
    command = [*launcher, str(ROOT / "python" / "evaluate.py"), "--model_path", str(model_file), "--dataset",
               "imagefolder", "--data_path", str(data), "--split", "train", "--batch_size", "3", "--num_passes", "2",
               "--seed", str(seed)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, *command] if not launcher else command, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_processes_give_the_nll_of_one(tmp_path):
    model_file = tmp_path / "tiny.safetensors"
    save_model(tiny("mar", 1), model_file)
    generator = torch.Generator().manual_seed(0)
    for label in range(3):
        for index in range(4):
            save_png(torch.randint(0, 256, (8, 8, 1), generator=generator, dtype=torch.uint8),
                     tmp_path / "data" / f"class{label}" / f"{index}.png")
    one = nll(model_file, tmp_path / "data", seed=3)
    two = nll(model_file, tmp_path / "data", seed=3, launcher=(
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"))
    assert one["images"] == two["images"] == 12 and two["processes"] == 2
    assert one["bits_per_dim"] == two["bits_per_dim"]
    # The random masks matter (the comparison above can fail): another seed, another value.
    assert nll(model_file, tmp_path / "data", seed=4)["bits_per_dim"] != one["bits_per_dim"]
