"""Start a run for one image: check what it needs, make its folder, register it, execute its graph.

The concerns of a run live apart: the run lock (:mod:`image2music.runlock`), executing the graph and ending
with its record (:mod:`image2music.execution`), the warm-up of later stages (:mod:`image2music.warmup`) and the
later lives of a recorded run — continue, resume, replay (:mod:`image2music.resume`).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from image2music import swap
from image2music.execution import Event, Pause, StopSignal, TextEvent, cancel_reason, execute_graph, how_stopped
from image2music.graph import services
from image2music.graph.config import Settings
from image2music.graph.context import RunContext
from image2music.graph.state import State
from image2music.outputs import RunResult
from image2music.record import RunExtra
from image2music.rundb import check_home, connect_db, register_run
from image2music.tools.errors import InputError
from image2music.tools.files import plain_path
from image2music.warmup import warm_up


def new_run_id() -> str:
    """A sortable, unique run id: ``20261126-204500-a1b2c3``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


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
            result = put_in_place(result, final_dir, conn)
        return result
    finally:
        conn.close()


def put_in_place(result: RunResult, final_dir: Path, conn: sqlite3.Connection) -> RunResult:
    """A finished run written beside an earlier one, put in its place (see :mod:`image2music.swap`)."""
    swap.finish(final_dir, conn)
    return RunResult(run_id=result.run_id, run_dir=final_dir, record=result.record, files=result.files)


__all__ = [
    "RunResult",
    "StopSignal",
    "cancel_reason",
    "claim_output_dir",
    "compose_image",
    "execute_graph",
    "how_stopped",
    "new_run_id",
    "prepare_run",
]
