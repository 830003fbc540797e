"""Class-conditional sampling grids (generate, the main job's python/sample.py) and the shipped files."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from fractal_ext.io.checkpoints import load_model, save_model
from fractal_ext.io.images import save_grid_png
from fractal_ext.models.registry import RGB_EXAMPLE_MODEL, SHIPPED_MODEL, SHIPPED_MODEL_NAME, registered_name
from fractal_ext.sampler import generate
from training_helpers import TINY_MAR, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_generate_and_png_grid(tmp_path):
    from PIL import Image

    save_model(tiny_model(TINY_MAR), tmp_path / "tiny.safetensors", model_name="tiny")
    model = load_model(tmp_path / "tiny.safetensors")
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images = generate(model, labels, num_iter_list=[4, 4], cfg=2.0, generator=torch.Generator().manual_seed(0),
                      batch_size=4, progress=True)
    again = generate(model, labels, num_iter_list=[4, 4], cfg=2.0, generator=torch.Generator().manual_seed(0),
                     batch_size=4)
    assert images.shape == (6, 8, 8, 3) and images.dtype == torch.uint8 and torch.equal(images, again)
    path = save_grid_png(images, rows=3, path=tmp_path / "grid.png", pad=2, scale=2)
    with Image.open(path) as png:
        assert png.size == (2 * (2 * 10 + 2), 2 * (3 * 10 + 2))


def test_shipped_models_and_sample_script(tmp_path):
    assert SHIPPED_MODEL.stat().st_size <= 20 * 2**20
    model = load_model(SHIPPED_MODEL)
    assert model.config.img_size_list == (28, 4, 1) and model.config.class_num == 10 and model.config.channels == 1
    assert registered_name(model.config) == SHIPPED_MODEL_NAME
    example = load_model(RGB_EXAMPLE_MODEL)
    assert example.config.img_size_list == (32, 4, 1) and example.config.channels == 3
    out = tmp_path / "two.png"
    result = subprocess.run([sys.executable, str(ROOT / "python" / "sample.py"), "--classes", "7,9", "--per_class", "1",
                             "--num_iter_list", "4,4", "--output", str(out)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and "2 images in" in result.stdout


def test_shipped_classifier_loads():
    from fractal_ext.evaluation.fashion_classifier import load_classifier

    classifier = load_classifier()
    assert classifier.predict(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2,)
