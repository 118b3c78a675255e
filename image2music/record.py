"""The run record: what ``run.json`` is. One builder (``outputs.write_outputs``) makes it; the report, the
terminal display, the graph drawings, the evaluation, the chat and the API read this type."""

from __future__ import annotations

import json
from typing import Any, Required, TypedDict, cast

from image2music.graph.state import Decision, Reference, Version
from image2music.tools.errors import redact
from image2music.tools.music.metrics import Metrics


def scrubbed(record: RunRecord, secrets: list[str]) -> RunRecord:
    """The record with no secret in it (a server or model that echoes the key puts it nowhere on disk)."""
    text = json.dumps(record, ensure_ascii=False)
    clean = redact(text, [json.dumps(s)[1:-1] for s in secrets], headers=False)  # as JSON spells them
    return record if clean == text else cast(RunRecord, json.loads(clean))


class FinalMusic(TypedDict, total=False):
    """The chosen version."""

    version: Required[int]
    """1-based."""
    abc: Required[str]
    metrics: Metrics | None
    title: str | None


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
