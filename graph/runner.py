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
from tools.files import atomic_write_json, atomic_write_text
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


def connect_db(settings: Settings) -> sqlite3.Connection:
    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(settings.db_path), check_same_thread=False, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS i2m_runs (run_id TEXT PRIMARY KEY, run_dir TEXT, image TEXT, "
        "created REAL, status TEXT)"
    )
    conn.commit()
    return conn


def register_run(conn: sqlite3.Connection, run_id: str, run_dir: Path, image: str, status: str) -> None:
    conn.execute(
        "INSERT INTO i2m_runs (run_id, run_dir, image, created, status) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(run_id) DO UPDATE SET status=excluded.status",
        (run_id, str(run_dir), image, time.time(), status),
    )
    conn.commit()


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
        vlm = make_vlm(
            settings.vlm_backend,
            settings.vlm_model,
            replay_file=settings.replay_file,
            device=settings.vlm_device,
            dtype=settings.vlm_dtype,
            trust_remote_code=settings.trust_remote_code,
            max_pixels=settings.image_max_pixels,
            base_url=settings.vlm_base_url,
            api_key=settings.vlm_api_key,
            timeout_s=settings.vlm_timeout_s,
        )
        retriever = make_retriever(settings, notify)
    except (VLMError, StoreError) as e:
        raise RunError(str(e)) from e
    return RunContext(settings=settings, vlm=vlm, prompts=prompts, run_dir=run_dir, image=image, retriever=retriever)


# --- outputs -------------------------------------------------------------------------------------------


def write_outputs(
    ctx: RunContext, run_id: str, state: dict[str, Any], image_path: Path, error: str | None = None
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
    }
    atomic_write_json(run_dir / "run.json", record)
    return RunResult(run_id=run_id, run_dir=run_dir, record=record, files=files)


# --- running -------------------------------------------------------------------------------------------


def _stream(
    ctx: RunContext, conn: sqlite3.Connection, config: dict[str, Any], graph_input: Any, on_event: Event | None
) -> str | None:
    """Run the graph, reporting node updates; returns an error message or None."""
    graph = build_graph(checkpointer(conn))
    try:
        for chunk in graph.stream(graph_input, config=config, context=ctx, stream_mode="updates"):
            for node, update in chunk.items():
                if on_event is not None and isinstance(update, dict):
                    on_event(node, update)
    except (VLMError, StoreError) as e:
        return str(e)
    return None


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
        register_run(conn, run_id, run_dir, str(image_path), "running")
        config = {"configurable": {"thread_id": run_id}, "recursion_limit": settings.recursion_limit}
        graph_input: dict[str, Any] = {"image": str(image_path)}
        if user_feedback:
            graph_input["user_feedback"] = user_feedback
        error = _run_guarded(ctx, conn, config, graph_input, on_event)
        state = build_graph(checkpointer(conn)).get_state(config).values
        result = write_outputs(ctx, run_id, dict(state), image_path, error)
        register_run(conn, run_id, run_dir, str(image_path), result.record["status"])
        return result
    finally:
        conn.close()


def _run_guarded(
    ctx: RunContext, conn: sqlite3.Connection, config: dict[str, Any], graph_input: Any, on_event: Event | None
) -> str | None:
    from langgraph.errors import GraphRecursionError

    try:
        return _stream(ctx, conn, config, graph_input, on_event)
    except GraphRecursionError:
        return (
            f"the run exceeded its step budget (I2M_RECURSION_LIMIT={ctx.settings.recursion_limit}); "
            "lower I2M_MAX_PARSE_RETRIES or I2M_REFINE_ROUNDS, or raise the limit"
        )


def load_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
