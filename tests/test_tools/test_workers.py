"""Warm conversion workers: one interpreter serves many tasks, each under its own deadline; a task that
overruns or a worker that dies costs that worker only."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GOOD_ABC

from image2music.tools.music.workers import WorkerError, WorkerPool, WorkerTimeout

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    p = WorkerPool(warm="", size=1)
    yield p
    p.close()


def test_one_worker_serves_many_tasks_and_what_it_prints_stays_out_of_the_answer(workers: WorkerPool) -> None:
    pids = {workers.call("worker_ops:pid", b"", 60) for _ in range(3)}
    assert len(pids) == 1  # the same warm interpreter every time
    assert workers.call("worker_ops:echo", b"abc", 60) == b"cba"


def test_a_task_past_its_deadline_kills_only_its_worker(workers: WorkerPool) -> None:
    first = workers.call("worker_ops:pid", b"", 60)
    with pytest.raises(WorkerTimeout, match="took longer than 1 s"):
        workers.call("worker_ops:sleep", b"600", 1)
    assert _gone(int(first))  # killed, not left sleeping
    assert workers.call("worker_ops:pid", b"", 60) != first  # the next task gets a fresh worker


def test_a_failing_task_keeps_its_worker_and_a_dead_worker_is_replaced(workers: WorkerPool) -> None:
    first = workers.call("worker_ops:pid", b"", 60)
    with pytest.raises(WorkerError, match="ValueError: this tune cannot be read"):
        workers.call("worker_ops:boom", b"", 60)
    assert workers.call("worker_ops:pid", b"", 60) == first
    with pytest.raises(WorkerError, match="ended unexpectedly"):
        workers.call("worker_ops:die", b"", 60)
    assert workers.call("worker_ops:pid", b"", 60) != first


def test_closing_the_pool_ends_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    p = WorkerPool(warm="", size=2)
    p.prestart(2)
    pids = p.pids()
    assert len(pids) == 2 and p.started == 2
    p.close()
    assert all(_gone(pid) for pid in pids)
    with pytest.raises(WorkerError, match="shut down"):
        p.call("worker_ops:pid", b"", 60)


def test_musicxml_in_a_warm_music21_worker() -> None:
    p = WorkerPool(warm="music21", size=1)
    try:
        xml = p.call("musicxml", GOOD_ABC.encode(), 120)
        assert b"<score-partwise" in xml
        with pytest.raises(WorkerError):
            p.call("musicxml", b"\xff\xfe not utf-8", 120)
        assert b"<score-partwise" in p.call("musicxml", GOOD_ABC.encode(), 120)
        assert p.started == 1
    finally:
        p.close()


def _gone(pid: int) -> bool:
    """The process has ended (reaped, or a zombie waiting for it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_burst_of_tasks_shares_one_worker_and_only_a_waiting_queue_grows_the_pool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Eight threads at once with a patient pool: one worker serves them all (a second would cost an import
    that the queue never needed). With a pool that grows at once, a task that finds the only worker busy
    starts the second."""
    import threading

    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    patient = WorkerPool(warm="", size=2, grow_after_s=600)
    try:
        pids: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: pids.append(patient.call("worker_ops:pid", b"", 60))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(pids) == 8 and len(set(pids)) == 1 and patient.started == 1
    finally:
        patient.close()
    eager = WorkerPool(warm="", size=2, grow_after_s=0)
    release = tmp_path / "release"
    answers: list[bytes] = []
    try:
        busy = threading.Thread(target=lambda: answers.append(eager.call("worker_ops:wait_for", bytes(release), 120)))
        busy.start()
        while eager.started == 0:  # the first worker is out on its task from the moment it is started
            threading.Event().wait(0.01)
        other = eager.call("worker_ops:pid", b"", 60)
        release.touch()
        busy.join(120)
        assert answers == [b"released"] and eager.started == 2
        assert len({other, *[str(p).encode() for p in eager.pids()]}) == 2
    finally:
        release.touch()
        eager.close()
