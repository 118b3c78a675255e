"""Run the graph for one image: run dir, checkpoints, models, outputs (run.json, music files, maps)."""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import prompts as prompt_lib
from graph.builder import build_graph
from graph.config import Settings
from graph.context import RunContext
from graph.nodes import best_version
from tools.attention import save_overlay
from tools.files import atomic_write_json, atomic_write_text, safe_name
from tools.images import ImageError, load_image
from tools.music.abcparse import read_tune
from tools.music.convert import ConversionError, write_midi, write_musicxml, write_svg, write_wav
from tools.store import StoreError
from tools.vlm import VLMError, make_vlm

Event = Callable[[str, dict[str, Any]], None]


class InputError(ValueError):
    """Refused input (bad image, bad option): exit code 2."""


class RunError(RuntimeError):
    """The run could not start (a model or the knowledge base is unusable)."""


@dataclass
class RunResult:
    """What a run produced; ``record`` is the content of run.json."""

    run_id: str
    run_dir: Path
    record: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


# --- the run database (checkpoints + an index of runs) -------------------------------------------------


@dataclass
class RunInfo:
    """A run as the run database knows it (enough to resume or replay it)."""

    run_id: str
    run_dir: Path
    image: str
    created: float
    status: str
    settings: dict[str, Any]
    prompts: dict[str, str]
    parent: str | None = None


def connect_db(settings: Settings) -> sqlite3.Connection:
    """The run database under I2M_HOME (SQLite in WAL mode, shared safely by concurrent runs)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(settings.db_path), check_same_thread=False, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS i2m_runs (run_id TEXT PRIMARY KEY, run_dir TEXT, image TEXT, created REAL, "
        "status TEXT, settings TEXT, prompts TEXT, parent TEXT)"
    )
    have = {row[1] for row in conn.execute("PRAGMA table_info(i2m_runs)")}
    for column in ("settings", "prompts", "parent"):  # databases written by earlier versions
        if column not in have:
            conn.execute(f"ALTER TABLE i2m_runs ADD COLUMN {column} TEXT")
    conn.commit()
    return conn


def register_run(
    conn: sqlite3.Connection,
    run_id: str,
    run_dir: Path,
    image: str,
    settings: Settings,
    prompts: dict[str, str],
    parent: str | None = None,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO i2m_runs (run_id, run_dir, image, created, status, settings, prompts, parent) "
        "VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
        (run_id, str(run_dir), image, time.time(), settings.model_dump_json(), json.dumps(prompts), parent),
    )
    conn.commit()


def set_status(conn: sqlite3.Connection, run_id: str, status: str) -> None:
    conn.execute("UPDATE i2m_runs SET status = ? WHERE run_id = ?", (status, run_id))
    conn.commit()


def _info(row: tuple[Any, ...]) -> RunInfo:
    return RunInfo(
        run_id=row[0],
        run_dir=Path(row[1]),
        image=row[2],
        created=row[3],
        status=row[4],
        settings=json.loads(row[5] or "{}"),
        prompts=json.loads(row[6] or "{}"),
        parent=row[7],
    )


_COLUMNS = "run_id, run_dir, image, created, status, settings, prompts, parent"


def get_run(conn: sqlite3.Connection, run_id: str) -> RunInfo:
    """The run with this id (a unique prefix is enough); InputError when unknown."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM i2m_runs WHERE run_id LIKE ? ORDER BY created", (run_id.replace("%", "") + "%",)
    ).fetchall()
    exact = [r for r in rows if r[0] == run_id]
    if exact:
        return _info(exact[0])
    if len(rows) == 1:
        return _info(rows[0])
    if not rows:
        raise InputError(f"no run '{run_id}' in {conn_path(conn)}; see `i2m runs list`")
    raise InputError(f"'{run_id}' matches {len(rows)} runs; give more of the id")


def list_runs(conn: sqlite3.Connection, limit: int = 20) -> list[RunInfo]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM i2m_runs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
    return [_info(r) for r in rows]


def conn_path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "the run database"


def checkpointer(conn: sqlite3.Connection) -> Any:
    from langgraph.checkpoint.sqlite import SqliteSaver

    saver = SqliteSaver(conn)
    saver.setup()
    return saver


# --- building the context ------------------------------------------------------------------------------


