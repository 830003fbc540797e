"""The training loop of the official recipe (docs/training.md), single process or under torchrun (DDP).

Randomness, so that a run is reproducible and a resumed run continues exactly:
- data order and horizontal flips depend only on (seed, step): the images of global batch `step`
  are the same whatever the world size; rank r takes slice r of it;
- the model's random choices (label dropout, MAR orders and masks, the pixel-target noise) come
  from one `torch.Generator` per rank, seeded `seed + rank`; dropout layers use torch's global
  generator, seeded the same way. Both states are saved in every checkpoint and restored.
"""
import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from fractal_ext.io.atomic import write_atomically
from fractal_ext.io.checkpoints import CheckpointError, load_weights
from fractal_ext.io.run_lock import claim_output_dir
from fractal_ext.io.datasets import build_dataset, collate_uint8
from fractal_ext.models import build_model
from fractal_ext.models.registry import model_kwargs
from fractal_ext.settings import AUTOCAST_DTYPES
from fractal_ext.training import checkpointing
from fractal_ext.training.distributed import (DistInfo, all_gather_objects, all_reduce_mean, barrier, cleanup,
                                              init_distributed)
from fractal_ext.training.online_eval import OnlineEvaluation
from fractal_ext.training.optim import build_optimizer, lr_at, scaled_lr, set_lr
from fractal_ext.training.tensorboard import TensorBoardLog


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the optimiser step."""


# ----------------------------------------------------------------------------- data order
class BatchOrder:
    """Global batches of a dataset of `size` items: epoch e is a permutation seeded by (seed, e),
    cut into `size // global_batch` batches (the remainder is dropped, as the official loader does).
    Global step s is batch s % batches_per_epoch of epoch s // batches_per_epoch."""

    def __init__(self, size: int, global_batch: int, seed: int):
        if size < global_batch:
            raise ValueError(f"the dataset has {size} images, fewer than one global batch of {global_batch}")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.batches_per_epoch = size // global_batch
        self._epoch, self._perm = None, None

    def epoch_of(self, step: int) -> int:
        return step // self.batches_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch = self.epoch_of(step)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator)
        start = (step % self.batches_per_epoch) * self.global_batch
        return self._perm[start : start + self.global_batch]

    def flips(self, step: int) -> torch.Generator:
        """Generator of the flips of global batch `step` (same on every rank)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7)


def rank_slice(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    per_rank = batch.shape[0] // info.world_size
    return batch[info.rank * per_rank : (info.rank + 1) * per_rank]


class BatchSource:
    """This rank's uint8 images and labels of each global step, from `step` on. Datasets with a
    `batch(indices)` method (in-memory Fashion-MNIST) are indexed directly; others go through a
    DataLoader with `num_workers` processes."""

    def __init__(self, dataset, order: BatchOrder, info: DistInfo, hflip: bool, num_workers: int = 0):
        self.dataset, self.order, self.info, self.hflip, self.num_workers = dataset, order, info, hflip, num_workers

    def _rank_indices(self, step):
        return rank_slice(self.order.indices(step), self.info)

    def iterate(self, start_step: int, end_step: int):
        if hasattr(self.dataset, "batch"):
            batches = (self.dataset.batch(self._rank_indices(step)) for step in range(start_step, end_step))
        else:
            batches = iter(torch.utils.data.DataLoader(
                self.dataset, batch_sampler=_StepBatches(self, start_step, end_step),
                num_workers=self.num_workers, collate_fn=collate_uint8, persistent_workers=False,
            ))
        for step, (images, labels) in zip(range(start_step, end_step), batches):
            if self.hflip:
                flips_of_global_batch = torch.rand(self.order.global_batch, generator=self.order.flips(step)) < 0.5
                flip = rank_slice(flips_of_global_batch, self.info)
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            yield step, images, labels


class _StepBatches:
    """Lazy batch sampler of a DataLoader: this rank's indices of steps [start, end)."""

    def __init__(self, source: BatchSource, start: int, end: int):
        self.source, self.start, self.end = source, start, end

    def __len__(self):
        return self.end - self.start

    def __iter__(self):
        for step in range(self.start, self.end):
            yield self.source._rank_indices(step).tolist()


