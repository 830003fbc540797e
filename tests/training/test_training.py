"""Training loop: learning, exact resume, DDP (torchrun, Gloo) = single process, crash-safe
checkpoints, NaN stop, recipe pieces (parameter groups, schedule, precisions)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fractal_ext.io.checkpoints import CheckpointError, load_model, load_official_checkpoint
from fractal_ext.evaluation import bits_per_dim
from fractal_ext.io.datasets import normalise
from fractal_ext.training import NonFiniteLossError, checkpointing, train, train_step
from fractal_ext.training.distributed import DistInfo
from fractal_ext.training.loop import BatchOrder, build_model_from_args
from fractal_ext.training.optim import build_optimizer, lr_at, param_groups, scaled_lr
from training_helpers import TINY_AR, TINY_MAR, SyntheticImages, tiny_args, tiny_model, without_dropout

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- recipe pieces
def test_param_groups_skip_decay_on_biases_and_1d_parameters():
    model = tiny_model(TINY_MAR)
    no_decay, decay = param_groups(model, 0.05)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert all(n.endswith(".bias") or model.get_parameter(n).dim() == 1 for n in no_decay_names)
    assert {"fake_latent", "class_emb.weight", "generator.mask_token", "generator.pos_embed_learned"} <= decay_names
    assert "generator.norm.weight" in no_decay_names and "generator.patch_emb.bias" in no_decay_names
    assert len(no_decay_names) + len(decay_names) == len(list(model.parameters()))
    optimizer = build_optimizer(model, 1e-3, 0.05)
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_learning_rate_schedule():
    assert scaled_lr(5e-5, 2048) == pytest.approx(4e-4)
    args = dict(lr=1e-3, min_lr=1e-5, warmup_epochs=40, epochs=800)
    assert lr_at(0, **args) == 0.0
    assert lr_at(20, **args) == pytest.approx(5e-4)  # linear warm-up
    assert lr_at(40, **args) == pytest.approx(1e-3)
    assert lr_at(420, **args) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half-way down the cosine
    assert lr_at(800, **args) == pytest.approx(1e-5)
    assert lr_at(20.5, **args) > lr_at(20.25, **args)  # per-iteration (fractional epochs)


def test_batch_order_is_a_seeded_permutation_per_epoch():
    order = BatchOrder(10, 4, seed=1)
    assert order.batches_per_epoch == 2  # the remainder is dropped
    epoch0 = torch.cat([order.indices(0), order.indices(1)])
    assert len(set(epoch0.tolist())) == 8
    assert not torch.equal(order.indices(2), order.indices(0)) or not torch.equal(order.indices(3), order.indices(1))
    assert torch.equal(BatchOrder(10, 4, seed=1).indices(3), order.indices(3))


# ----------------------------------------------------------------------------- learning
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    dataset = SyntheticImages(size=8)
    model = tiny_model(TINY_AR)
    images = normalise(dataset.images)

    def eval_loss():
        return bits_per_dim(model, images, generator=torch.Generator().manual_seed(0))

    before = eval_loss()
    args = tiny_args(tmp_path, "--batch_size", "8", "--epochs", "40", "--lr", "3e-3", "--warmup_epochs", "2",
                     "--save_last_freq", "100")
    args.output_dir = None
    summary = train(args, model=model, dataset=dataset)
    after = eval_loss()
    assert summary["steps"] == 40 and len(summary["losses"]) == 40
    assert after < before - 0.5, (before, after)
    assert sum(summary["losses"][-5:]) < sum(summary["losses"][:5])


# ----------------------------------------------------------------------------- resume
def test_stop_and_resume_reproduces_an_uninterrupted_run(tmp_path):
    """MAR levels, label dropout, dropout and flips: every random path must be restored."""
    dataset = SyntheticImages(size=16)
    common = ("--epochs", "2", "--save_last_freq", "0.5")  # 4 steps per epoch, 8 steps
    full = train(tiny_args(tmp_path / "full", *common), model=tiny_model(), dataset=dataset)
    first = train(tiny_args(tmp_path / "split", *common, "--stop_after", "3"), model=tiny_model(), dataset=dataset)
    assert first["steps"] == 3
    second = train(tiny_args(tmp_path / "split", *common, "--resume", str(tmp_path / "split")),
                   model=tiny_model(seed=123), dataset=dataset)
    assert second["start_step"] == 3
    assert full["losses"][:3] == first["losses"]
    assert full["losses"][3:] == second["losses"]  # bit for bit
    for (name, a), b in zip(full["model"].state_dict().items(), second["model"].state_dict().values()):
        assert torch.equal(a, b), name
    events = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if "event" in e].count("start") == 2


def test_a_new_run_never_overwrites_a_checkpoint_it_does_not_continue(tmp_path):
    dataset = SyntheticImages(size=16)
    train(tiny_args(tmp_path / "run", "--stop_after", "1"), model=tiny_model(), dataset=dataset)
    train(tiny_args(tmp_path / "other", "--stop_after", "1"), model=tiny_model(), dataset=dataset)
    saved = (tmp_path / "run" / "checkpoint-last.pth").read_bytes()
    for extra in ((), ("--resume", str(tmp_path / "other"))):  # a fresh run, and a run continuing another one
        with pytest.raises(CheckpointError, match=f"checkpoint-last.pth exists .* --resume {tmp_path / 'run'}"):
            train(tiny_args(tmp_path / "run", "--stop_after", "1", *extra), model=tiny_model(), dataset=dataset)
    assert (tmp_path / "run" / "checkpoint-last.pth").read_bytes() == saved
    continued = [train(tiny_args(tmp_path / "run", "--stop_after", "1", "--resume", str(resume)), model=tiny_model(),
                       dataset=dataset) for resume in (tmp_path / "run", tmp_path / "run" / "checkpoint-last.pth")]
    assert [summary["start_step"] for summary in continued] == [1, 2]  # continuing it is what resume is for


def test_checkpoint_layout_is_official_and_safetensors(tmp_path):
    dataset = SyntheticImages(size=16)
    train(tiny_args(tmp_path, "--epochs", "0.5"), model=tiny_model(), dataset=dataset)
    checkpoint = load_official_checkpoint(tmp_path / "checkpoint-last.pth")  # weights-only, Namespace allowed
    assert {"model", "optimizer", "scaler", "epoch", "args", "step", "rng"} <= set(checkpoint)
    assert checkpoint["step"] == 2 and checkpoint["epoch"] == 0 and checkpoint["args"].batch_size == 4
    assert isinstance(checkpoint["rng"][0]["torch"], torch.Tensor)
    official_scaler = torch.amp.GradScaler("cpu")  # what the official code restores it into
    official_scaler.load_state_dict(checkpoint["scaler"])
    weights = load_model(tmp_path / "checkpoint-last.safetensors")
    for key, value in checkpoint["model"].items():
        assert torch.equal(weights.state_dict()[key], value), key
    evaluated = load_model(tmp_path / "checkpoint-last.pth")
    assert not evaluated.training


# ----------------------------------------------------------------------------- crashes
def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    dataset = SyntheticImages(size=16)
    common = ("--epochs", "1", "--save_last_freq", "0.5")
    train(tiny_args(tmp_path, *common, "--stop_after", "2"), model=tiny_model(), dataset=dataset)
    before = (tmp_path / "checkpoint-last.pth").read_bytes()

    def dying_save(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_args(tmp_path, *common, "--resume", str(tmp_path)), model=tiny_model(), dataset=dataset)
    monkeypatch.undo()
    assert (tmp_path / "checkpoint-last.pth").read_bytes() == before
    assert load_official_checkpoint(tmp_path / "checkpoint-last.pth")["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_process_killed_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A hard kill (no cleanup code runs) in the middle of torch.save."""
    target = tmp_path / "checkpoint-last.pth"
    checkpointing.atomic_torch_save({"model": {"w": torch.ones(3)}, "step": 1}, target)
    script = (
        "import os, sys, torch\n"
        "from fractal_ext.training import checkpointing\n"
        "def half_then_die(obj, stream, *a, **k):\n"
        "    stream.write(b'PK\\x03\\x04' + bytes(1000)); stream.flush(); os._exit(9)\n"
        "torch.save = half_then_die\n"
        f"checkpointing.atomic_torch_save({{'model': {{'w': torch.zeros(3)}}, 'step': 2}}, {str(target)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 9
    checkpoint = load_official_checkpoint(target)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["model"]["w"], torch.ones(3))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    dataset = SyntheticImages(size=16)
    model = tiny_model()
    forward, calls = model.forward, []

    def poisoned_forward(*args, **kwargs):
        calls.append(1)
        loss = forward(*args, **kwargs)
        return loss * float("nan") if len(calls) > 3 else loss

    model.forward = poisoned_forward
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 .*the last checkpoint, .* was not overwritten"):
        train(tiny_args(tmp_path, "--epochs", "2", "--save_last_freq", "0.5"), model=model, dataset=dataset)
    checkpoint = load_official_checkpoint(tmp_path / "checkpoint-last.pth")
    assert checkpoint["step"] == 2
    for value in checkpoint["model"].values():
        assert torch.isfinite(value).all()
    log = (tmp_path / "log.jsonl").read_text()
    assert '"event": "non_finite_loss"' in log


