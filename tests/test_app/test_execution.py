"""image2music.execution: the graph's worker thread, stops, the deadline and failure reasons, as units (the
whole runs are in test_reliability.py and test_runs.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from image2music.execution import (
    GraphThread,
    RunDeadline,
    StopSignal,
    cancel_reason,
    pending_pause,
    run_failure,
)
from image2music.graph.config import load_settings
from image2music.graph.context import RunContext
from image2music.tools.errors import InputError, Terminated


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(settings=load_settings(vlm_backend="replay", top_k=0), run_id="r1", run_dir=tmp_path)


def _graph_that_waits(ctx: RunContext, wrote: list[str]) -> Iterator[Any]:
    """Stands for a graph stream: one node's update, then a model call that ends only when the run is cancelled
    (as a real call ends at its next token); what it would write afterwards is recorded in ``wrote``."""
    yield ("updates", {"describe": {"description": "a harbour"}})
    ctx.cancel.wait(60)
    wrote.append("after the cancel")  # the node goes on to its end: its thread is joined before close returns


def test_a_stop_from_another_thread_ends_the_wait_and_close_joins_the_graph(tmp_path: Path) -> None:
    ctx, wrote, stop = _ctx(tmp_path), [], StopSignal()
    worker = GraphThread(_graph_that_waits(ctx, wrote), ctx, stop)
    with worker, pytest.raises(KeyboardInterrupt):
        for mode, chunk in worker.updates(time.monotonic() + 60):
            assert (mode, list(chunk)) == ("updates", ["describe"])
            threading.Timer(0.05, stop.stop, args=(KeyboardInterrupt(),)).start()
    # the with block closed it: the run was cancelled and its thread ended before anything else may be written
    assert ctx.cancel.is_set() and not worker.thread.is_alive() and wrote == ["after the cancel"]


def test_a_signal_already_given_stops_a_run_that_starts_later(tmp_path: Path) -> None:
    ctx, stop = _ctx(tmp_path), StopSignal()
    stop.stop(Terminated())
    with GraphThread(_graph_that_waits(ctx, []), ctx, stop) as worker, pytest.raises(Terminated):
        list(worker.updates(time.monotonic() + 60))
    assert not worker.thread.is_alive()


def test_past_the_deadline_the_run_says_where_it_stopped(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    with GraphThread(_graph_that_waits(ctx, []), ctx, None) as worker, pytest.raises(RunDeadline) as err:
        for _ in worker.updates(time.monotonic() + 0.2):
            pass
    assert "stopped after describe" in str(err.value) and "i2m runs resume r1" in str(err.value)
    assert not worker.thread.is_alive()


def test_a_graph_error_reaches_the_caller_and_a_finished_graph_ends_the_updates(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)

    def broken() -> Iterator[Any]:
        yield ("updates", {"describe": {}})
        raise ValueError("the node broke")

    with GraphThread(broken(), ctx, None) as worker, pytest.raises(ValueError, match="the node broke"):
        list(worker.updates(time.monotonic() + 60))
    with GraphThread(iter([("updates", {"a": {}}), ("custom", {"kind": "text"})]), ctx, None) as worker:
        assert [m for m, _c in worker.updates(time.monotonic() + 60)] == ["updates", "custom"]
    assert not ctx.cancel.is_set()  # a graph that ended by itself is not cancelled


def test_failure_reasons_are_one_line_and_keep_retries(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    err = InputError("the server said:\n  model not found\n\tat line 1")
    err.retries = ["HTTP 503, retried after 1 s"]  # type: ignore[attr-defined]
    reason, note = run_failure(err, ctx)
    assert reason == "the server said: model not found at line 1"
    assert note == {"error": "InputError", "retries": ["HTTP 503, retried after 1 s"]}
    try:
        {}["bug"]
    except KeyError as e:
        reason, note = run_failure(e, ctx)  # a bug of ours: the traceback goes to run.log
    assert reason.startswith("internal error: KeyError") and note["log"] == "run.log"
    assert (
        "Traceback" in (tmp_path / "run.log").read_text() and "test_execution.py" in (tmp_path / "run.log").read_text()
    )
    reason, _ = run_failure(OSError(28, "No space left on device"), ctx)
    assert "continue it with `i2m runs resume r1`" in reason


def test_how_a_run_was_stopped_is_said_with_how_to_go_on() -> None:
    assert cancel_reason(Terminated(), "r1") == "stopped by SIGTERM; continue it with `i2m runs resume r1`"
    assert cancel_reason(KeyboardInterrupt(), "r1").startswith("stopped by Ctrl-C;")


def test_pending_pause_reads_the_snapshots_interrupts() -> None:
    class Snap:
        def __init__(self, interrupts: tuple[object, ...] = (), tasks: tuple[object, ...] = ()) -> None:
            self.interrupts, self.tasks = interrupts, tasks

    class Task:
        interrupts = ("refine round 1",)

    assert pending_pause(Snap(interrupts=("x",))) and pending_pause(Snap(tasks=(Task(),)))
    assert not pending_pause(Snap()) and not pending_pause(object())
