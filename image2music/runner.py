"""Run the graph for one image: prepare the run, stream the graph with checkpoints, write the outputs.

One guard surrounds every run: whatever a node, a tool, a writer or the database raises, the run ends with
its run.json (status ``failed`` and the reason), vlm_calls.jsonl, the report and its status in the database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from image2music import swap
from image2music.graph import services
from image2music.graph.builder import build_graph
from image2music.graph.config import Settings
from image2music.graph.context import LOCAL_CONTEXT_KEY, RunContext
from image2music.graph.state import NODE_IDS, State
from image2music.graph.versions import best_version
from image2music.outputs import Renders, RunResult, write_outputs
from image2music.record import ErrorNote, RunExtra, build_record
from image2music.rundb import (
    SECRET_SETTINGS,
    RunInfo,
    check_home,
    checkpointer,
    connect_db,
    get_run,
    public_settings,
    register_run,
    set_status,
)
from image2music.tools.errors import I2MError, InputError, RunError, Terminated, disk_fault, redact
from image2music.tools.files import (
    atomic_write_json,
    atomic_write_text,
    clean_temporaries,
    plain_path,
    safe_name,
)
from image2music.tools.vlm.backends import backend

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

Event = Callable[[str, State], None]
"""Called with each node's update as it finishes."""
TextEvent = Callable[[str, str], None]
"""Called with (node, piece) as a model writes its answer: the pieces of one call, in order, make its text
(display only; the record holds whole answers)."""
Pause = Callable[[State], "str | None"]
"""Called before a reflect round with the run's state; returns a person's words, or None (go on)."""

__all__ = [
    "RunResult",
    "compose_image",
    "continue_run",
    "execute_graph",
    "new_run_id",
    "prepare_run",
    "replay_run",
    "resume_run",
]


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


class RunDeadline(RunError):
    """The run passed I2M_RUN_DEADLINE_S."""


def new_run_id() -> str:
    """A sortable, unique run id: ``20261126-204500-a1b2c3``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _config(run_id: str, settings: Settings, ctx: RunContext | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": run_id}
    if ctx is not None:  # this package's own context: never taken for a server client's (graph.context)
        configurable[LOCAL_CONTEXT_KEY] = ctx
    return {"configurable": configurable, "recursion_limit": settings.recursion_limit}


def prepare_run(
    settings: Settings,
    image_path: Path,
    run_dir: Path,
    run_id: str,
    prompt_overrides: dict[str, Path] | None = None,
    notify: services.Notify = services.notify_stderr,
    copy_input: bool = True,
) -> RunContext:
    """Check everything a run needs before it starts (image, prompts, model, knowledge base) and make its
    run dir with a re-encoded copy of the input image. Raises InputError (exit 2) or RunError (exit 1)."""
    check_home(settings)
    image = services.get_image(image_path)
    services.get_prompts(prompt_overrides)
    services.get_vlm(settings)
    services.get_retriever(settings, notify)
    ctx = RunContext(
        settings=settings,
        run_id=run_id,
        image_path=image_path,
        run_dir=run_dir,
        prompt_paths=dict(prompt_overrides or {}),
    ).listen(notify)
    if copy_input:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            # re-encoded, never copied: the report shows a PNG we wrote, whatever the file was
            image.save(run_dir / "input.png", format="PNG")
        except OSError as e:
            raise InputError(f"cannot write the run dir {run_dir}: {e.strerror or e}") from e
    return ctx


def claim_output_dir(run_dir: Path, force: bool) -> bool:
    """Check an output folder given by the user. True when it holds an earlier run of ours, which the new run
    replaces once it has finished (it is written beside it meanwhile, so the two never mix and a failure to start
    leaves the earlier run as it was). Raises InputError for a file or a foreign non-empty folder (unless
    ``force``: its content is then removed)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"-o {run_dir} is a file; give a folder for the run")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return False
    if (run_dir / "run.json").is_file():
        return True
    if not force:
        raise InputError(
            f"-o {run_dir} is a folder with other files in it; choose a new or empty folder, or pass --force "
            "to replace its content"
        )
    return True


def _failure(error: BaseException, ctx: RunContext) -> tuple[str, ErrorNote]:
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
    config = _config(ctx.run_id, ctx.settings, ctx)
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
                        if renders is None and _heads_to_explain(update):
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
        error, note = _failure(e, ctx)
        extra["errors"] = [note]
    state = cast(State, graph.get_state(config).values)
    if was_ok and (error is not None or state.get("status") == "failed"):
        # a person's extra round failed: the run keeps its best valid version and stays ok
        extra["failed_rounds"] = [error or state.get("reason")]
        graph.update_state(config, {"status": "ok", "reason": None}, as_node="explain")
        state = cast(State, graph.get_state(config).values)
        error = None
    return finish_run(ctx, conn, state, error, extra, renders)