# ----------------------------------------------------------------------------- precisions
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps(precision):
    dataset = SyntheticImages(size=4)
    model = tiny_model(TINY_MAR).train()
    optimizer = build_optimizer(model, 1e-3, 0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")
    before = [p.detach().clone() for p in model.parameters()]
    loss, grad_norm = train_step(model, optimizer, scaler, normalise(dataset.images), dataset.labels,
                                 torch.Generator().manual_seed(0), precision, grad_clip=3.0)
    assert math.isfinite(loss) and grad_norm is not None and grad_norm > 0
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed > 0.9 * len(before)
    if precision == "fp16":
        assert scaler.state_dict()["scale"] > 0


def test_model_options_reach_the_model(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MAR))
    args = tiny_args(tmp_path, "--model_config", str(config), "--grad_checkpointing", "--label_drop_prob", "0.3",
                     "--r_weight", "2.0")
    model = build_model_from_args(args, class_num=7)
    assert model.config.grad_checkpointing and model.config.label_drop_prob == 0.3
    assert model.config.r_weight == 2.0 and model.config.class_num == 7


# ----------------------------------------------------------------------------- DDP
def single_process_reference(global_batch):
    """Gradients and parameters after one step, and parameters after a 3-step run, in one process
    on the global batch; the same computation as tests/helpers/ddp_worker.py under torchrun."""
    dataset = SyntheticImages(size=16)
    model = without_dropout(tiny_model(TINY_AR))
    optimizer = build_optimizer(model, 1e-3, 0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    order = BatchOrder(len(dataset), global_batch, seed=3)
    images, labels = dataset.batch(order.indices(0))
    train_step(model, optimizer, scaler, normalise(images), labels, torch.Generator().manual_seed(3), "fp32", 0.0,
               DistInfo())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_torchrun_two_gloo_processes_match_a_single_process(tmp_path):
    """2 ranks x batch 4 under torchrun (Gloo, CPU) vs one process x batch 8, same global batch.
    Made deterministic by the model: all-AR levels, no label dropout, dropout off (the only
    per-rank random draws left would be the pixel-target noise, which never moves an exact k/255)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(ROOT / "tests" / "helpers" / "ddp_worker.py"), str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp_step.pt")
    grads, params = single_process_reference(global_batch=8)
    for name, grad in grads.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
        # AdamW's first step is about lr * g / (|g| + eps): where |g| ~ 1e-10 the summation-order
        # differences of the all-reduce (1e-11) move the update by up to ~1e-6 (lr = 1e-3).
        torch.testing.assert_close(ddp["params"][name], params[name], rtol=0, atol=1e-5, msg=name)
    # The whole loop, 3 steps with checkpoint: same losses and weights as one process.
    single = train(tiny_args(tmp_path / "single", "--batch_size", "8", "--epochs", "1.5", "--label_drop_prob", "0"),
                   model=without_dropout(tiny_model(TINY_AR)), dataset=SyntheticImages(size=16))
    ddp_checkpoint = load_official_checkpoint(tmp_path / "run" / "checkpoint-last.pth")
    assert ddp_checkpoint["step"] == single["steps"] == 3 and len(ddp_checkpoint["rng"]) == 2
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-5)
    for name, value in single["model"].state_dict().items():
        torch.testing.assert_close(ddp_checkpoint["model"][name], value, rtol=0, atol=1e-5, msg=name)


# ----------------------------------------------------------------------------- evaluation
def test_split_bits_per_dim_weights_batches_by_size():
    from fractal_ext.evaluation import dataset_bits_per_dim, default_num_passes

    model = tiny_model(TINY_AR).eval()
    images = normalise(SyntheticImages(size=4).images)
    result = dataset_bits_per_dim(model, [images[:3], images[3:]], seed=0)
    expected = (3 * bits_per_dim(model, images[:3]) + bits_per_dim(model, images[3:])) / 4
    assert result["images"] == 4 and result["num_passes"] == 1
    assert result["bits_per_dim"] == pytest.approx(expected, rel=1e-6)
    assert default_num_passes(tiny_model(TINY_MAR)) == 10


def test_evaluate_script_on_a_training_checkpoint(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            for i in range(4):
                folder = tmp_path / "data" / split / label
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 10), (60 * i, 100, 0 if label == "a" else 250)).save(folder / f"{i}.png")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_MAR, "class_num": 2}))
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "python" / "train.py"), "--model_config", str(config), "--dataset",
               "imagefolder", "--data_path", str(tmp_path / "data"), "--img_size", "8", "--batch_size", "4",
               "--epochs", "1", "--lr", "1e-3", "--warmup_epochs", "0.5", "--num_workers", "1", "--output_dir",
               str(run), "--no_progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "done: 2 steps" in result.stdout
    result = subprocess.run([sys.executable, str(ROOT / "python" / "evaluate.py"), "--model_path",
                             str(run / "checkpoint-last.pth"), "--dataset", "imagefolder", "--data_path",
                             str(tmp_path / "data"), "--split", "test", "--batch_size", "3", "--num_passes", "2"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["images"] == 8 and report["num_passes"] == 2 and 0 < report["bits_per_dim"] < 16
