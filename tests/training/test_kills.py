"""Hard kills (SIGKILL: no cleanup code runs) at random moments of a training run, several of them
inside a checkpoint write, each followed by a restart: the folder always holds exactly one valid
checkpoint, the next start removes what the dead run left half-written, and the losses of the
finished run equal those of an uninterrupted one, bit for bit."""
import json
import os
import random
import signal
import subprocess
import sys
import time

from fractal_ext.io.checkpoints import load_official_checkpoint
from repo import TESTS

SCRIPT = TESTS / "helpers" / "killable_training.py"
TOTAL_STEPS = 12


def start(output_dir, kill_at_save=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(output_dir), str(kill_at_save)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def records(output_dir):
    path = output_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses_by_step(output_dir):
    """The loss of each step from the log (a step run again after a restart: its last record)."""
    return {r["step"]: r["loss"] for r in records(output_dir) if "loss" in r and "event" not in r}


def stray_files(output_dir):
    return sorted(p.name for p in output_dir.iterdir() if p.name.endswith(".tmp"))


def test_repeated_kills_leave_one_valid_checkpoint_and_resume_exactly(tmp_path):
    reference = start(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]
    expected = losses_by_step(tmp_path / "reference")
    assert sorted(expected) == list(range(1, TOTAL_STEPS + 1))

    run = tmp_path / "killed"
    rng = random.Random(0)
    plans = [("mid-save", 3), ("random", 0), ("mid-save", 2), ("random", 0), ("random", 0), ("mid-save", 4)]
    kills_inside_saves = 0
    for kind, save in plans:
        process = start(run, kill_at_save=save)
        if kind == "random":
            # Wait for a few new steps, then kill at a random moment (often inside the slow save).
            seen = len(records(run))
            deadline = time.time() + 120
            while len(records(run)) < seen + rng.randint(2, 6) and process.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.06))
            process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=300) in (-signal.SIGKILL, 0), process.stderr.read()[-2000:]
        kills_inside_saves += bool(stray_files(run))
        checkpoints = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-last") and
                             not p.name.endswith(".tmp"))
        if checkpoints:  # exactly one checkpoint, and it is whole
            assert checkpoints == ["checkpoint-last.pth", "checkpoint-last.safetensors"]
            load_official_checkpoint(run / "checkpoint-last.pth")  # zip CRCs verified
    assert kills_inside_saves >= 3  # the mid-save kills at least

    final = start(run)
    assert final.wait(timeout=300) == 0, final.stderr.read()[-2000:]
    assert stray_files(run) == []
    starts = [r for r in records(run) if r.get("event") == "start"]
    assert len(starts) == len(plans) + 1
    assert sum(bool(r["removed_temporary_files"]) for r in starts) >= 3  # each start after a mid-save kill
    assert load_official_checkpoint(run / "checkpoint-last.pth")["step"] == TOTAL_STEPS
    assert losses_by_step(run) == expected  # bit for bit, every step


def test_a_second_run_on_a_folder_in_use_is_refused_and_writes_nothing(tmp_path):
    import pytest

    from fractal_ext.io.checkpoints import CheckpointError
    from fractal_ext.io.run_lock import claim_output_dir
    from fractal_ext.training import train
    from training_helpers import SyntheticImages, tiny_args, tiny_model

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from fractal_ext.io.run_lock import claim_output_dir; lock = claim_output_dir(sys.argv[2]); "
                               "print('held', flush=True); time.sleep(60)", str(TESTS.parent), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(CheckpointError, match=rf"is in use by another run \(process {holder.pid}\)"):
            train(tiny_args(tmp_path), model=tiny_model(), dataset=SyntheticImages(size=16))
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)  # a dead holder's lock goes with it
        holder.wait()
    (tmp_path / ".checkpoint-last.pth.ab12cd34.tmp").write_bytes(b"half a checkpoint")
    lock = claim_output_dir(tmp_path)
    assert lock.removed == [".checkpoint-last.pth.ab12cd34.tmp"] and stray_files(tmp_path) == []
    lock.release()
    train(tiny_args(tmp_path), model=tiny_model(), dataset=SyntheticImages(size=16))
    assert (tmp_path / "checkpoint-last.pth").is_file()
