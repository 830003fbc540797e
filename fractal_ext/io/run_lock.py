"""A run owns its output folder. `claim_output_dir` takes an exclusive lock on a file in the folder
for as long as the run's process lives: a second run on the same folder finds it taken at start
and stops before writing anything; the operating system releases the lock when the process exits
or is killed, so no stale lock outlives a dead run. Holding the lock, the run removes the
temporary files that a dead run's interrupted atomic writes left behind."""
import fcntl
import os
import re
from pathlib import Path

LOCK_NAME = ".fractal_ext.lock"
# write_atomically's temporary files: "." + the target's name + "." + 8 random characters + ".tmp".
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


class OutputFolderInUse(ValueError):
    """Another live run holds the output folder."""


class RunLock:
    def __init__(self, fd: int, folder: Path, removed: list, created_folder: bool):
        self.fd, self.folder, self.removed, self.created_folder = fd, folder, removed, created_folder

    def release(self):
        """Releases the lock; a folder this run created and left empty (a run refused for bad input)
        goes too."""
        if self.fd is None:
            return
        if self.created_folder and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
            (self.folder / LOCK_NAME).unlink()
            self.folder.rmdir()
        os.close(self.fd)  # closing the descriptor releases the lock
        self.fd = None


def claim_output_dir(folder) -> RunLock:
    """Locks `folder` (created if needed) for this process, or raises OutputFolderInUse naming the
    process that holds it; then removes stale temporary files (`RunLock.removed` lists them)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot write to {folder}: it is a file, not a folder")
    created_folder = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise PermissionError(f"cannot write to {folder}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputFolderInUse(f"{folder} is in use by another run (process {holder}); wait for it to end, or "
                                "choose another --output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    removed = []
    for entry in folder.iterdir():
        if entry.is_file() and TEMPORARY.match(entry.name):
            entry.unlink()
            removed.append(entry.name)
    return RunLock(fd, folder, removed, created_folder)