def pending_pause(snapshot: Any) -> bool:
    """The run's graph stopped at an ``interrupt()`` (a refine round waiting for a person's words)."""
    if getattr(snapshot, "interrupts", None):
        return True
    return any(getattr(task, "interrupts", None) for task in getattr(snapshot, "tasks", ()) or ())


def _heads_to_explain(update: Any) -> bool:
    return isinstance(update, dict) and any(d.get("to") == "explain" for d in update.get("decisions") or [])


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
        reason, note = _failure(e, ctx)
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


def compose_image(
    image: str | Path,
    settings: Settings,
    *,
    run_dir: Path | None = None,
    prompt_overrides: dict[str, Path] | None = None,
    on_event: Event | None = None,
    notify: services.Notify = services.notify_stderr,
    run_id: str | None = None,
    user_feedback: str | None = None,
    on_start: Callable[[str, Path], None] | None = None,
    on_pause: Pause | None = None,
    force: bool = False,
    stop: StopSignal | None = None,
    on_text: TextEvent | None = None,
) -> RunResult:
    """Turn one image into music. Raises InputError (refused input) or RunError (cannot start); KeyboardInterrupt
    when Ctrl-C, SIGTERM or ``stop`` ended it (its record written, resumable).

    ``run_dir`` (``-o``) may be new, empty, or an earlier run of ours (it is replaced, never mixed); a
    non-empty folder of anything else is refused unless ``force``."""
    image_path = plain_path(image)
    run_id = run_id or new_run_id()
    if on_pause is not None and not settings.human_pause:  # someone is there to answer: the run asks them
        settings = settings.with_overrides(human_pause=True)
    final_dir: Path | None = None  # set when an earlier run is replaced: this run is written beside it first
    if run_dir is not None:
        run_dir = plain_path(run_dir)
        conn = connect_db(settings)
        try:
            swap.recover(run_dir, conn)  # an interrupted replacement of that folder is finished or rolled back
        finally:
            conn.close()
        if claim_output_dir(run_dir, force):
            final_dir, run_dir = run_dir, swap.begin(run_dir, run_id)
    else:
        run_dir = settings.runs_dir / run_id
    start_notes: list[str] = []

    def _notify(message: str) -> None:
        start_notes.append(message)
        notify(message)

    try:
        ctx = prepare_run(settings, image_path, run_dir, run_id, prompt_overrides, _notify)
    except BaseException:
        if final_dir is not None:
            swap.abandon(final_dir)  # the earlier run stays as it was
        raise
    conn = connect_db(settings)
    try:
        register_run(
            conn, run_id, run_dir, str(image_path), settings, {k: str(v) for k, v in (prompt_overrides or {}).items()}
        )
        if on_start is not None:
            on_start(run_id, final_dir or run_dir)
        graph_input: State = {"image": str(image_path)}
        if user_feedback:
            graph_input["user_feedback"] = user_feedback
        extra = RunExtra(start_notes=start_notes) if start_notes else None
        warm_up(settings)
        result = execute_graph(
            ctx, conn, graph_input, on_event, extra=extra, on_pause=on_pause, stop=stop, on_text=on_text
        )
        if final_dir is not None:
            result = _swapped(result, final_dir, conn)
        return result
    finally:
        conn.close()


LATER_IMPORTS = (
    "image2music.report",
    "image2music.tools.music.excerpt",
    "image2music.tools.music.midi2abc",
    "lameenc",
    "soundfile",
)
"""Modules a run imports when it gets to them (outputs, report, map): a process's first runs import them
while their first model call is out instead of after it, when every run of a batch's first wave waits."""

_WARMED: set[str] = set()
_WARM_LOCK = threading.Lock()


def warm_up(settings: Settings) -> None:
    """Start what a run will need later while its first model call is out: a MusicXML worker, if the run
    writes MusicXML (music21's import, about a second), and, once per process in a background thread, the
    modules of the later stages and, for a served model's map, where the embedding model is. Failures are
    ignored here: the stage that needs the thing says what is wrong."""
    if settings.writes("musicxml"):
        from image2music.tools.music.workers import WorkerError, pool

        try:
            pool().prestart(1)
        except WorkerError:
            pass
    import functools
    import importlib

    jobs: dict[str, Callable[[], object]] = {m: functools.partial(importlib.import_module, m) for m in LATER_IMPORTS}
    kind = backend(settings.vlm_backend)
    if settings.attention_maps and not kind.attention and not kind.recorded:  # CLIP's occlusion map stands in
        from image2music.tools.embedder import model_location

        # cached: the map's loader asks again
        jobs[f"embedder {settings.embed_model}"] = functools.partial(model_location, settings.embed_model)
    with _WARM_LOCK:
        todo = [job for key, job in jobs.items() if key not in _WARMED]
        _WARMED.update(jobs)
    if todo:
        threading.Thread(target=_warm, args=(todo,), name="i2m-warm-up", daemon=True).start()


