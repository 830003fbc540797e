"""Checkpoint I/O: official `.pth` checkpoints (read safely, memory-mapped), the training
checkpoints of this package (the official layout plus the model config), and our safetensors files
(weights plus the model config and a content hash in the metadata).

Everything that can be verified is verified when loading (`verify=True`, the default): the zip
CRCs of a `.pth`, the content hash of our safetensors files, and the values: a weight that is NaN
or infinite, or of a dtype its parameter cannot hold (integers where floats belong), is refused
naming the tensor. `verify=False` is the explicit opt-out for a user who knowingly loads such a file.
"""
import argparse
import hashlib
import pickle
import zipfile
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fractal_ext.io.atomic import write_atomically
from fractal_ext.models import FractalConfig, FractalGen
from fractal_ext.models.registry import model_kwargs as named_model_kwargs, registered_name

# The only non-tensor, non-builtin type an official checkpoint holds: its argparse arguments.
SAFE_GLOBALS = [argparse.Namespace]
CONFIG_METADATA_KEY = "fractal_ext.config"
NAME_METADATA_KEY = "fractal_ext.model_name"
HASH_METADATA_KEY = "fractal_ext.sha256"  # of the tensors' names, dtypes, shapes and bytes


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


def damaged(path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {what}; it was not loaded (restore it from a copy, or pass "
                           "verify=False / --skip_checkpoint_checks to load it knowingly)")


def load_official_checkpoint(path, map_location="cpu", verify: bool = True) -> dict:
    """Reads an official `checkpoint-*.pth` (a dict with 'model', 'optimizer', 'epoch', 'scaler',
    'args') without running pickled code: torch's weights-only unpickler, allowing only
    argparse.Namespace besides tensors and builtins. Memory-mapped, so a 1.6 GB file needs no
    second copy in RAM. `verify`: check every zip member's CRC first (one read of the file)."""
    path = _require_file(path)
    mmap = zipfile.is_zipfile(path)  # the legacy (non-zip) format cannot be memory-mapped
    if mmap and verify:
        try:
            with zipfile.ZipFile(path) as archive:
                bad_member = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise CheckpointError(f"cannot read {path}: the file is truncated or not a PyTorch checkpoint "
                                  f"({error})") from error
        if bad_member is not None:
            raise damaged(path, f"the stored CRC of {bad_member} does not match its bytes")
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


def _listed(items, max_listed=5) -> str:
    more = f" (and {len(items) - max_listed} more)" if len(items) > max_listed else ""
    return ", ".join(items[:max_listed]) + more


def check_values(model: torch.nn.Module, state_dict: dict, source=None):
    """Raises CheckpointError naming the tensors that a parameter cannot hold (integer or bool values
    where the model has floats) and the floating tensors that hold NaN or infinite values."""
    source = f"{source}: " if source else ""
    expected = model.state_dict()
    wrong_dtype = [f"{k} ({v.dtype} where the model has {expected[k].dtype})" for k, v in state_dict.items()
                   if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if wrong_dtype:
        raise CheckpointError(f"{source}weights of a dtype their parameters cannot hold: {_listed(wrong_dtype)}")
    non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"{source}weights with NaN or infinite values: {_listed(non_finite)} (a diverged or "
                              "damaged checkpoint; pass verify=False / --skip_checkpoint_checks to load it knowingly)")


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
            problems.append(f"{label}: {_listed(items, max_listed)}")
    if problems:
        raise CheckpointError("checkpoint does not match the model: " + "; ".join(problems))


def load_weights(model: torch.nn.Module, state_dict: dict, verify: bool = True, source=None):
    check_state_dict(model, state_dict)
    if verify:
        check_values(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model


def model_name_from_checkpoint(checkpoint: dict) -> str | None:
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    return getattr(args, "model", None)


def content_hash(tensors: dict) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(model: FractalGen, path, model_name: str | None = None):
    """Writes the weights as safetensors with the config and a content hash in the metadata,
    atomically."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: model.config.to_json(), HASH_METADATA_KEY: content_hash(tensors)}
    if model_name:
        metadata[NAME_METADATA_KEY] = model_name
    write_atomically(path, lambda stream: stream.write(save(tensors, metadata=metadata)))


def read_safetensors(path, device="cpu", verify: bool = True) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; `verify` checks the content hash our writer stores."""
    path = _require_file(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: truncated or not a safetensors file ({error})") from error
    if verify and HASH_METADATA_KEY in metadata and content_hash(tensors) != metadata[HASH_METADATA_KEY]:
        raise damaged(path, "its tensors do not match the content hash stored when it was written")
    return tensors, metadata


def _config_of_name(name: str) -> FractalConfig:
    kwargs = named_model_kwargs(name)  # an unknown name is a clear error listing the known ones
    return FractalConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def read_checkpoint(path, model_name: str | None = None, device="cpu",
                    verify: bool = True) -> tuple[FractalConfig, dict]:
    """(model config, state dict) of any checkpoint: our safetensors file (config in the metadata),
    a training checkpoint of this package (config stored with it) or an official `.pth`
    (architecture from `model_name`, else from the checkpoint's args). With `model_name`, a
    checkpoint of another architecture is refused naming both."""
    path = Path(path)
    if path.suffix == ".safetensors" or holds_safetensors(path):
        state_dict, metadata = read_safetensors(path, device, verify)
        if CONFIG_METADATA_KEY in metadata:
            config = FractalConfig.from_json(metadata[CONFIG_METADATA_KEY])
        elif model_name or metadata.get(NAME_METADATA_KEY):
            config = _config_of_name(model_name or metadata[NAME_METADATA_KEY])
        else:
            raise CheckpointError(f"{path} has no fractal_ext config in its metadata; pass model_name")
    else:
        checkpoint = load_official_checkpoint(path, map_location=device, verify=verify)
        state_dict = state_dict_from_checkpoint(checkpoint)
        if isinstance(checkpoint.get("model_config"), str):  # a training checkpoint of this package
            config = FractalConfig.from_json(checkpoint["model_config"])
        else:
            name = model_name or model_name_from_checkpoint(checkpoint)
            if name is None:
                raise CheckpointError(f"{path} does not say which model it holds (no args.model); pass model_name")
            config = _config_of_name(name)
    if model_name is not None:
        wanted = _config_of_name(model_name)
        if FractalConfig(**{**config.constructor_kwargs(), **wanted.constructor_kwargs()}).architecture() \
                != config.architecture():
            found = registered_name(config) or "custom"
            raise CheckpointError(f"{path} does not match the model {model_name}: it holds a {found} model "
                                  f"({config.img_size_list}, {config.embed_dim_list}, {config.generator_type_list})")
    return config, state_dict


def load_model(path, model_name: str | None = None, device="cpu", *, verify: bool = True,
               **model_kwargs) -> FractalGen:
    """A model in eval mode with the weights of any checkpoint (see read_checkpoint), the config
    taken from the file; `model_kwargs` override constructor keywords (dropout, ...). `verify`:
    see the module's docstring."""
    device = torch.device(device)  # a bad device string fails here, not as an unreadable file
    config, state_dict = read_checkpoint(path, model_name, device, verify)
    build = partial(FractalGen, **{**config.constructor_kwargs(), **model_kwargs})
    with torch.device("meta"):  # a wrong checkpoint is found before any memory is spent
        check_state_dict(build(), state_dict)
    with torch.device(device):
        model = build()
    if verify:
        check_values(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
