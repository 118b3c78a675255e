"""Later lives of a recorded run: continue it (a person's words), resume it after an interruption, replay it
from a node as a new run."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from image2music import swap
from image2music.execution import Event, Pause, TextEvent, execute_graph, run_config
from image2music.graph import services
from image2music.graph.builder import build_graph
from image2music.graph.config import Settings
from image2music.graph.context import RunContext
from image2music.graph.state import NODE_IDS, State
from image2music.outputs import RunResult
from image2music.record import RunExtra
from image2music.rundb import SECRET_SETTINGS, RunInfo, checkpointer, connect_db, get_run, register_run
from image2music.runlock import run_lock
from image2music.runner import new_run_id, prepare_run, put_in_place
from image2music.tools.errors import InputError, redact
from image2music.tools.files import atomic_write_text, clean_temporaries, plain_path
from image2music.tools.vlm.backends import backend


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


def stored_settings(info: RunInfo, settings: Settings, overrides: dict[str, Any]) -> Settings:
    """The settings a run was started with, secrets taken from the current environment, then overrides."""
    data = {**info.settings, **{k: getattr(settings, k) for k in SECRET_SETTINGS}}
    for key in ("vlm_base_url", "chroma_url"):  # stored without their credentials: the environment's, same URL
        here = getattr(settings, key)
        if data.get(key) and "[redacted]@" in data[key]:
            same = here and redact(here, headers=False) == data[key]
            # the same server: its credentials from here; another: none are lent to it (before: the stored
            # `https://[redacted]@host` was taken for a URL and the resume ended in a validation traceback)
            data[key] = here if same else data[key].replace("[redacted]@", "")
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
                result = put_in_place(result, final_dir, conn)
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
    run_settings = stored_settings(info, settings, overrides)
    stored, here = info.settings.get("vlm_base_url"), settings.vlm_base_url
    if backend(run_settings.vlm_backend).served and here and here != stored and "vlm_base_url" not in overrides:
        notify(
            f"run {info.run_id} goes on with the server it was started with ({scrub_url(stored)}), not "
            f"I2M_VLM_BASE_URL={scrub_url(here)}; `i2m runs resume {info.run_id} --base-url URL` chooses another"
        )
    prompts = {k: Path(v) for k, v in info.prompts.items()}
    ctx = prepare_run(run_settings, Path(info.image), info.run_dir, info.run_id, prompts, notify, copy_input=False)
    snapshot = build_graph(checkpointer(conn, run_settings.secret_values())).get_state(
        run_config(info.run_id, run_settings)
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
        run_settings = stored_settings(info, settings, overrides)
        graph = build_graph(checkpointer(conn, run_settings.secret_values()))
        history = list(graph.get_state_history(run_config(info.run_id, run_settings)))
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
        graph.update_state(run_config(new_id, run_settings), values, as_node=previous)
        recorded = recorded_calls(info.run_dir, values.get("calls", {}))
        if recorded:
            atomic_write_text(new_dir / "vlm_calls.jsonl", recorded)
        return execute_graph(ctx, conn, None, on_event, extra=extra, on_text=on_text)
    finally:
        conn.close()


def recorded_calls(run_dir: Path, counts: dict[str, int]) -> str:
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
