"""The `fractal-sample` command line: images written, settings checked, clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from fractal_ext.io.checkpoints import save_model
from fractal_ext.cli.sample import main
from reference_models import build_reference_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_mar.safetensors"
    save_model(build_reference_model("tiny_mar"), path)
    return path


def run_cli(checkpoint, output_dir, *extra):
    return main(["--checkpoint", str(checkpoint), "--output_dir", str(output_dir), "--num_iter_list", "4,2",
                 "--cfg", "2.0", "--temperature", "1.0", "--filter_threshold", "1e-3", *extra])


def test_writes_grid_and_images(tiny_checkpoint, tmp_path, capsys):
    assert run_cli(tiny_checkpoint, tmp_path, "--labels", "1,2,3", "--seed", "5") == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["grid.png", "image_0000_class_1.png", "image_0001_class_2.png", "image_0002_class_3.png"]
    assert Image.open(tmp_path / "image_0001_class_2.png").size == (16, 16)
    assert "images/s" in capsys.readouterr().out


def test_same_seed_same_images(tiny_checkpoint, tmp_path):
    run_cli(tiny_checkpoint, tmp_path / "a", "--labels", "4", "--seed", "1")
    run_cli(tiny_checkpoint, tmp_path / "b", "--labels", "4", "--seed", "1")
    run_cli(tiny_checkpoint, tmp_path / "c", "--labels", "4", "--seed", "1", "--cuda_graphs", "off")
    a, b, c = (torch.from_numpy(np.array(Image.open(tmp_path / name / "grid.png"))) for name in "abc")
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labels", "3,10"], "labels must be in"),
        (["--num_iter_list", "4"], "num_iter_list"),
        (["--cfg", "0.5"], "cfg must be a finite number >= 1"),
        (["--cfg", "nan"], "cfg must be a finite number >= 1"),
        (["--temperature", "0"], "temperature must be a finite number > 0"),
        (["--model", "fractalgan_in64"], "invalid choice"),
        (["--cuda_graphs", "on"], "needs a model on a CUDA device"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_checkpoint, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tiny_checkpoint, tmp_path, *extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_wrong_checkpoint_for_the_model(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tiny_checkpoint), "--model", "fractalar_in64", "--output_dir", str(tmp_path)])
    assert "does not match the model" in capsys.readouterr().err