def make_retriever(settings: Settings, notify: Callable[[str], None]) -> Any:
    """A callable (image, description) -> references, or None to compose without examples."""
    if settings.top_k <= 0:
        return None
    from tools.store import KnowledgeBase

    kb = KnowledgeBase(settings.kb_dir, settings.embed_model, url=settings.chroma_url)
    if not kb.exists():
        if kb.other_models():
            # a base for another embedder: querying it with this one would be garbage
            raise StoreError(
                f"the knowledge base was built with {', '.join(kb.other_models())}, not with "
                f"'{settings.embed_model}': set I2M_EMBED_MODEL to that model or run `i2m kb build-starter`"
            )
        if settings.kb_auto_build:
            from tools.kb import build_starter

            notify("no knowledge base yet: building the starter base (once)")
            build_starter(settings, kb, progress=True)
        else:
            notify("no knowledge base: composing without examples; build one with `i2m kb build-starter`")
            return None
    from tools.embedder import get_embedder
    from tools.retrieval import retrieve

    embedder = get_embedder(settings.embed_model, settings.vlm_device)

    def _retrieve(image: Any, description: str) -> list[dict[str, Any]]:
        return retrieve(kb, embedder, image, description, settings.top_k, settings.score_threshold)

    return _retrieve


def _notify_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def vlm_from_settings(settings: Settings, backend: str | None = None, model: str | None = None) -> Any:
    """The VLM the settings describe (or another ``model`` / ``backend`` with the same device options)."""
    return make_vlm(
        backend or settings.vlm_backend,
        model or settings.vlm_model,
        replay_file=settings.replay_file,
        device=settings.vlm_device,
        dtype=settings.vlm_dtype,
        trust_remote_code=settings.trust_remote_code,
        max_pixels=settings.image_max_pixels,
        base_url=settings.vlm_base_url,
        api_key=settings.vlm_api_key,
        timeout_s=settings.vlm_timeout_s,
        replay_delay_s=settings.replay_delay_s,
    )


def build_context(
    settings: Settings,
    image_path: Path,
    run_dir: Path,
    prompt_overrides: dict[str, Path] | None = None,
    notify: Callable[[str], None] = _notify_stderr,
) -> RunContext:
    try:
        image = load_image(image_path)
    except ImageError as e:
        raise InputError(str(e)) from e
    try:
        prompts = prompt_lib.load_all(prompt_overrides)
    except prompt_lib.PromptError as e:
        raise InputError(str(e)) from e
    try:
        vlm = vlm_from_settings(settings)
        retriever = make_retriever(settings, notify)
    except (VLMError, StoreError) as e:
        raise RunError(str(e)) from e
    return RunContext(
        settings=settings,
        vlm=vlm,
        prompts=prompts,
        run_dir=run_dir,
        image=image,
        retriever=retriever,
        fallback_map=make_fallback_map(settings, image, notify),
    )


def make_fallback_map(settings: Settings, image: Any, notify: Callable[[str], None]) -> Any:
    """For served models (no attentions): a CLIP occlusion map of the image against a text, or None."""
    if not settings.attention_maps or settings.vlm_backend != "openai":
        return None

    def _map(text: str) -> Any:
        from tools.attention import clip_occlusion_map
        from tools.embedder import EmbedderError, get_embedder

        try:
            embedder = get_embedder(settings.embed_model, settings.vlm_device)
        except EmbedderError as e:
            notify(f"no explanation map: {e}")
            return None
        return clip_occlusion_map(embedder, image, text)

    return _map


# --- outputs -------------------------------------------------------------------------------------------