def _warm(jobs: list[Callable[[], object]]) -> None:
    for job in jobs:
        try:
            job()
        except Exception:  # noqa: BLE001, S112 - only a head start; the stage itself reports failures
            continue


def _swapped(result: RunResult, final_dir: Path, conn: sqlite3.Connection) -> RunResult:
    """A finished run written beside an earlier one, put in its place (see :mod:`image2music.swap`)."""
    swap.finish(final_dir, conn)
    return RunResult(run_id=result.run_id, run_dir=final_dir, record=result.record, files=result.files)


def continue_run(
    ctx: RunContext,
    graph_input: Any,
    *,
    on_event: Event | None = None,
    on_pause: Pause | None = None,
    on_text: TextEvent | None = None,
) -> RunResult:
    """Go on with a run of this process from its checkpoint with ``graph_input`` (e.g. a ``Command`` that
    sends a person's words to reflect)."""
    conn = connect_db(ctx.settings)
    try:
        return execute_graph(ctx, conn, graph_input, on_event, on_pause=on_pause, on_text=on_text)
    finally:
        conn.close()


def _stored_settings(info: RunInfo, settings: Settings, overrides: dict[str, Any]) -> Settings:
    """The settings a run was started with, secrets taken from the current environment, then overrides."""
    data = {**info.settings, **{k: getattr(settings, k) for k in SECRET_SETTINGS}}
    for key in ("vlm_base_url", "chroma_url"):  # stored without their credentials: the environment's, same URL
        here = getattr(settings, key)
        if data.get(key) and "[redacted]@" in data[key] and here and redact(here, headers=False) == data[key]:
            data[key] = here
    data.pop("recursion_limit", None)  # stored by earlier versions; now computed
    return Settings.model_validate(data).with_overrides(**overrides)


