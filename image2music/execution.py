"""Execute a run's graph: stream it on a worker thread the run owns and joins, checkpoint after every node,
pause for a person, stop on Ctrl-C, SIGTERM, the deadline or a batch's stop, and end with the run's record.

One guard surrounds every run: whatever a node, a tool, a writer or the database raises, the run ends with
its run.json (status ``failed`` and the reason), vlm_calls.jsonl, the report and its status in the database.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from image2music.graph.builder import build_graph
from image2music.graph.config import ABC_NODES, Settings
from image2music.graph.context import LOCAL_CONTEXT_KEY, RunContext
from image2music.graph.state import NODE_IDS, State
from image2music.graph.versions import best_version
from image2music.outputs import Renders, RunResult, write_outputs
from image2music.record import ErrorNote, RunExtra, build_record
from image2music.rundb import checkpointer, public_settings, set_status
from image2music.runlock import run_lock
from image2music.tools.errors import I2MError, RunError, Terminated, disk_fault, redact
from image2music.tools.files import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig


Event = Callable[[str, State], None]
"""Called with each node's update as it finishes."""


TextEvent = Callable[[str, str], None]
"""Called with (node, piece) as a model writes its answer: the pieces of one call, in order, make its text
(display only; the record holds whole answers)."""


Pause = Callable[[State], "str | None"]
"""Called before a reflect round with the run's state; returns a person's words, or None (go on)."""


class RunDeadline(RunError):
    """The run passed I2M_RUN_DEADLINE_S."""


