"""Tasks for the warm-worker tests (run inside a worker: the tests put this folder on its PYTHONPATH)."""

from __future__ import annotations

import os
import time


def echo(data: bytes) -> bytes:
    print("a library that prints to stdout")  # must not reach the answer pipe
    return data[::-1]


def pid(data: bytes) -> bytes:
    return str(os.getpid()).encode()


def sleep(data: bytes) -> bytes:
    time.sleep(float(data))
    return b"woke"


def boom(data: bytes) -> bytes:
    raise ValueError("this tune cannot be read")


def die(data: bytes) -> bytes:
    os._exit(3)


def wait_for(data: bytes) -> bytes:
    """Hold the worker until the file named by ``data`` exists (at most a minute)."""
    path = data.decode()
    for _ in range(6000):
        if os.path.exists(path):
            return b"released"
        time.sleep(0.01)
    return b"gave up"
