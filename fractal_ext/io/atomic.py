"""Every file fractal_ext writes goes through `write_atomically`: beside its target, synced, then
renamed over it, so that a crash or a full disk never leaves a partial file where a good one was."""
import os
import tempfile
from pathlib import Path


class OutputWriteError(OSError):
    """A file could not be written (no space left, no permission, a bad path): nothing partial is
    left where it should have been, and the previous file, if any, is unchanged."""


def write_atomically(path, write) -> Path:
    """Calls write(binary stream) on a temporary file beside `path`, syncs it, then renames it over
    `path`: a crash at any point leaves the previous file intact (and no partial file behind; a
    hard kill can leave the temporary file, which the next run in that folder removes:
    fractal_ext.io.run_lock). A failing write raises OutputWriteError naming the path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: pass a file name to write")
    temp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(temp_path, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open() would not
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException as error:
        if temp_path is not None and os.path.exists(temp_path):
            os.unlink(temp_path)
        if isinstance(error, OSError) and not isinstance(error, OutputWriteError):
            raise OutputWriteError(error.errno, f"cannot write {path}: {error.strerror or error} (nothing was "
                                   "written; the previous file, if any, is unchanged)") from error
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