def write_outputs(
    ctx: RunContext,
    run_id: str,
    state: dict[str, Any],
    image_path: Path,
    error: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RunResult:
    """Write run.json, the final music files and the attention map from a (final or interrupted) state."""
    run_dir = ctx.run_dir
    files: dict[str, str] = {}
    notes: list[str] = []
    versions = state.get("versions", [])
    best = best_version(versions)
    final = None
    if best is not None and best["ok"]:
        final = {
            "version": best["index"] + 1,
            "abc": best["abc"],
            "metrics": best["metrics"],
            "title": best.get("title"),
        }
        atomic_write_text(run_dir / "music.abc", best["abc"])
        files["abc"] = "music.abc"
        tune = read_tune(best["abc"], ctx.settings.abc_limits)
        write_midi(tune, run_dir / "music.mid")
        files["midi"] = "music.mid"
        for key, fn, fname in (
            ("musicxml", lambda: write_musicxml(best["abc"], run_dir / "music.musicxml"), "music.musicxml"),
            ("wav", lambda: write_wav(run_dir / "music.mid", run_dir / "music.wav"), "music.wav"),
            ("svg", lambda: write_svg(best["abc"], run_dir / "music.svg"), "music.svg"),
        ):
            try:
                fn()
                files[key] = fname
            except ConversionError as e:
                notes.append(f"{key}: {e}")
    attention_files: dict[str, str] = {}
    for name, att in (state.get("attention") or {}).items():
        grid = np.asarray(att["grid"], dtype=np.float32)
        fname = "attention.png" if name == "describe" else f"attention-{name}.png"
        save_overlay(ctx.image, grid, run_dir / fname)
        attention_files[name] = fname
    if best is not None and best["ok"]:
        for section, att in (best.get("attention_maps") or {}).items():
            fname = f"attention-section-{safe_name(section, default='part')}.png"
            save_overlay(ctx.image, np.asarray(att["grid"], dtype=np.float32), run_dir / fname)
            attention_files[f"section: {section}"] = fname
    if "describe" in attention_files:
        files["attention"] = "attention.png"
    status = state.get("status")
    reason = state.get("reason")
    if error is not None:
        status, reason = "failed", error
    elif status is None:
        status, reason = "failed", "the run stopped before it finished"
    if status == "ok":
        reason = None
    # copies of the prompts this run used, so a run can be read and re-run later
    prompt_paths = {}
    for name, p in ctx.prompts.items():
        atomic_write_text(run_dir / "prompts" / f"{name}.md", p.text)
        prompt_paths[name] = str(p.path)
    record = {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "image": str(image_path),
        "description": state.get("description"),
        "references": [
            {"id": r["id"], "caption": r["caption"], "score": r["score"], "via": r["via"]}
            for r in state.get("references", [])
        ],
        "versions": [
            {k: v.get(k) for k in ("node", "abc", "ok", "errors", "warnings", "metrics", "commentary", "title")}
            for v in versions
        ],
        "final": final,
        "motivation": state.get("motivation"),
        "path": state.get("path", []),
        "timings": state.get("timings", []),
        "prompts": prompt_paths,
        "attention": {
            "method": next((a.get("method") for a in (state.get("attention") or {}).values()), None),
            "files": attention_files,
        },
        "files": files,
        "notes": notes,
        "settings": {
            "vlm_backend": ctx.settings.vlm_backend,
            "vlm_model": ctx.settings.vlm_model,
            "embed_model": ctx.settings.embed_model,
            "max_parse_retries": ctx.settings.max_parse_retries,
            "refine_rounds": ctx.settings.refine_rounds,
            "top_k": ctx.settings.top_k,
        },
        "vlm_calls": dict(state.get("calls", {})),
        **(extra or {}),
    }
    files["report"] = "report.html"
    atomic_write_json(run_dir / "run.json", record)
    from graph.report import write_report

    write_report(record, run_dir)
    return RunResult(run_id=run_id, run_dir=run_dir, record=record, files=files)


# --- running -------------------------------------------------------------------------------------------


def _config(run_id: str, settings: Settings) -> dict[str, Any]:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": settings.recursion_limit}


def execute_graph(
    ctx: RunContext,
    conn: sqlite3.Connection,
    run_id: str,
    image_path: Path,
    graph_input: Any,
    on_event: Event | None,
    extra: dict[str, Any] | None = None,
    on_pause: Callable[[dict[str, Any]], str | None] | None = None,
) -> RunResult:
    """Stream the graph (checkpointing after every node), then write the outputs from the saved state.

    With ``on_pause`` the run stops before every reflect round and asks it for a person's words, which are
    added to that round's prompt (human-in-the-loop refinement).
    """
    from langgraph.errors import GraphRecursionError
    from langgraph.types import Command

    graph = build_graph(checkpointer(conn), interrupt_before=("reflect",) if on_pause else ())
    config = _config(run_id, ctx.settings)
    error: str | None = None
    try:
        while True:
            for chunk in graph.stream(
                graph_input, config=config, context=ctx, stream_mode="updates", durability="sync"
            ):
                for node, update in chunk.items():
                    if on_event is not None and isinstance(update, dict):
                        on_event(node, update)
            snapshot = graph.get_state(config)
            if on_pause is None or "reflect" not in (snapshot.next or ()):
                break
            words = on_pause(dict(snapshot.values))
            graph_input = Command(update={"user_feedback": words} if words else {})
    except (VLMError, StoreError) as e:
        error = str(e)
    except GraphRecursionError:
        error = (
            f"the run exceeded its step budget (I2M_RECURSION_LIMIT={ctx.settings.recursion_limit}); "
            "lower I2M_MAX_PARSE_RETRIES or I2M_REFINE_ROUNDS, or raise the limit"
        )
    state = dict(graph.get_state(config).values)
    result = write_outputs(ctx, run_id, state, image_path, error, extra=extra)
    set_status(conn, run_id, result.record["status"])
    return result


def compose_image(
    image: str | Path,
    settings: Settings,
    *,
    run_dir: Path | None = None,
    prompt_overrides: dict[str, Path] | None = None,
    on_event: Event | None = None,
    notify: Callable[[str], None] = _notify_stderr,
    run_id: str | None = None,
    user_feedback: str | None = None,
    on_start: Callable[[str, Path], None] | None = None,
) -> RunResult:
    """Turn one image into music. Raises InputError (refused input) or RunError (cannot start)."""
    image_path = Path(image).expanduser().absolute()
    run_id = run_id or new_run_id()
    run_dir = Path(run_dir).absolute() if run_dir is not None else settings.runs_dir / run_id
    ctx = build_context(settings, image_path, run_dir, prompt_overrides, notify)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image_path, run_dir / f"input{image_path.suffix.lower() or '.img'}")
    conn = connect_db(settings)
    try:
        register_run(
            conn, run_id, run_dir, str(image_path), settings, {k: str(v) for k, v in (prompt_overrides or {}).items()}
        )
        if on_start is not None:
            on_start(run_id, run_dir)
        graph_input: dict[str, Any] = {"image": str(image_path)}
        if user_feedback:
            graph_input["user_feedback"] = user_feedback
        return execute_graph(ctx, conn, run_id, image_path, graph_input, on_event)
    finally:
        conn.close()


