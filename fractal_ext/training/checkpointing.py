"""Training checkpoints: `checkpoint-last.pth` in the official layout (`'model'`, `'optimizer'`,
`'scaler'`, `'epoch'`, `'args'`, plus `'step'`, `'rng'` and `'model_config'`), readable by the
official code and by `fractal_ext.io.checkpoints.load_official_checkpoint` (only tensors, builtins and
argparse.Namespace inside), and the weights as `checkpoint-last.safetensors` (config in the
metadata). Every file is written beside its target, synced, then renamed over it: a crash while
writing leaves the previous checkpoint intact."""
import random
from pathlib import Path

import numpy as np
import torch

from fractal_ext.io.atomic import write_atomically
from fractal_ext.io.checkpoints import CheckpointError, load_official_checkpoint, save_model

CHECKPOINT_NAME = "checkpoint-last.pth"
# What an enabled GradScaler saves before its first step. fp32 / bf16 runs store this instead of
# the disabled scaler's empty dict, which the official loader (GradScaler.load_state_dict) rejects.
IDLE_SCALER_STATE = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                     "_growth_tracker": 0}
WEIGHTS_NAME = "checkpoint-last.safetensors"


def atomic_torch_save(obj, path) -> Path:
    """torch.save, atomically (fractal_ext.io.atomic.write_atomically)."""
    return write_atomically(path, lambda stream: torch.save(obj, stream))


# ----------------------------------------------------------------------------- RNG states
def capture_rng_state(generator: torch.Generator | None) -> dict:
    """This process's random states as tensors and plain types (loadable with weights_only)."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss),
        "python": random.getstate(),
        "generator": generator.get_state() if generator is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None):
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints
def save_training_checkpoint(output_dir, model, optimizer, scaler, epoch: int, step: int, args,
                             rng_states: list[dict], model_name: str | None = None) -> Path:
    """Writes checkpoint-last.safetensors then checkpoint-last.pth (each atomically).
    rng_states: one entry per rank (rank order)."""
    output_dir = Path(output_dir)
    save_model(model, output_dir / WEIGHTS_NAME, model_name=model_name)
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else dict(IDLE_SCALER_STATE),
        "epoch": int(epoch),
        "step": int(step),
        "args": args,
        "rng": rng_states,
        "model_config": model.config.to_json(),
    }
    return atomic_torch_save(checkpoint, output_dir / CHECKPOINT_NAME)


def resolve_checkpoint_path(resume) -> Path:
    """--resume accepts the checkpoint file or the folder holding checkpoint-last.pth (official)."""
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


def checkpoint_a_new_run_would_overwrite(output_dir, resume) -> str | None:
    """Why the run must not start, or None: the output folder already holds a checkpoint, and this
    run does not continue it (its first save would replace the user's checkpoint)."""
    existing = Path(output_dir) / CHECKPOINT_NAME if output_dir else None
    if existing is None or not existing.is_file():
        return None
    if resume is not None and resolve_checkpoint_path(resume).resolve() == existing.resolve():
        return None
    return (f"{existing} exists and this run would overwrite it: pass --resume {output_dir} to continue "
            "that run, or choose another --output_dir")


def load_training_checkpoint(resume, map_location="cpu") -> dict:
    checkpoint = load_official_checkpoint(resolve_checkpoint_path(resume), map_location=map_location)
    for key in ("model", "optimizer", "step"):
        if key not in checkpoint:
            raise CheckpointError(f"{resume} is not a fractal_ext training checkpoint: no {key!r} entry "
                                  "(an official checkpoint can initialise a model, not resume a run)")
    return checkpoint
