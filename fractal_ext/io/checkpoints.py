"""Checkpoint I/O: official `.pth` checkpoints (read safely, memory-mapped) and our safetensors
files (weights plus the model config in the metadata)."""
import argparse
import pickle
import zipfile
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fractal_ext.io.atomic import write_atomically
from fractal_ext.models import FractalConfig, FractalGen, build_model
from fractal_ext.models.registry import official_name

# The only non-tensor, non-builtin type an official checkpoint holds: its argparse arguments.
SAFE_GLOBALS = [argparse.Namespace]
CONFIG_METADATA_KEY = "fractal_ext.config"
NAME_METADATA_KEY = "fractal_ext.model_name"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not matching the model."""


def _require_file(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: pass the checkpoint file in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def holds_safetensors(path) -> bool:
    """Whether `path` is a safetensors file, whatever its name says (save_model writes that format
    to any path; torch checkpoints begin with a zip or pickle signature instead): an 8-byte
    little-endian header length that fits the file, then the JSON header."""
    path = _require_file(path)
    with open(path, "rb") as stream:
        start = stream.read(9)
    return len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") <= path.stat().st_size - 8


def load_official_checkpoint(path, map_location="cpu") -> dict:
    """Reads an official `checkpoint-*.pth` (a dict with 'model', 'optimizer', 'epoch', 'scaler',
    'args') without running pickled code: torch's weights-only unpickler, allowing only
    argparse.Namespace besides tensors and builtins. Memory-mapped, so a 1.6 GB file needs no
    second copy in RAM."""
    path = _require_file(path)
    mmap = zipfile.is_zipfile(path)  # the legacy (non-zip) format cannot be memory-mapped
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {path}: it contains Python objects that are not plain data "
            f"(loading it could run arbitrary code). Details: {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"cannot read {path}: the file is truncated or not a PyTorch checkpoint ({error})") from error


def state_dict_from_checkpoint(checkpoint) -> dict:
    """The model weights of an official checkpoint (under 'model'), or the dict itself when it
    is already a bare state dict."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        return checkpoint["model"]
    if isinstance(checkpoint, dict) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise CheckpointError("checkpoint holds no model weights (expected a 'model' entry or a state dict)")


def check_state_dict(model: torch.nn.Module, state_dict: dict, max_listed: int = 5):
    """Raises CheckpointError naming the first keys that are missing, unexpected or of another shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" (and {len(items) - max_listed} more)" if len(items) > max_listed else ""
            problems.append(f"{label}: {', '.join(items[:max_listed])}{more}")
    if problems:
        raise CheckpointError("checkpoint does not match the model: " + "; ".join(problems))


def load_weights(model: torch.nn.Module, state_dict: dict):
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model


def model_name_from_checkpoint(checkpoint: dict) -> str | None:
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    return getattr(args, "model", None)


def save_model(model: FractalGen, path, model_name: str | None = None):
    """Writes the weights as safetensors with the config in the metadata, atomically."""
    metadata = {CONFIG_METADATA_KEY: model.config.to_json()}
    if model_name:
        metadata[NAME_METADATA_KEY] = model_name
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomically(path, lambda stream: stream.write(save(tensors, metadata=metadata)))


def read_safetensors(path, device="cpu") -> tuple[dict, dict]:
    path = _require_file(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
        return load_file(str(path), device=str(device)), metadata
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: truncated or not a safetensors file ({error})") from error


def load_model(path, model_name: str | None = None, device="cpu", **model_kwargs) -> FractalGen:
    """Builds a model and loads its weights from our safetensors file (config from the metadata)
    or from an official `.pth` (architecture from `model_name`, else from the checkpoint's args)."""
    device = torch.device(device)  # a bad device string fails here, not as an unreadable file
    path = Path(path)
    if path.suffix == ".safetensors" or holds_safetensors(path):
        state_dict, metadata = read_safetensors(path, device)
        if CONFIG_METADATA_KEY in metadata:
            config = FractalConfig.from_json(metadata[CONFIG_METADATA_KEY])
            if model_name and official_name(config) != model_name:
                raise CheckpointError(f"{path} does not match the model {model_name}: it holds a "
                                      f"{official_name(config) or 'custom'} model ({config.img_size_list}, "
                                      f"{config.embed_dim_list}, {config.generator_type_list})")
            build = partial(FractalGen, **{**config.constructor_kwargs(), **model_kwargs})
        elif model_name or metadata.get(NAME_METADATA_KEY):
            build = partial(build_model, model_name or metadata[NAME_METADATA_KEY], **model_kwargs)
        else:
            raise CheckpointError(f"{path} has no fractal_ext config in its metadata; pass model_name")
    else:
        checkpoint = load_official_checkpoint(path, map_location=device)
        name = model_name or model_name_from_checkpoint(checkpoint)
        if name is None:
            raise CheckpointError(f"{path} does not say which model it holds (no args.model); pass model_name")
        build = partial(build_model, name, **model_kwargs)
        state_dict = state_dict_from_checkpoint(checkpoint)
    with torch.device("meta"):  # a wrong checkpoint is found before any memory is spent
        check_state_dict(build(), state_dict)
    with torch.device(device):
        model = build()
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_any_model(path, model_name: str | None = None, device="cpu"):
    """A model in eval mode from our safetensors file, a training checkpoint of this package
    (config stored with it), or an official checkpoint (architecture from `model_name` or args)."""
    path = Path(path)
    if path.suffix != ".safetensors" and not holds_safetensors(path):
        checkpoint = load_official_checkpoint(path, map_location=device)
        if "model_config" in checkpoint:
            model = FractalGen(**FractalConfig.from_json(checkpoint["model_config"]).constructor_kwargs())
            return load_weights(model.to(device), state_dict_from_checkpoint(checkpoint)).eval()
    return load_model(path, model_name=model_name, device=device)
