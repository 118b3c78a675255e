"""Best version, latest valid version, retry feedback and step labels."""

from __future__ import annotations

from typing import Any

from image2music.graph.versions import best_version, latest_valid, refine_rounds_run, retry_feedback, steps


def _v(i: int, ok: bool, warnings: int = 0) -> dict[str, Any]:
    return {"index": i, "node": "compose", "ok": ok, "abc": "X:1", "errors": [], "warnings": [{}] * warnings}


def test_best_is_valid_then_fewest_warnings_then_latest() -> None:
    vs = [_v(0, True, 2), _v(1, False), _v(2, True, 1), _v(3, True, 1)]
    assert best_version(vs)["index"] == 3  # type: ignore[index]
    assert latest_valid(vs)["index"] == 3  # type: ignore[index]
    assert best_version([_v(0, False)])["index"] == 0  # type: ignore[index]
    assert best_version([]) is None and latest_valid([_v(0, False)]) is None


def test_retry_feedback_shows_the_answer_and_the_errors() -> None:
    v = {**_v(0, False), "errors": [{"line": 2, "column": 1, "bar": None, "voice": None, "message": "no K:"}]}
    text = retry_feedback(v)  # type: ignore[arg-type]
    assert "```abc\nX:1\n```" in text and "line 2, col 1" in text and "no K:" in text


def test_steps_label_retries_and_rounds() -> None:
    path = [
        "describe",
        "retrieve",
        "compose",
        "parse_check",
        "compose",
        "parse_check",
        "evaluate",
        "reflect",
        "parse_check",
        "reflect",
        "parse_check",
        "evaluate",
        "reflect",
        "parse_check",
        "evaluate",
        "explain",
        "reflect",
        "parse_check",
        "evaluate",
        "explain",
    ]
    labels = [(s.node, s.label) for s in steps(path) if s.node in ("compose", "reflect")]
    assert labels == [
        ("compose", ""),
        ("compose", "retry 1"),
        ("reflect", "round 1"),
        ("reflect", "round 1, retry after parse errors"),
        ("reflect", "round 2"),
        ("reflect", "round 3"),  # a person's extra round after explain
    ]
    assert refine_rounds_run(path) == 3  # parse retries inside a round are not rounds
