"""Sampling at scale: the images do not depend on how the chunks are shared out (ranks, restarts,
torchrun), a killed run finishes with the shards of an uninterrupted one, and a folder of another
run is refused."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from channel_models import tiny
from fractal_ext.evaluation import shards
from fractal_ext.io.checkpoints import save_model
from repo import ROOT

SETTINGS = dict(num_iter_list=[3, 2], cfg=2.0, cfg_schedule="linear", temperature=1.0, filter_threshold=1e-4)
SAMPLING = dict(greedy=False, raster_order=False, implementation="fast", precision="fp32")


def describe(model, num_images=12, chunk_size=5, seed=7):
    return shards.describe_run(model, num_images, chunk_size, seed, SETTINGS, SAMPLING)


def all_shards(folder, run):
    return [shards.read_shard(folder, run, chunk) for chunk in range(run.num_chunks)]


def assert_same_shards(first, second, run):
    for chunk, (a, b) in enumerate(zip(all_shards(first, run), all_shards(second, run))):
        assert a is not None and b is not None, f"chunk {chunk} missing"
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"chunk {chunk} differs"


@pytest.fixture(scope="module")
def model():
    return tiny("mar", 1)


def test_labels_are_class_balanced_in_class_order(model):
    run = describe(model)
    labels = torch.cat([run.labels(chunk) for chunk in range(run.num_chunks)])
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [len(run.chunk_images(chunk)) for chunk in range(run.num_chunks)] == [5, 5, 2]
    assert len({run.seed_of(chunk) for chunk in range(100)}) == 100


def test_two_ranks_and_a_restart_give_the_images_of_one_process(model, tmp_path):
    run = describe(model)
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        shards.claim_folder(folder, run)
    assert shards.sample_chunks(model, run, one, progress=None) == [0, 1, 2]
    assert shards.sample_chunks(model, run, two, rank=1, world_size=2, progress=None) == [1]
    assert shards.sample_chunks(model, run, two, rank=0, world_size=1, progress=None) == [0, 2]  # skips chunk 1
    assert_same_shards(one, two, run)
    images, labels = shards.load_samples(one, run)
    assert images.shape == (12, 8, 8, 1) and images.dtype == torch.uint8 and labels.tolist()[4:8] == [1] * 4
    # Another seed gives other images (the comparison above can fail).
    other = describe(model, seed=8)
    shards.claim_folder(tmp_path / "other", other)
    shards.sample_chunks(model, other, tmp_path / "other", progress=None)
    assert not torch.equal(shards.load_samples(tmp_path / "other", other)[0], images)


def test_a_folder_of_another_run_is_refused(model, tmp_path):
    shards.claim_folder(tmp_path, describe(model))
    with pytest.raises(shards.GenerationRunError, match="different run.*seed"):
        shards.claim_folder(tmp_path, describe(model, seed=8))
    with pytest.raises(shards.GenerationRunError, match="different run.*model_hash"):
        shards.claim_folder(tmp_path, describe(tiny("mar", 1, seed=1)))
    shards.claim_folder(tmp_path, describe(model))  # the same run: accepted (resumed)
    (tmp_path / shards.RUN_FILE).write_text('{"seed": 1}')
    with pytest.raises(shards.GenerationRunError, match="not a run description"):
        shards.recorded_run(tmp_path)


def test_missing_and_wrong_shards_are_named(model, tmp_path):
    run = describe(model)
    shards.claim_folder(tmp_path, run)
    shards.sample_chunks(model, run, tmp_path, rank=0, world_size=3, progress=None)
    with pytest.raises(shards.GenerationRunError, match="2 of 3 chunks have no shard yet \\(1, 2\\)"):
        shards.load_samples(tmp_path, run)
    shards.shard_path(tmp_path, 1).write_bytes(b"garbage")
    with pytest.raises(shards.GenerationRunError, match="not a readable shard"):
        shards.read_shard(tmp_path, run, 1)
    os.replace(shards.shard_path(tmp_path, 0), shards.shard_path(tmp_path, 2))
    with pytest.raises(shards.GenerationRunError, match="does not hold the 2 images of chunk 2"):
        shards.read_shard(tmp_path, run, 2)


def test_a_rank_removes_the_interrupted_writes_of_its_own_chunks_only(model, tmp_path):
    run = describe(model)
    shards.claim_folder(tmp_path, run)
    leftovers = {chunk: shards.shard_path(tmp_path, chunk).with_name(f".chunk-{chunk:06d}.safetensors.a1b2c3d4.tmp")
                 for chunk in range(3)}
    for path in leftovers.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a shard")
    shards.sample_chunks(model, run, tmp_path, rank=0, world_size=2, progress=None)  # chunks 0 and 2
    assert [path.exists() for path in leftovers.values()] == [False, True, False]  # chunk 1 is rank 1's
    assert shards.read_shard(tmp_path, run, 0) is not None and shards.read_shard(tmp_path, run, 1) is None


@pytest.mark.parametrize("num_images", [10, 0])
def test_image_counts_that_are_not_class_balanced_are_refused(model, num_images):
    with pytest.raises(shards.GenerationRunError, match="multiple of the model's 3 classes"):
        describe(model, num_images=num_images)


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path)
    return path


def command(model_file, folder, *extra, launcher=(sys.executable, "-m", "fractal_ext.cli.evaluate")):
    return [*launcher, "generation", "--model_path", str(model_file), "--num_images", "36", "--batch_size", "2",
            "--seed", "7", "--num_iter_list", "3,2", "--cfg", "2", "--output_dir", str(folder), "--sample_only",
            "--device", "cpu", *extra]


def environment():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_a_run_killed_at_random_points_finishes_with_the_shards_of_an_uninterrupted_one(model_file, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(command(model_file, whole), check=True, env=environment(), capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    chooser = random.Random(os.getpid())
    for attempt in range(3):
        process = subprocess.Popen(command(model_file, killed), env=environment(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        target = len(list((killed / "shards").glob("*.safetensors"))) if (killed / "shards").is_dir() else 0
        target += chooser.randint(1, 3)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:
            if (killed / "shards").is_dir() and len(list((killed / "shards").glob("*.safetensors"))) >= target:
                time.sleep(chooser.uniform(0, 0.05))  # somewhere inside the next chunk
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert 0 < len(list((killed / "shards").glob("*.safetensors"))) < 18  # the kills fell inside the run
    finish = subprocess.run(command(model_file, killed), env=environment(), capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert "chunks are on disk already" in finish.stdout
    run = shards.recorded_run(whole)
    assert_same_shards(whole, killed, run)
    assert not list(killed.glob("shards/.*.tmp"))  # no partial shard left under a shard's name


def test_torchrun_with_two_processes_gives_the_shards_of_one(model_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(command(model_file, one), check=True, env=environment(), capture_output=True, timeout=300)
    result = subprocess.run(command(model_file, two, launcher=(
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(ROOT / "python" / "evaluate.py"))), env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 1]" in result.stdout
    run = shards.recorded_run(one)
    assert_same_shards(one, two, run)
