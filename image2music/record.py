"""The run record: what ``run.json`` is. One pure builder (:func:`build_record`, called by
``outputs.write_outputs`` once the files are written) makes it; the report, the terminal display, the graph
drawings, the evaluation, the chat and the API read this type."""

from __future__ import annotations

import json
from typing import Any, Required, TypedDict, cast

from image2music.graph.state import Decision, FinalVersion, Reference, State, Version
from image2music.tools.errors import redact


def scrubbed(record: RunRecord, secrets: list[str]) -> RunRecord:
    """The record with no secret in it (a server or model that echoes the key puts it nowhere on disk)."""
    text = json.dumps(record, ensure_ascii=False)
    clean = redact(text, [json.dumps(s)[1:-1] for s in secrets], headers=False)  # as JSON spells them
    return record if clean == text else cast(RunRecord, json.loads(clean))


FinalMusic = FinalVersion
"""The chosen version (``graph.versions.final_version`` makes it, for the state and for run.json alike)."""


class AttentionSummary(TypedDict, total=False):
    """How the explanation maps were made and where they are."""

    method: str | None
    files: dict[str, str]
    shapes: dict[str, list[int]]


class ErrorNote(TypedDict, total=False):
    """What ended a run: the exception's type, and ``run.log`` where its traceback is."""

    error: str
    log: str
    retries: list[str]
    """A served model's retries (429/5xx) before the call that ended the run failed."""


class RunExtra(TypedDict, total=False):
    """What the runner adds to a record beside the graph's state."""

    start_notes: list[str]
    """Said before the graph started (they open ``notes``)."""
    errors: list[ErrorNote]
    cancelled: str
    """Why the run was stopped (Ctrl-C, SIGTERM): the record says ``cancelled`` with this reason."""
    failed_rounds: list[str | None]
    """Reasons of a person's extra rounds that failed (the run kept its best version)."""
    replayed_from: dict[str, str]
    """``run_id`` and ``node`` of the run a replay started from."""


class RunRecord(TypedDict, total=False):
    """The content of run.json (keys absent in records of earlier versions or of runs that stopped early)."""

    run_id: Required[str]
    status: Required[str]
    """``ok``, ``failed``, ``running`` (in the database only) or ``cancelled``."""
    reason: Required[str | None]
    image: Required[str]
    description: Required[str | None]
    references: Required[list[Reference]]
    versions: Required[list[Version]]
    """Every version: index, node, abc, ok, errors, warnings, metrics, feedback, score, commentary, title."""
    final: FinalMusic | None
    """The chosen version: version (1-based), abc, metrics, title; None when no version is valid."""
    motivation: Required[str | None]
    path: Required[list[str]]
    timings: Required[list[float]]
    """Seconds of each step of ``path``."""
    targets: dict[str, Any]
    decisions: list[Decision]
    prompts: dict[str, str]
    attention: AttentionSummary
    files: dict[str, str]
    notes: list[str]
    settings: dict[str, Any]
    """Every public setting of the run (never the key): the same dump the run database keeps."""
    vlm_calls: dict[str, int]
    vision_encodes: int
    server_retries: list[str]
    errors: list[ErrorNote]
    failed_rounds: list[str | None]
    replayed_from: dict[str, str]


VERSION_FIELDS = (
    "node",
    "abc",
    "ok",
    "errors",
    "warnings",
    "metrics",
    "feedback",
    "score",
    "commentary",
    "title",
    "files",
)
"""What run.json keeps of each version."""


def run_status(state: State, error: str | None, extra: RunExtra) -> tuple[str, str | None]:
    """(status, reason) of a run: cancelled (Ctrl-C, SIGTERM) over an error over the graph's own status; a run
    that stopped before its graph said how it ended failed; an ok run has no reason."""
    status, reason = state.get("status"), state.get("reason")
    if "cancelled" in extra:
        return "cancelled", extra["cancelled"]
    if error is not None:
        return "failed", error
    if status is None:
        return "failed", "the run stopped before it finished"
    return status, None if status == "ok" else reason


def build_record(
    run_id: str,
    image: str,
    state: State,
    *,
    final: FinalMusic | None,
    files: dict[str, str],
    notes: list[str],
    prompts: dict[str, str],
    attention_files: dict[str, str],
    settings: dict[str, Any],
    server_retries: list[str],
    error: str | None = None,
    extra: RunExtra | None = None,
    secrets: list[str] | None = None,
) -> RunRecord:
    """run.json from a run's state and what was written for it (no file is read or written here): references
    without their tunes, each version's ``VERSION_FIELDS``, the attention maps' method and shapes, the runner's
    extras, every secret scrubbed."""
    extra = extra or {}
    status, reason = run_status(state, error, extra)
    maps = state.get("attention") or {}
    record: RunRecord = {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "image": image,
        "description": state.get("description"),
        "references": [
            {"id": r["id"], "caption": r["caption"], "score": r["score"], "via": r["via"]}
            for r in state.get("references", [])
        ],
        "versions": [{k: v.get(k) for k in VERSION_FIELDS} for v in state.get("versions", [])],  # type: ignore[misc]
        "final": final,
        "motivation": state.get("motivation"),
        "path": state.get("path", []),
        "timings": state.get("timings", []),
        "targets": state.get("targets") or {},
        "decisions": state.get("decisions", []),
        "prompts": prompts,
        "attention": {
            "method": next((a.get("method") for a in maps.values()), None),
            "files": attention_files,
            "shapes": {name: list(att.get("shape") or []) for name, att in maps.items()},
        },
        "files": files,
        "notes": notes,
        "settings": settings,
        "vlm_calls": dict(state.get("calls", {})),
        "vision_encodes": int(state.get("vision_encodes", 0)),
    }
    for key in ("errors", "failed_rounds", "replayed_from"):
        if key in extra:
            record[key] = extra[key]  # type: ignore[literal-required]
    failed_after = [r for note in extra.get("errors", []) for r in note.get("retries", [])]
    record["server_retries"] = [*server_retries, *failed_after]
    return scrubbed(record, secrets or [])
