"""One process executes a run at a time: an OS lock file per run under ``I2M_HOME/locks``."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from image2music.tools.errors import InputError
from image2music.tools.files import safe_name

LOCKS_DIR = "locks"
"""Under I2M_HOME: one OS lock file per run executing (``RUN_ID.lock``, holding that process's id), released by
the OS if the process dies. Kept out of the run folder, which holds only the run's outputs."""


_HELD: dict[str, tuple[int, int]] = {}


_HELD_LOCK = threading.Lock()


class RunBusy(InputError):
    """Another process is executing this run (exit code 2)."""


@contextlib.contextmanager
def run_lock(home: Path, run_id: str) -> Iterator[None]:
    """One writer per run: hold the run's OS lock while executing it (re-entrant in one process); RunBusy at
    once, naming the process, when another holds it."""
    path = Path(home) / LOCKS_DIR / f"{safe_name(run_id, default='run')}.lock"
    key = str(path.absolute())
    with _HELD_LOCK:
        if key in _HELD:
            fd, n = _HELD[key]
            _HELD[key] = (fd, n + 1)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _flock(fd)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
                os.close(fd)
                raise RunBusy(
                    f"run {run_id} is being executed by process {holder}; wait for it to end "
                    f"(or stop that process), then try again"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        with _HELD_LOCK:
            fd, n = _HELD[key]
            if n > 1:
                _HELD[key] = (fd, n - 1)
            else:
                del _HELD[key]
                os.ftruncate(fd, 0)
                os.close(fd)  # closing releases the lock


def _flock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; one writer is not enforced there
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