# ----------------------------------------------------------------------------- one step
def train_step(model, optimizer, scaler, images, labels, generator, precision="fp32", grad_clip=0.0,
               info: DistInfo | None = None):
    """Forward, loss check, backward, clipping and optimiser step on one batch of normalised
    images. Returns (loss averaged over ranks, gradient norm before clipping or None).
    Raises NonFiniteLossError (on every rank) before touching the weights if the loss is not finite."""
    info = info or DistInfo()
    dtype = AUTOCAST_DTYPES[precision]
    with torch.autocast(device_type=images.device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(images, labels, generator=generator)
    loss_value = float(all_reduce_mean(loss.detach().float(), info))
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(f"loss is {loss_value}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    scaler.step(optimizer)
    scaler.update()
    return loss_value, grad_norm


# ----------------------------------------------------------------------------- set-up
def build_model_from_args(args, class_num: int):
    return build_model(
        args.model, getattr(args, "model_config", None), class_num=class_num,
        label_drop_prob=args.label_drop_prob, r_weight=args.r_weight, grad_checkpointing=args.grad_checkpointing,
        attn_dropout=getattr(args, "attn_dropout", None), proj_dropout=getattr(args, "proj_dropout", None),
    )


def seed_everything(seed: int):
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class JsonLog:
    """Appends one JSON object per line (main process only). Each record is one write of a whole
    line to a file opened for appending, so an interrupted run leaves whole lines; event records
    (start, checkpoint, end, ...) are synced to disk."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **record):
        if self.path is None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
            if "event" in record:
                os.fsync(fd)
        finally:
            os.close(fd)


def _progress(total, initial, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="it", dynamic_ncols=True, mininterval=2.0)


# ----------------------------------------------------------------------------- the loop
def train(args: argparse.Namespace, model=None, dataset=None) -> dict:
    """Runs the training of `args` (see fractal_ext.cli.train for every option). `model` / `dataset`
    replace the ones the arguments describe (tests). Returns a summary: steps, final loss, ..."""
    info = init_distributed(getattr(args, "device", None))
    lock = None
    try:
        lock = claim_the_output_folder(args, info)
        return _train(args, info, model, dataset, lock)
    finally:
        if lock is not None:
            lock.release()
        cleanup(info)


def claim_the_output_folder(args, info: DistInfo):
    """The main process locks the output folder for the run (another live run on it is refused) and
    checks that the run would not overwrite a checkpoint it does not continue. Decided there and
    shared, so that every rank stops (none waits in a collective). Returns the lock (main process)."""
    refusal, lock = None, None
    if info.is_main and args.output_dir:
        try:
            lock = claim_output_dir(args.output_dir)
            refusal = checkpointing.checkpoint_a_new_run_would_overwrite(args.output_dir, args.resume)
        except (ValueError, OSError) as error:  # in use, not a folder, unwritable, --resume not found
            refusal = str(error)
    refusal = all_gather_objects(refusal, info)[0]
    if refusal:
        if lock is not None:
            lock.release()
        raise CheckpointError(refusal)
    return lock


def _train(args, info: DistInfo, model, dataset, lock=None) -> dict:
    seed_everything(args.seed + info.rank)
    device = info.device
    if model is not None:
        channels, size = model.config.channels, model.config.img_size_list[0]
    else:
        config = model_kwargs(args.model, getattr(args, "model_config", None))
        channels, size = config.get("channels", 3), config.get("img_size_list", (None,))[0]
    if args.img_size is None:
        args.img_size = size  # the model's own
    if dataset is None:
        dataset = build_dataset(args.dataset, "train", args.data_path, args.img_size, channels)
    if model is None:
        model = build_model_from_args(args, args.class_num or len(dataset.classes))
    if getattr(args, "ops", "fused") == "fused":
        model.set_use_fused_ops(True)  # the same numbers as the eager references, about 1.1x faster on the CPU
    model.to(device)
    model_config_size = model.config.img_size_list[0]
    if model_config_size != args.img_size:
        raise ValueError(f"--img_size {args.img_size} does not match the model's image size {model_config_size}")

    effective_batch = args.batch_size * info.world_size
    if args.lr is None:
        args.lr = scaled_lr(args.blr, effective_batch)
    optimizer = build_optimizer(model, args.lr, args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    generator = torch.Generator(device).manual_seed(args.seed + info.rank)

    order = BatchOrder(len(dataset), effective_batch, args.seed)
    steps_per_epoch = order.batches_per_epoch
    total_steps = max(1, round(args.epochs * steps_per_epoch))
    save_every = max(1, round(args.save_last_freq * steps_per_epoch))
    output_dir = Path(args.output_dir) if args.output_dir else None

    start_step = 0
    if args.resume:
        checkpoint = checkpointing.load_training_checkpoint(args.resume, map_location=device)
        load_weights(model, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        start_step = int(checkpoint["step"])
        rng_states = checkpoint.get("rng") or []
        if len(rng_states) == info.world_size:
            checkpointing.restore_rng_state(rng_states[info.rank], generator)
        elif info.is_main:
            print(f"[train] checkpoint has random states of {len(rng_states)} ranks, this run has "
                  f"{info.world_size}: continuing with fresh seeds", flush=True)
        del checkpoint

    if info.distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[info.local_rank] if device.type == "cuda" else None)
    else:
        ddp_model = model
    ddp_model.train()

    log = JsonLog(output_dir / "log.jsonl" if output_dir is not None and info.is_main else None)
    # Checked on every rank before the first step: a missing network file or package stops every rank.
    if getattr(args, "tensorboard", False) and output_dir is None:
        raise ValueError("--tensorboard writes into --output_dir: give one")
    evaluation = OnlineEvaluation(args, model, info, output_dir) if getattr(args, "online_eval", False) else None
    board = TensorBoardLog(output_dir / "tensorboard" if getattr(args, "tensorboard", False) else None, info.is_main)

    def evaluate(step):
        result = evaluation.run(model, step)
        if result is not None:
            log.write(event="online_eval", step=step, epoch=step / steps_per_epoch, metrics=result["metrics"],
                      time=time.time())
            board.evaluation(step, result["metrics"], result["grid"])

    if evaluation is not None and start_step > 0 and evaluation.unfinished(start_step):
        evaluate(start_step)  # the run stopped during this evaluation, after the step's checkpoint
    if output_dir is not None and info.is_main:
        text = json.dumps(vars(args), indent=1, sort_keys=True, default=str)
        write_atomically(output_dir / "args.json", lambda stream: stream.write(text.encode()))
        log.write(event="start", step=start_step, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  effective_batch=effective_batch, lr=args.lr, world_size=info.world_size,
                  parameters=sum(p.numel() for p in model.parameters()), time=time.time(),
                  removed_temporary_files=lock.removed if lock is not None else [])

    def save(step):
        rng_states = all_gather_objects(checkpointing.capture_rng_state(generator), info)
        if info.is_main and output_dir is not None:
            epoch = max(0, (step - 1) // steps_per_epoch)
            checkpointing.save_training_checkpoint(output_dir, model, optimizer, scaler, epoch, step, args,
                                                   rng_states, model_name=args.model)
            log.write(event="checkpoint", step=step, epoch=step / steps_per_epoch, time=time.time())
        barrier(info)

    end_step = total_steps
    if getattr(args, "stop_after", None):
        end_step = min(total_steps, start_step + args.stop_after)
    losses, window, window_start, last_loss = [], [], time.time(), None
    progress = _progress(total_steps, start_step, info.is_main and not getattr(args, "no_progress", False))
    source = BatchSource(dataset, order, info, args.hflip, args.num_workers)
    try:
        for step, images_u8, labels in source.iterate(start_step, end_step):
            lr = lr_at(step / steps_per_epoch, args.lr, args.min_lr, args.warmup_epochs, args.epochs)
            set_lr(optimizer, lr)
            images, labels = model.normalisation.normalise(images_u8.to(device)), labels.to(device)
            try:
                loss, grad_norm = train_step(ddp_model, optimizer, scaler, images, labels, generator,
                                             args.precision, args.grad_clip, info)
            except NonFiniteLossError as error:
                last = (output_dir / checkpointing.CHECKPOINT_NAME) if output_dir is not None else None
                where = (f"the last checkpoint, {last}, was written before this step and was not overwritten; "
                         f"resume from it with --resume {output_dir}" if last is not None and last.exists()
                         else "no checkpoint was written")
                log.write(event="non_finite_loss", step=step, time=time.time())
                raise NonFiniteLossError(
                    f"training stopped: {error} at step {step} (epoch {step / steps_per_epoch:.3f}, lr {lr:.3g}); "
                    f"{where}. Try a lower --blr / --lr, --precision fp32 or bf16, or --grad_clip."
                ) from None
            losses.append(loss)
            window.append(loss)
            last_loss = loss
            done = step + 1
            progress.update(1)
            if done % args.log_freq == 0 or done == end_step:
                elapsed = time.time() - window_start
                record = dict(step=done, epoch=round(done / steps_per_epoch, 4), loss=sum(window) / len(window),
                              lr=lr, grad_norm=grad_norm, img_per_s=len(window) * effective_batch / max(elapsed, 1e-9),
                              time=time.time())
                log.write(**record)
                board.scalars(done, "train", loss=record["loss"], lr=lr, grad_norm=grad_norm)
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{record['img_per_s']:.1f}")
                window, window_start = [], time.time()
            if output_dir is not None and (done % save_every == 0 or done == end_step):
                save(done)
            if evaluation is not None and evaluation.due(done, steps_per_epoch, total_steps):
                evaluate(done)
    finally:
        progress.close()
        board.close()
    if info.is_main:
        log.write(event="end" if end_step == total_steps else "stop", step=end_step, loss=last_loss, time=time.time())
    return dict(steps=end_step, total_steps=total_steps, start_step=start_step, losses=losses, final_loss=last_loss,
                steps_per_epoch=steps_per_epoch, lr=args.lr, model=model)