def resume_run(
    run_id: str,
    settings: Settings,
    *,
    on_event: Event | None = None,
    notify: services.Notify = services.notify_stderr,
    on_text: TextEvent | None = None,
    **overrides: Any,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint; finished nodes are not run again."""
    conn = connect_db(settings)
    try:
        info = recovered_run(conn, run_id)
        final_dir = swap.final_dir_of(info.run_dir)
        if info.run_dir.is_dir() and not os.access(info.run_dir, os.W_OK | os.X_OK):
            raise InputError(
                f"the folder of run {info.run_id} ({info.run_dir}) is read-only: make it writable (chmod u+w) to "
                "resume the run"
            )
        with run_lock(settings.home, info.run_id):
            result = _resume(conn, info, settings, on_event, notify, overrides, on_text)
            if final_dir is not None:  # it was written beside the run it replaces: swapped in now it has ended
                result = _swapped(result, final_dir, conn)
            return result
    finally:
        conn.close()


def recovered_run(conn: sqlite3.Connection, run_id: str) -> RunInfo:
    """The run with this id, after finishing or rolling back an interrupted ``-o`` swap it takes part in."""
    info = get_run(conn, run_id)
    final_dir = swap.final_dir_of(info.run_dir)
    if final_dir is None and swap.journal_path(info.run_dir).is_file():
        final_dir = info.run_dir  # swapped in, the rest of the swap interrupted
    if final_dir is not None:
        swap.recover(final_dir, conn, busy=True)
        info = get_run(conn, info.run_id)
    return info


def _resume(
    conn: sqlite3.Connection,
    info: RunInfo,
    settings: Settings,
    on_event: Event | None,
    notify: services.Notify,
    overrides: dict[str, Any],
    on_text: TextEvent | None = None,
) -> RunResult:
    """Resume ``info``'s run (its lock held)."""
    _refuse_repeating_a_crash(info)
    clean_temporaries(info.run_dir)  # what a killed process left half-written (.i2m-tmp-*): never an output
    run_settings = _stored_settings(info, settings, overrides)
    stored, here = info.settings.get("vlm_base_url"), settings.vlm_base_url
    if backend(run_settings.vlm_backend).served and here and here != stored and "vlm_base_url" not in overrides:
        notify(
            f"run {info.run_id} goes on with the server it was started with ({scrub_url(stored)}), not "
            f"I2M_VLM_BASE_URL={scrub_url(here)}; `i2m runs resume {info.run_id} --base-url URL` chooses another"
        )
    prompts = {k: Path(v) for k, v in info.prompts.items()}
    ctx = prepare_run(run_settings, Path(info.image), info.run_dir, info.run_id, prompts, notify, copy_input=False)
    snapshot = build_graph(checkpointer(conn, run_settings.secret_values())).get_state(
        _config(info.run_id, run_settings)
    )
    if not snapshot.values:
        raise InputError(f"run {info.run_id} has no checkpoint to resume from; start it again")
    if not snapshot.next:
        notify(f"run {info.run_id} had already finished; its outputs are written again")
    return execute_graph(ctx, conn, None, on_event, on_text=on_text)


def scrub_url(url: object) -> str:
    """A URL without the credentials it may carry (``user:password@``)."""
    import urllib.parse

    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return text
    if parts.username is None and parts.password is None:
        return text
    host = parts.hostname or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def _refuse_repeating_a_crash(info: RunInfo) -> None:
    """A run that ended on an internal error would crash the same way again: say so instead."""
    import json

    try:
        record = json.loads((info.run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if record.get("status") == "failed" and any(e.get("log") for e in record.get("errors") or []):
        raise InputError(
            f"run {info.run_id} ended on an internal error (see {info.run_dir / 'run.log'}); resuming would repeat "
            f"it: start a new run, or `i2m runs replay {info.run_id} --from NODE` with other settings"
        )


def predecessor(path: list[str], from_node: str) -> str | None:
    """The node that ran just before ``from_node`` first ran, checked against the compiled graph's edges."""
    if not path:
        return None
    prev = path[-1]
    edges = {(e.source, e.target) for e in build_graph().get_graph().edges}
    if (prev, from_node) not in edges:
        raise InputError(f"the recorded run went {prev} -> {from_node}, which this graph cannot replay")
    return prev


def replay_run(
    run_id: str,
    from_node: str,
    settings: Settings,
    *,
    prompt_overrides: dict[str, Path] | None = None,
    on_event: Event | None = None,
    notify: services.Notify = services.notify_stderr,
    run_dir: Path | None = None,
    state_overrides: State | None = None,
    on_text: TextEvent | None = None,
    **overrides: Any,
) -> RunResult:
    """A new run that starts from the checkpoint of ``run_id`` just before ``from_node`` first ran.

    The nodes before ``from_node`` are not run again: their results (and VLM answers) come from the record.
    """
    if from_node not in NODE_IDS:
        raise InputError(f"unknown node '{from_node}': use one of {', '.join(NODE_IDS)}")
    conn = connect_db(settings)
    try:
        info = get_run(conn, run_id)
        run_settings = _stored_settings(info, settings, overrides)
        graph = build_graph(checkpointer(conn, run_settings.secret_values()))
        history = list(graph.get_state_history(_config(info.run_id, run_settings)))
        before = next((h for h in reversed(history) if from_node in (h.next or ())), None)
        if before is None:
            raise InputError(f"run {info.run_id} never reached '{from_node}'; nothing to replay from")
        prompts = {**{k: Path(v) for k, v in info.prompts.items()}, **(prompt_overrides or {})}
        new_id = new_run_id()
        new_dir = plain_path(run_dir) if run_dir is not None else run_settings.runs_dir / new_id
        ctx = prepare_run(run_settings, Path(info.image), new_dir, new_id, prompts, notify)
        register_run(
            conn, new_id, new_dir, info.image, run_settings, {k: str(v) for k, v in prompts.items()}, parent=info.run_id
        )
        extra = RunExtra(replayed_from={"run_id": info.run_id, "node": from_node})
        values = {**before.values, **(state_overrides or {})}
        previous = predecessor(list(before.values.get("path", [])), from_node)
        if previous is None:
            return execute_graph(ctx, conn, {"image": info.image}, on_event, extra=extra, on_text=on_text)
        # the new thread starts with the recorded state; as_node makes the graph continue at from_node
        graph.update_state(_config(new_id, run_settings), values, as_node=previous)
        recorded = _recorded_calls(info.run_dir, values.get("calls", {}))
        if recorded:
            atomic_write_text(new_dir / "vlm_calls.jsonl", recorded)
        return execute_graph(ctx, conn, None, on_event, extra=extra, on_text=on_text)
    finally:
        conn.close()


def _recorded_calls(run_dir: Path, counts: dict[str, int]) -> str:
    """The first ``counts[node]`` recorded calls of each node, so the new run's record is complete."""
    import json

    path = Path(run_dir) / "vlm_calls.jsonl"
    if not path.exists():
        return ""
    seen: dict[str, int] = {}
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            node = json.loads(line)["node"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if seen.get(node, 0) < counts.get(node, 0):
            seen[node] = seen.get(node, 0) + 1
            out.append(line + "\n")
    return "".join(out)
