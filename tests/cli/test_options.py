"""The command-line entry points refuse bad options with a message naming them, before any work."""
import argparse
import runpy
from pathlib import Path

import pytest
import torch

from fractal_ext.cli.common import device, integer, integer_list, number, writable_output
from fractal_ext.models.registry import SHIPPED_MODEL
from fractal_ext.cli.train import parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_integer_type():
    assert integer(1)("3") == 3 and integer(0)("0") == 0
    for text in ("0", "-2", "1.5", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="must be an integer >= 1"):
            integer(1)(text)


def test_number_type():
    assert number(0)("0") == 0.0 and number(0, above=True)("1e-9") == 1e-9 and number(0, maximum=1)("1") == 1.0
    for parse, text, interval in (
        (number(0), "-1", r"\[0, inf\)"), (number(0), "nan", r"\[0, inf\)"), (number(0), "inf", r"\[0, inf\)"),
        (number(0, above=True), "0", r"\(0, inf\)"), (number(0, maximum=1), "1.5", r"\[0, 1\]"),
        (number(0, maximum=1, below=True), "1", r"\[0, 1\)"), (number(0), "x", r"\[0, inf\)"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=f"must be a finite number in {interval}, got '{text}'"):
            parse(text)


def test_integer_list_type():
    assert integer_list("1, 2,3") == [1, 2, 3]
    for text in ("", ",", "1,a", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
            integer_list(text)


def test_device_type():
    assert device("cpu") == "cpu"
    with pytest.raises(argparse.ArgumentTypeError, match="not a device: 'cpux'"):
        device("cpux")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(argparse.ArgumentTypeError, match=f"cuda:{count}: "):
        device(f"cuda:{count}")  # one past the last device (or none at all)


def test_writable_output(tmp_path):
    assert writable_output(tmp_path / "a" / "b" / "grid.png") == tmp_path / "a" / "b" / "grid.png"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []  # the probe is gone
    writable_output(tmp_path / "c", is_dir=True)
    assert (tmp_path / "c").is_dir()
    with pytest.raises(ValueError, match="is a folder, expected a file name"):
        writable_output(tmp_path / "c")
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="cannot write to"):
        writable_output(tmp_path / "file" / "grid.png")  # a file where the folder should be


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch_size", "0", "argument --batch_size: must be an integer >= 1, got 0"),
        ("--epochs", "nan", r"argument --epochs: must be a finite number in (0, inf), got 'nan'"),
        ("--grad_clip", "-1", "argument --grad_clip: must be a finite number in [0, inf)"),
        ("--attn_dropout", "1", "argument --attn_dropout: must be a finite number in [0, 1)"),
        ("--label_drop_prob", "1.5", "argument --label_drop_prob: must be a finite number in [0, 1]"),
        ("--save_last_freq", "0", "argument --save_last_freq: must be a finite number in (0, inf)"),
        ("--num_workers", "-1", "argument --num_workers: must be an integer >= 0"),
    ],
)
def test_training_options_out_of_range(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


SCRIPTS = {"sample": "python/sample.py", "evaluate": "python/evaluate.py",
           "evidence": "examples/fashion_mnist/evidence.py", "train_classifier": "examples/fashion_mnist/train_classifier.py"}


def script_main(name):
    return runpy.run_path(str(ROOT / SCRIPTS[name]), run_name=f"script_{name}")["main"]


@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("sample", ["--per_class", "0"], "argument --per_class: must be an integer >= 1, got 0"),
        ("sample", ["--classes", "3,x"], "argument --classes: expected comma-separated integers"),
        ("sample", ["--num_iter_list", "4"], "num_iter_list needs one entry per generator level"),
        ("sample", ["--classes", "11"], r"labels must be in [0, 10)"),
        ("sample", ["--cfg", "nan"], "cfg must be a finite number >= 1"),
        ("sample", ["--threads", "0"], "argument --threads: must be an integer >= 1"),
        ("evaluate", ["--model_path", str(SHIPPED_MODEL), "--batch_size", "0"], "argument --batch_size: must be"),
        ("evidence", ["--per_class", "0"], "argument --per_class: must be an integer >= 1"),
        ("train_classifier", ["--lr", "0"], "argument --lr: must be a finite number in (0, inf)"),
    ],
)
def test_scripts_refuse_bad_options(tmp_path, capsys, script, argv, message):
    output = ["--output", str(tmp_path / "out.png")] if script in ("sample", "train_classifier") else []
    with pytest.raises(SystemExit) as exit_info:
        script_main(script)(argv + output)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_sample_script_checks_its_output_before_sampling(tmp_path, capsys, monkeypatch):
    main = script_main("sample")
    monkeypatch.setattr("fractal_ext.cli.sample.generate", lambda *args, **kwargs: pytest.fail("sampled"))
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path)])
    assert "is a folder, expected a file name" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "file" / "grid.png")])
    assert "cannot write to" in capsys.readouterr().err
