"""Warm worker processes for conversions that need a heavy library (music21): each worker is a child
interpreter that imports it once and then serves task after task, each under its own deadline.

A task that overruns its deadline (or a worker that dies) costs that worker only: it is killed and the next
task starts a fresh one. The workers read tasks from a pipe and end when it closes, so they never outlive the
process that started them. Nothing is written to disk: tasks and answers travel through the pipes.

Wire format, both ways: a 4-byte big-endian length, then that many bytes. A task is ``op`` (UTF-8) then the
input; an answer starts with ``b"ok"`` or ``b"er"`` (the rest is the output, or the error's last line).
"""

from __future__ import annotations

import atexit
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""An answer longer than this is refused (a bounded read)."""


class WorkerError(RuntimeError):
    """A task failed in a worker, the worker died, or it could not start."""


class WorkerTimeout(WorkerError):
    """A task overran its deadline (its worker was killed)."""


def _musicxml(data: bytes) -> bytes:
    import music21

    score = music21.converter.parseData(data.decode("utf-8"), format="abc")
    return bytes(music21.musicxml.m21ToXml.GeneralObjectExporter(score).parse())


OPS: dict[str, Callable[[bytes], bytes]] = {"musicxml": _musicxml}
"""What a worker can do: a name and a function from the input bytes to the output bytes. Any importable
``module:function`` of the same kind is accepted as well."""


def _op(name: str) -> Callable[[bytes], bytes]:
    if name in OPS:
        return OPS[name]
    import importlib

    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    out = bytearray()
    while len(out) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class _Worker:
    def __init__(self, warm: str) -> None:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "image2music.tools.music.workers", warm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tempfile.gettempdir(),  # never the user's working directory
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )

    def call(self, op: str, data: bytes, timeout_s: float) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        name = op.encode()
        self.proc.stdin.write(_frame(struct.pack(">H", len(name)) + name + data))
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        (n,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
        if n > MAX_ANSWER_BYTES:
            raise EOFError
        answer = _read_exact(fd, n, deadline)
        if answer[:2] != b"ok":
            raise WorkerError(answer[2:].decode("utf-8", "replace"))
        return answer[2:]

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the worker ends at the end of its input
            self.proc.wait(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


GROW_AFTER_S = 0.25
"""A task that has waited this long for a busy worker starts another (up to the pool's size). A warm worker
converts a tune in ~15 ms, and a new one costs an import (music21: ~0.6 CPU-s, ~1 s): a burst of short tasks
is served by one worker; only a queue that really waits grows the pool."""


class WorkerPool:
    """Up to ``size`` warm workers shared by the threads of this process; ``call`` blocks for a free one.
    The first task starts a worker; another starts only when a task has waited ``grow_after_s`` for one."""

    def __init__(self, warm: str = "music21", size: int = 2, grow_after_s: float = GROW_AFTER_S) -> None:
        self.warm = warm
        self.size = max(1, size)
        self.grow_after_s = grow_after_s
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def pids(self) -> list[int]:
        """The process ids of the idle workers (the busy ones are out on a task)."""
        with self._cond:
            return [w.proc.pid for w in self._idle]

    @property
    def started(self) -> int:
        """Workers alive now, idle or busy."""
        return self._count

    def prestart(self, n: int = 1) -> None:
        """Start workers now (their imports overlap whatever the process does next)."""
        with self._cond:
            while self._count < min(n, self.size) and not self._closed:
                self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        try:
            w = _Worker(self.warm)
        except OSError as e:
            raise WorkerError(f"cannot start a conversion worker: {e}") from e
        self._count += 1
        return w

    def _take(self) -> _Worker:
        grow_at = time.monotonic() + self.grow_after_s
        with self._cond:
            while not self._closed and not self._idle:
                can_grow = self._count < self.size
                left = grow_at - time.monotonic()
                if can_grow and (self._count == 0 or left <= 0):
                    return self._spawn()
                self._cond.wait(left if can_grow else None)
            if self._closed:
                raise WorkerError("the conversion workers were shut down")
            return self._idle.pop()

    def _give(self, w: _Worker | None) -> None:
        with self._cond:
            if w is None or self._closed:
                self._count -= 1
                if w is not None:
                    w.close()
            else:
                self._idle.append(w)
            self._cond.notify()

    def call(self, op: str, data: bytes, timeout_s: float) -> bytes:
        """``op`` on ``data`` in a warm worker; WorkerError if it fails or takes longer than ``timeout_s``."""
        w = self._take()
        try:
            out = w.call(op, data, timeout_s)
        except TimeoutError:
            w.kill()
            self._give(None)
            raise WorkerTimeout(f"took longer than {timeout_s:g} s") from None
        except (EOFError, OSError, struct.error):
            w.kill()
            self._give(None)
            raise WorkerError("the conversion worker ended unexpectedly (out of memory?)") from None
        except WorkerError:
            self._give(w)  # the task failed; the worker is fine
            raise
        self._give(w)
        return out

    def close(self, kill: bool = False) -> None:
        """End the idle workers (``kill``: at once, as the process exits; else at the end of their input)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for w in idle:
            w.kill() if kill else w.close()


_POOLS: dict[str, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def pool(warm: str = "music21") -> WorkerPool:
    """The process's pool of workers that import ``warm`` (one per library)."""
    with _POOLS_LOCK:
        p = _POOLS.get(warm)
        if p is None or p._closed:
            p = _POOLS[warm] = WorkerPool(warm, size=min(2, os.cpu_count() or 1))
        return p


@atexit.register
def _close_all() -> None:
    for p in list(_POOLS.values()):
        p.close(kill=True)  # they hold nothing; the process's exit must not wait for an import to finish


def serve(warm: str) -> None:
    """A worker's loop: import ``warm``, then answer tasks from stdin until it closes."""
    import importlib
    import traceback

    answers = os.fdopen(os.dup(1), "wb")  # the pipe to the parent; what a library prints goes to stderr
    os.dup2(2, 1)
    if warm:
        importlib.import_module(warm)
    stdin, stdout = sys.stdin.buffer.fileno(), answers
    while True:
        try:
            (n,) = struct.unpack(">I", _read_exact(stdin, 4, None))
            task = _read_exact(stdin, n, None)
        except EOFError:
            return
        (k,) = struct.unpack(">H", task[:2])
        op, data = task[2 : 2 + k].decode(), task[2 + k :]
        try:
            answer = b"ok" + _op(op)(data)
        except Exception as e:  # noqa: BLE001 - the task's failure is the answer; the worker goes on
            last = (traceback.format_exception_only(type(e), e)[-1:] or ["error"])[0].strip()
            answer = b"er" + last[:500].encode("utf-8", "replace")
        stdout.write(_frame(answer))
        stdout.flush()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "")
