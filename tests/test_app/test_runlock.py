"""image2music.runlock: one process executes a run at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from image2music.runlock import LOCKS_DIR, run_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX (not enforced on Windows)")

_TRY = """
import sys
from pathlib import Path
from image2music.runlock import RunBusy, run_lock
try:
    with run_lock(Path(sys.argv[1]), sys.argv[2]):
        print("got it")
except RunBusy as e:
    print(f"busy: {e}")
"""


def _other_process_tries(home: Path, run_id: str) -> str:
    out = subprocess.run([sys.executable, "-c", _TRY, str(home), run_id], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_second_process_is_refused_while_the_run_is_held_and_served_after(tmp_path: Path) -> None:
    import os

    with run_lock(tmp_path, "20261206-101500-abc123"):
        lock = tmp_path / LOCKS_DIR / "20261206-101500-abc123.lock"
        assert lock.read_text() == str(os.getpid())  # the holder is named
        said = _other_process_tries(tmp_path, "20261206-101500-abc123")
        assert (
            said.startswith("busy: run 20261206-101500-abc123 is being executed by process")
            and str(os.getpid()) in said
        )
        assert _other_process_tries(tmp_path, "another-run") == "got it"  # one lock per run
    assert lock.read_text() == "" and _other_process_tries(tmp_path, "20261206-101500-abc123") == "got it"


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_outermost(tmp_path: Path) -> None:
    with run_lock(tmp_path, "r"):
        with run_lock(tmp_path, "r"):  # execute_graph inside resume_run: the same run, the same process
            pass
        assert _other_process_tries(tmp_path, "r").startswith("busy:")  # still held by the outer one
    assert _other_process_tries(tmp_path, "r") == "got it"


def test_a_run_id_is_a_name_never_a_path(tmp_path: Path) -> None:
    with run_lock(tmp_path / "home", "../../escape"):
        pass
    assert not (tmp_path / "escape.lock").exists()
    assert [p.parent for p in (tmp_path / "home").rglob("*.lock")] == [tmp_path / "home" / LOCKS_DIR]