def _stored_settings(info: RunInfo, overrides: dict[str, Any]) -> Settings:
    return Settings.model_validate(info.settings).with_overrides(**overrides)


def resume_run(
    run_id: str,
    settings: Settings,
    *,
    on_event: Event | None = None,
    notify: Callable[[str], None] = _notify_stderr,
    **overrides: Any,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint; finished nodes are not run again."""
    conn = connect_db(settings)
    try:
        info = get_run(conn, run_id)
        run_settings = _stored_settings(info, overrides)
        ctx = build_context(
            run_settings, Path(info.image), info.run_dir, {k: Path(v) for k, v in info.prompts.items()}, notify
        )
        snapshot = build_graph(checkpointer(conn)).get_state(_config(info.run_id, run_settings))
        if not snapshot.values:
            raise InputError(f"run {info.run_id} has no checkpoint to resume from; start it again")
        if not snapshot.next:
            notify(f"run {info.run_id} had already finished; its outputs are written again")
        graph_input = None
        return execute_graph(ctx, conn, info.run_id, Path(info.image), graph_input, on_event)
    finally:
        conn.close()


def replay_run(
    run_id: str,
    from_node: str,
    settings: Settings,
    *,
    prompt_overrides: dict[str, Path] | None = None,
    on_event: Event | None = None,
    notify: Callable[[str], None] = _notify_stderr,
    run_dir: Path | None = None,
    state_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> RunResult:
    """A new run that starts from the checkpoint of ``run_id`` just before ``from_node`` first ran.

    The nodes before ``from_node`` are not run again: their results (and VLM answers) come from the record.
    """
    from graph.builder import NODE_IDS

    if from_node not in NODE_IDS:
        raise InputError(f"unknown node '{from_node}': use one of {', '.join(NODE_IDS)}")
    conn = connect_db(settings)
    try:
        info = get_run(conn, run_id)
        run_settings = _stored_settings(info, overrides)
        graph = build_graph(checkpointer(conn))
        history = list(graph.get_state_history(_config(info.run_id, run_settings)))
        before = next((h for h in reversed(history) if from_node in (h.next or ())), None)
        if before is None:
            raise InputError(f"run {info.run_id} never reached '{from_node}'; nothing to replay from")
        prompts = {**{k: Path(v) for k, v in info.prompts.items()}, **(prompt_overrides or {})}
        new_id = new_run_id()
        new_dir = Path(run_dir).absolute() if run_dir is not None else run_settings.runs_dir / new_id
        ctx = build_context(run_settings, Path(info.image), new_dir, prompts, notify)
        new_dir.mkdir(parents=True, exist_ok=True)
        register_run(
            conn, new_id, new_dir, info.image, run_settings, {k: str(v) for k, v in prompts.items()}, parent=info.run_id
        )
        # the new thread starts with the recorded state; as_node makes the graph continue at from_node
        previous = {
            "describe": None,
            "retrieve": "describe",
            "compose": "retrieve",
            "parse_check": "compose",
            "evaluate": "parse_check",
            "reflect": "evaluate",
            "explain": "evaluate",
        }[from_node]
        values = {**before.values, **(state_overrides or {})}
        if previous is None:
            return execute_graph(
                ctx,
                conn,
                new_id,
                Path(info.image),
                {"image": info.image},
                on_event,
                extra={"replayed_from": {"run_id": info.run_id, "node": from_node}},
            )
        graph.update_state(_config(new_id, run_settings), values, as_node=previous)
        recorded = _recorded_calls(info.run_dir, values.get("calls", {}))
        if recorded:
            (new_dir / "vlm_calls.jsonl").write_text(recorded, encoding="utf-8")
        return execute_graph(
            ctx,
            conn,
            new_id,
            Path(info.image),
            None,
            on_event,
            extra={"replayed_from": {"run_id": info.run_id, "node": from_node}},
        )
    finally:
        conn.close()


def _recorded_calls(run_dir: Path, counts: dict[str, int]) -> str:
    """The first ``counts[node]`` recorded calls of each node, so the new run's record is complete."""
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


def load_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