def run_config(run_id: str, settings: Settings, ctx: RunContext | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": run_id}
    if ctx is not None:  # this package's own context: never taken for a server client's (graph.context)
        configurable[LOCAL_CONTEXT_KEY] = ctx
    return {"configurable": configurable, "recursion_limit": settings.recursion_limit}


def run_failure(error: BaseException, ctx: RunContext) -> tuple[str, ErrorNote]:
    """The reason (one line) and the notes entry of a run that an exception ended; the traceback goes to
    run.log."""
    reason, note = _failure_lines(error, ctx)
    if getattr(error, "retries", None):
        note["retries"] = list(error.retries)  # type: ignore[attr-defined]
    return " ".join(reason.split()), note


def _failure_lines(error: BaseException, ctx: RunContext) -> tuple[str, ErrorNote]:
    from langgraph.errors import GraphRecursionError

    if isinstance(error, GraphRecursionError):
        s = ctx.settings
        return (
            f"the run exceeded its step budget ({s.recursion_limit} steps, computed from "
            f"I2M_MAX_PARSE_RETRIES={s.max_parse_retries} and I2M_REFINE_ROUNDS={s.refine_rounds})",
            {"error": type(error).__name__},
        )
    secrets = ctx.settings.secret_values()
    if isinstance(error, I2MError):
        return redact(str(error), secrets), {"error": type(error).__name__}
    transient = _transient(error, ctx)
    if transient is not None:  # a full disk, a file system or database fault: resumable once it is fixed
        return redact(transient, secrets), {"error": type(error).__name__}
    try:
        atomic_write_text(ctx.run_dir / "run.log", redact("".join(traceback.format_exception(error)), secrets))
    except OSError:
        pass
    return (
        f"internal error: {type(error).__name__}: {redact(str(error), secrets)} (the traceback is in run.log)",
        {"error": type(error).__name__, "log": "run.log"},
    )


def _transient(error: BaseException, ctx: RunContext) -> str | None:
    """The reason of a fault outside our code (disk, file system, the run database), or None (a bug)."""
    import sqlite3

    resume = f"; then continue it with `i2m runs resume {ctx.run_id}`"
    if isinstance(error, OSError):
        return disk_fault(error) + resume
    if isinstance(error, sqlite3.OperationalError):
        text = str(error)
        if "full" in text or "disk I/O" in text or "locked" in text:
            return f"the run database in I2M_HOME={ctx.settings.home} failed: {text}" + resume
    return None


def how_stopped(error: KeyboardInterrupt) -> str:
    """``SIGTERM`` or ``Ctrl-C``: what the interruption was, in a reason's words."""
    return "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"


def cancel_reason(error: KeyboardInterrupt, run_id: str) -> str:
    """Why a run ended cancelled, and how to go on with it."""
    return f"stopped by {how_stopped(error)}; continue it with `i2m runs resume {run_id}`"


class StopSignal:
    """Stops the runs that share it at once, from another thread: what Ctrl-C or SIGTERM does to a run in the
    main thread, for the runs of a batch's worker threads (signals reach only the main thread). Each run ends
    cancelled, with its record, resumable; its model call in flight is abandoned (its answer dropped)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: set[Any] = set()
        self.error: KeyboardInterrupt | None = None
        """What stopped the runs (KeyboardInterrupt, or Terminated for SIGTERM); None while they may go on."""

    def stop(self, error: KeyboardInterrupt) -> None:
        with self._lock:
            self.error = error
            boxes = list(self._boxes)
        for box in boxes:
            box.put(("stop", error))

    def _register(self, box: Any) -> None:
        with self._lock:
            self._boxes.add(box)
            if self.error is not None:
                box.put(("stop", self.error))

    def _unregister(self, box: Any) -> None:
        with self._lock:
            self._boxes.discard(box)


def execute_graph(
    ctx: RunContext,
    conn: sqlite3.Connection,
    graph_input: Any,
    on_event: Event | None,
    extra: RunExtra | None = None,
    on_pause: Pause | None = None,
    stop: StopSignal | None = None,
    on_text: TextEvent | None = None,
) -> RunResult:
    """Stream the graph (checkpointing after every node), then write the outputs from the saved state.

    With ``on_pause`` the run stops before every reflect round and asks it for a person's words, which are
    added to that round's prompt (human-in-the-loop refinement). Whatever goes wrong, the outputs are written
    and the run is marked in the database; only KeyboardInterrupt propagates (the run can be resumed).
    One process at a time executes a run (RunBusy for a second). ``stop`` ends it from another thread as
    Ctrl-C would. ``on_text`` receives each model answer as it is written (LangGraph's ``custom`` stream).
    """
    with run_lock(ctx.settings.home, ctx.run_id):
        return _execute_graph(ctx, conn, graph_input, on_event, extra, on_pause, stop, on_text)


STOP_GRACE_S = 30.0
"""How long a stopped run waits for its graph thread to end (a model call ends at its next token or read)."""


class GraphThread:
    """The graph's updates, produced by a worker thread this run owns, until the run's deadline. A stop (Ctrl-C,
    SIGTERM, the deadline, a batch's ``StopSignal``) sets the run's ``cancel`` (its model call in flight ends at
    the next token or read and its answer is dropped) and :meth:`close` joins the thread before the caller writes
    the run's record: nothing of a stopped run is written after its record."""

    def __init__(self, chunks: Iterator[Any], ctx: RunContext, stop: StopSignal | None) -> None:
        import queue

        self.ctx, self.stop = ctx, stop
        self.box: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._work, args=(chunks,), name=f"i2m-run-{ctx.run_id}", daemon=True)

    def _work(self, chunks: Iterator[Any]) -> None:
        try:
            for chunk in chunks:
                self.box.put(("chunk", chunk))
            self.box.put(("done", None))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self.box.put(("error", e))

    def __enter__(self) -> GraphThread:
        if self.stop is not None:
            self.stop._register(self.box)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the graph if it still runs, and wait for its thread (at most STOP_GRACE_S)."""
        if self.stop is not None:
            self.stop._unregister(self.box)
        if self.thread.is_alive():
            self.ctx.cancel.set()
            self.thread.join(STOP_GRACE_S)

    def updates(self, deadline: float) -> Iterator[Any]:
        """The stream's chunks as they come; RunDeadline past ``deadline``; Ctrl-C and SIGTERM reach the waiting
        thread at once, ``stop`` from elsewhere."""
        import queue

        last = "the start"
        while True:
            try:
                kind, value = self.box.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RunDeadline(
                    f"the run took longer than I2M_RUN_DEADLINE_S={self.ctx.settings.run_deadline_s:g} s; it "
                    f"stopped after {last} (continue it with `i2m runs resume {self.ctx.run_id}`)"
                ) from None
            if kind == "done":
                return
            if kind == "error":
                raise value
            if kind == "stop":  # as the signal would have: the node in flight is abandoned
                raise type(value)(*value.args)
            mode, data = value
            if mode == "updates":
                last = next(iter(data), last)
            yield value


def _execute_graph(
    ctx: RunContext,
    conn: sqlite3.Connection,
    graph_input: Any,
    on_event: Event | None,
    extra: RunExtra | None,
    on_pause: Pause | None,
    stop: StopSignal | None = None,
    on_text: TextEvent | None = None,
) -> RunResult:
    from langgraph.types import Command

    graph = build_graph(checkpointer(conn, ctx.settings.secret_values()))
    config = run_config(ctx.run_id, ctx.settings, ctx)
    was_ok = graph.get_state(config).values.get("status") == "ok"  # a finished run that a person refines more
    error: str | None = None
    extra = RunExtra(**(extra or {}))
    deadline = time.monotonic() + ctx.settings.run_deadline_s
    ctx.cancel.clear()
    renders: Renders | None = None
    try:
        while True:
            modes = ["updates", "custom"] if on_text is not None else ["updates"]
            chunks = graph.stream(graph_input, config=config, context=ctx, stream_mode=modes, durability="sync")
            with GraphThread(chunks, ctx, stop) as worker:
                for mode, chunk in worker.updates(deadline):
                    if mode == "custom":
                        if on_text is not None and isinstance(chunk, dict) and chunk.get("kind") == "text":
                            on_text(str(chunk["node"]), str(chunk["text"]))
                        continue
                    for node, update in chunk.items():
                        if on_event is not None and isinstance(update, dict):
                            on_event(node, cast(State, update))
                        if renders is None and _music_is_final(update):
                            # the music is final: its files are made while the model explains it
                            best = best_version(graph.get_state(config).values.get("versions", []))
                            if best is not None and best["ok"]:
                                renders = Renders(ctx, best["abc"])
            snapshot = graph.get_state(config)
            if not pending_pause(snapshot):
                break
            # the graph waits for a person (reflect's interrupt()): their words, or none (the model decides;
            # also when nobody is there to ask), resume it; Ctrl-C at the pause cancels the run
            words = on_pause(cast(State, snapshot.values)) if on_pause is not None else None
            graph_input = Command(resume=words or "")
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the run ends cancelled, with its record, resumable
        extra["cancelled"] = cancel_reason(e, ctx.run_id)
        finish_run(ctx, conn, cast(State, graph.get_state(config).values), None, extra, renders)
        raise
    except Exception as e:  # the one run guard: every failure ends with its record
        error, note = run_failure(e, ctx)
        extra["errors"] = [note]
    state = cast(State, graph.get_state(config).values)
    if was_ok and (error is not None or state.get("status") == "failed"):
        # a person's extra round failed: the run keeps its best valid version and stays ok
        extra["failed_rounds"] = [error or state.get("reason")]
        graph.update_state(config, {"status": "ok", "reason": None}, as_node=NODE_IDS[-1])  # the last node
        state = cast(State, graph.get_state(config).values)
        error = None
    return finish_run(ctx, conn, state, error, extra, renders)


def pending_pause(snapshot: Any) -> bool:
    """The run's graph stopped at an ``interrupt()`` (a refine round waiting for a person's words)."""
    if getattr(snapshot, "interrupts", None):
        return True
    return any(getattr(task, "interrupts", None) for task in getattr(snapshot, "tasks", ()) or ())


def _music_is_final(update: Any) -> bool:
    """The refine loop's router has let the music go: no writer will change it (any node may follow)."""
    decisions = update.get("decisions") or [] if isinstance(update, dict) else []
    return any(d.get("after") == "evaluate" and d.get("to") not in ABC_NODES for d in decisions)


def finish_run(
    ctx: RunContext,
    conn: sqlite3.Connection,
    state: State,
    error: str | None,
    extra: RunExtra,
    renders: Renders | None = None,
) -> RunResult:
    """Write the outputs and the database status; if writing the outputs fails, a minimal run.json still is."""
    try:
        result = write_outputs(ctx, state, error, extra=extra, renders=renders)
    except Exception as e:  # the outputs themselves failed: the record must still be written
        reason, note = run_failure(e, ctx)
        record = build_record(  # the same builder, with no file of the run's
            ctx.run_id,
            str(ctx.image_path),
            state,
            final=None,
            files={},
            notes=[],
            prompts={},
            attention_files={},
            settings=public_settings(ctx.settings),
            server_retries=[],
            error=error or f"writing the outputs failed: {reason}",
            extra={**extra, "errors": [*extra.get("errors", []), note]},
            secrets=ctx.settings.secret_values(),
        )
        try:
            atomic_write_json(ctx.run_dir / "run.json", record)
        except OSError:
            pass  # nothing can be written there (a full disk): the database and the caller still know why
        result = RunResult(run_id=ctx.run_id, run_dir=ctx.run_dir, record=record)
    try:
        set_status(conn, ctx.run_id, result.record["status"])
    except sqlite3.Error:
        pass  # I2M_HOME itself is full: the record in the run folder says how the run ended
    return result
