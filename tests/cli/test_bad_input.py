"""Every command-line entry point turns bad input into a message and exit status 2, before any work
where the input can be checked first, and never leaves a partial file behind."""
import errno
import json

import pytest
import torch
from PIL import Image

from fractal_ext.cli import evaluate, info, sample, train
from fractal_ext.io.checkpoints import save_model
from reference_models import build_reference_model
from training_helpers import TINY_MAR


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_mar.safetensors"
    save_model(build_reference_model("tiny_mar"), path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An 8x8 RGB image folder of two classes, four images each."""
    root = tmp_path_factory.mktemp("images") / "train"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(4):
            Image.fromarray((torch.rand(8, 8, 3) * 255).to(torch.uint8).numpy()).save(root / label / f"{index}.png")
    return root.parent


def fails(main, argv, message, capsys, code=2):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def no_sampling(monkeypatch):
    monkeypatch.setattr(sample, "generate", lambda *args, **kwargs: pytest.fail("sampled before checking its input"))


SAMPLE_SETTINGS = ["--num_iter_list", "4,2", "--cfg", "2.0", "--per_class", "1"]


@pytest.mark.parametrize("extra, message", [
    (["--output", "{tmp}/samples"], "must end in an image extension"),
    (["--output", "{tmp}/samples.txt"], "must end in an image extension"),
    (["--scale", "100000"], "the grid would be"),
    (["--output_dir", "{tmp}/a_file"], "cannot write to"),
    (["--seed", str(2**70)], "argument --seed: must be an integer in [0, 18446744073709551615]"),
    (["--seed", "-1"], "argument --seed: must be an integer in"),
    (["--model", "fractalmar_in64"], "does not match the model fractalmar_in64: it holds a custom model"),
])
def test_sample_refuses_before_sampling(tiny_checkpoint, tmp_path, capsys, monkeypatch, extra, message):
    no_sampling(monkeypatch)
    (tmp_path / "a_file").write_text("")
    extra = [x.format(tmp=tmp_path) for x in extra]
    output = [] if "--output" in extra or "--output_dir" in extra else ["--output", str(tmp_path / "grid.png")]
    fails(sample.main, ["--checkpoint", str(tiny_checkpoint), *SAMPLE_SETTINGS, *output, *extra], message, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_sample_refuses_non_finite_weights_unless_told(tmp_path, capsys):
    model = build_reference_model("tiny_mar")
    with torch.no_grad():
        model.fake_latent[0, 0] = float("nan")
    save_model(model, tmp_path / "nan.safetensors")
    argv = ["--checkpoint", str(tmp_path / "nan.safetensors"), *SAMPLE_SETTINGS, "--output", str(tmp_path / "g.png")]
    fails(sample.main, argv, "weights with NaN or infinite values: fake_latent", capsys)
    assert sample.main(argv + ["--skip_checkpoint_checks"]) == 0


def test_a_full_disk_is_a_message_and_leaves_the_previous_grid(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    grid = tmp_path / "grid.png"
    argv = ["--checkpoint", str(tiny_checkpoint), *SAMPLE_SETTINGS, "--labels", "1", "--output", str(grid)]
    assert sample.main(argv) == 0
    before = grid.read_bytes()

    def disk_full(self, stream, *args, **kwargs):
        stream.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    fails(sample.main, argv + ["--seed", "1"], "No space left on device", capsys)
    assert grid.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_sample_reads_a_training_checkpoint(tmp_path, image_folder):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MAR))
    common = ["--model_config", str(config), "--dataset", "imagefolder", "--data_path", str(image_folder),
              "--img_size", "8", "--batch_size", "4", "--epochs", "1", "--no_progress", "--num_workers", "0",
              "--device", "cpu"]
    assert train.main([*common, "--output_dir", str(tmp_path / "run")]) == 0
    assert sample.main(["--checkpoint", str(tmp_path / "run" / "checkpoint-last.pth"), "--num_iter_list", "2,2",
                        "--labels", "0,1", "--output", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize("make_argv, message", [
    (lambda tmp, images: ["--model_config", str(tmp / "list.json")], "must hold a JSON object"),
    (lambda tmp, images: ["--model_config", str(tmp / "broken.json")], "is not valid JSON"),
    (lambda tmp, images: ["--model_config", str(tmp / "tiny.json"), "--dataset", "imagefolder", "--data_path",
                          str(images), "--img_size", "16"], "--img_size 16 does not match the model's image size 8"),
    (lambda tmp, images: ["--output_dir", str(tmp / "a_file")], "cannot write"),
    (lambda tmp, images: ["--seed", str(2**40)], "argument --seed: must be an integer in [0, 4294967295]"),
    (lambda tmp, images: ["--resume", str(tmp / "nowhere")], "--resume: no checkpoint at"),
])
def test_train_refuses_bad_input(tmp_path, image_folder, capsys, make_argv, message):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_MAR))
    (tmp_path / "a_file").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["--output_dir", str(tmp_path / "run"), "--no_progress", "--device", "cpu", "--batch_size", "4",
            "--num_workers", "0", *make_argv(tmp_path, image_folder)]
    fails(train.main, argv, message, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_evaluate_refuses_bad_input_and_reports_a_nan_result(tiny_checkpoint, tmp_path, image_folder, capsys):
    images = ["--dataset", "imagefolder", "--data_path", str(image_folder), "--split", "train"]
    fails(evaluate.main, ["--model_path", str(tiny_checkpoint), *images, "--img_size", "8"],
          "--img_size 8 does not match the model, which takes 16x16 images", capsys)
    fails(evaluate.main, ["--model_path", str(tmp_path / "missing.safetensors")], "checkpoint not found", capsys)
    fails(evaluate.main, ["--model_path", str(tiny_checkpoint), "--seed", "x"], "argument --seed", capsys)
    model = build_reference_model("tiny_mar")
    with torch.no_grad():
        model.generator.norm.weight.fill_(float("inf"))
    save_model(model, tmp_path / "inf.safetensors")
    folder = tmp_path / "images16" / "train" / "a"  # the images this model takes
    folder.mkdir(parents=True)
    for index in range(2):
        Image.fromarray((torch.rand(16, 16, 3) * 255).to(torch.uint8).numpy()).save(folder / f"{index}.png")
    assert evaluate.main(["--model_path", str(tmp_path / "inf.safetensors"), "--skip_checkpoint_checks",
                          "--dataset", "imagefolder", "--data_path", str(tmp_path / "images16"), "--split",
                          "train"]) == 1
    assert "its weights or the data are broken" in capsys.readouterr().err


def test_info_refuses_unknown_options(capsys):
    fails(info.main, ["--jsn"], "unrecognized arguments: --jsn", capsys)
