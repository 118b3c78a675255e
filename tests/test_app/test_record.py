"""The pure record builder: run.json from a state and what was written, no file touched."""

from __future__ import annotations

from typing import Any

import pytest

from image2music.record import VERSION_FIELDS, build_record, run_status


def _state(**extra: Any) -> Any:
    return {
        "status": "ok",
        "description": "A harbour.",
        "references": [{"id": "r1", "caption": "an air", "abc": "X:1...", "score": 0.9, "via": "image"}],
        "versions": [{"index": 0, "node": "compose", "abc": "X:1", "ok": True, "errors": [], "warnings": [],
                      "attention_maps": {"A": {"grid": [[1.0]]}}, "feedback": [], "score": 1.0}],
        "attention": {"describe": {"grid": [[0.5, 0.5]], "shape": [1, 2], "method": "vlm-attention"}},
        "path": ["describe", "compose"],
        "timings": [0.1, 0.2],
        "calls": {"describe": 1, "compose": 1},
        "vision_encodes": 1,
        **extra,
    }  # fmt: skip


def _build(state: Any, **kw: Any) -> Any:
    args: dict[str, Any] = dict(final=None, files={}, notes=[], prompts={}, attention_files={}, settings={},
                                server_retries=[])  # fmt: skip
    return build_record("r1", "/img.png", state, **{**args, **kw})


@pytest.mark.parametrize(
    ("state", "error", "extra", "expected"),
    [
        ({"status": "ok", "reason": "stale"}, None, {}, ("ok", None)),
        ({"status": "failed", "reason": "no valid ABC"}, None, {}, ("failed", "no valid ABC")),
        ({"status": "ok"}, "boom", {}, ("failed", "boom")),
        ({"status": "ok"}, "boom", {"cancelled": "Ctrl-C"}, ("cancelled", "Ctrl-C")),
        ({}, None, {}, ("failed", "the run stopped before it finished")),
    ],
)
def test_how_a_run_ended(state: Any, error: str | None, extra: Any, expected: tuple[str, str | None]) -> None:
    assert run_status(state, error, extra) == expected


def test_the_record_keeps_what_run_json_promises() -> None:
    rec = _build(_state(), files={"midi": "music.mid"}, attention_files={"describe": "attention.png"})
    assert rec["status"] == "ok" and rec["reason"] is None and rec["image"] == "/img.png"
    assert rec["references"] == [{"id": "r1", "caption": "an air", "score": 0.9, "via": "image"}]  # no tune
    assert list(rec["versions"][0]) == list(VERSION_FIELDS)  # no index, no attention maps
    assert rec["attention"] == {"method": "vlm-attention", "files": {"describe": "attention.png"},
                                "shapes": {"describe": [1, 2]}}  # fmt: skip
    assert rec["vlm_calls"] == {"describe": 1, "compose": 1} and rec["vision_encodes"] == 1
    assert "errors" not in rec and rec["server_retries"] == []


def test_the_runners_extras_and_retries_and_no_secret() -> None:
    note = {"error": "VLMError", "log": "run.log", "retries": ["HTTP 429, retry 1 of 3"]}
    rec = _build(
        _state(description="the key sk-SECRET-123 echoed"),
        server_retries=["compose call 1: HTTP 503"],
        extra={"errors": [note], "failed_rounds": ["no valid ABC"], "replayed_from": {"run_id": "a", "node": "x"}},
        secrets=["sk-SECRET-123"],
    )
    assert rec["errors"] == [note] and rec["failed_rounds"] == ["no valid ABC"]
    assert rec["replayed_from"] == {"run_id": "a", "node": "x"}
    assert rec["server_retries"] == ["compose call 1: HTTP 503", "HTTP 429, retry 1 of 3"]
    assert "SECRET" not in str(rec)
