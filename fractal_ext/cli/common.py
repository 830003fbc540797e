"""What the command-line entry points (one module per command in this package) share: argparse
types that refuse out-of-range numbers (argparse then names the option: "argument --batch_size:
must be an integer >= 1, got 0"), a check that the output location is writable, made before the
work rather than after it, and the conversion of user errors into messages with exit status 2."""
import argparse
import math
import tempfile
from pathlib import Path

import torch

from fractal_ext.io.atomic import OutputWriteError

# Bad input and unusable files (DatasetError, CheckpointError are ValueErrors; a full disk or an
# unwritable path is an OutputWriteError): messages, not tracebacks.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, OutputWriteError)


def integer(minimum: int, maximum: int | None = None):
    """argparse type: an integer >= minimum (and <= maximum)."""
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {value}")
        return value

    return parse


# A random seed: what torch.Generator.manual_seed takes.
seed = integer(0, 2**64 - 1)


def number(minimum: float, *, above: bool = False, maximum: float = math.inf, below: bool = False):
    """argparse type: a finite float in [minimum, maximum] (`above` / `below` exclude the bound)."""
    low, high = ("(" if above else "[") + f"{minimum:g}", f"{maximum:g}" + (")" if below or maximum == math.inf else "]")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > minimum if above else value >= minimum)
                and (value < maximum if below else value <= maximum)):
            raise argparse.ArgumentTypeError(f"must be a finite number in {low}, {high}, got {text!r}")
        return value

    return parse


def integer_list(text: str) -> list[int]:
    """argparse type: one or more comma-separated integers ("1,2,3")."""
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def device(text: str) -> str:
    """argparse type: a torch device this machine has ("cpu", "cuda", "cuda:1")."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device: {text!r}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def writable_output(path, *, is_dir: bool = False) -> Path:
    """Creates the folder that will hold `path` (or `path` itself with is_dir) and checks that it can be
    written, so that a bad output location fails before the sampling or evaluation, not after."""
    folder = Path(path) if is_dir else Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # permissions alone do not tell (read-only mounts, /proc)
            pass
    except OSError as error:
        raise PermissionError(f"cannot write to {folder}: {error.strerror}") from None
    if not is_dir and Path(path).is_dir():
        raise ValueError(f"output {path} is a folder, expected a file name")
    return Path(path)


def run_or_report(parser: argparse.ArgumentParser, run, args) -> int:
    """Calls run(args); a user error (bad input, missing file, unwritable output) becomes argparse's
    message and exit status 2 instead of a traceback. Internal errors still raise."""
    try:
        return run(args)
    except USER_ERRORS as error:
        parser.error(str(error))
