"""Routers decide from the state and the context's bounds alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from image2music.graph.config import load_settings
from image2music.graph.context import RunContext
from image2music.graph.routing import (
    after_evaluate,
    after_parse_check,
    decide_after_evaluate,
    decide_after_parse_check,
    decision_path_problems,
)


def _runtime(tmp_path: Path, **settings: Any) -> Runtime[RunContext]:
    s = load_settings(vlm_backend="replay", **settings)
    return Runtime(context=RunContext(settings=s, run_id="r", image_path=tmp_path / "i.png", run_dir=tmp_path))


def _v(node: str, ok: bool) -> dict[str, Any]:
    return {"index": 0, "node": node, "ok": ok, "abc": "", "errors": [], "warnings": []}


def test_decide_after_parse_check_by_validity_writer_and_budget(tmp_path: Path) -> None:
    s = load_settings(vlm_backend="replay", max_parse_retries=2)
    assert decide_after_parse_check({"versions": [_v("compose", True)]}, s)["to"] == "evaluate"
    assert decide_after_parse_check({"versions": [_v("compose", False)], "parse_failures": 1}, s)["to"] == "compose"
    assert decide_after_parse_check({"versions": [_v("reflect", False)], "parse_failures": 2}, s)["to"] == "reflect"
    spent = decide_after_parse_check({"versions": [_v("reflect", False)], "parse_failures": 3}, s)
    assert spent["to"] == "__end__" and "I2M_MAX_PARSE_RETRIES=2" in spent["because"][0]


def test_routers_route_on_the_recorded_decision(tmp_path: Path) -> None:
    state: dict[str, Any] = {"versions": [_v("compose", True)]}
    state["decisions"] = [{"after": "parse_check", "to": "compose", "because": ["recorded"]}]
    assert after_parse_check(state) == "errors"  # type: ignore[arg-type]  # the record
    state["decisions"].append({"after": "evaluate", "to": "explain", "because": ["recorded"]})
    assert after_evaluate(state) == "done"  # type: ignore[arg-type]


def test_decide_after_evaluate_under_both_policies(tmp_path: Path) -> None:
    fixed = load_settings(vlm_backend="replay", refine_policy="fixed", refine_rounds=2)
    assert decide_after_evaluate({"refine_round": 0}, fixed)["to"] == "reflect"
    assert decide_after_evaluate({"refine_round": 2}, fixed)["to"] == "explain"
    default = load_settings(vlm_backend="replay")  # the product's policy: feedback
    on_target = {**_v("compose", True), "feedback": []}
    assert decide_after_evaluate({"versions": [on_target], "refine_round": 0}, default)["to"] == "explain"
    off = {**on_target, "feedback": [{"message": "pitch_range 2; target 5-36"}], "score": 0.5}
    assert decide_after_evaluate({"versions": [off], "refine_round": 0}, default)["to"] == "reflect"
    assert decide_after_evaluate({"versions": [off], "refine_round": default.refine_rounds}, default)["to"] == "explain"


def test_decisions_follow_the_path() -> None:
    path = ["describe", "retrieve", "compose", "parse_check", "compose", "parse_check", "evaluate", "explain"]
    good = [
        {"after": "parse_check", "to": "compose", "because": []},
        {"after": "parse_check", "to": "evaluate", "because": []},
        {"after": "evaluate", "to": "explain", "because": []},
    ]
    assert decision_path_problems(path, good) == []  # type: ignore[arg-type]
    bad = [dict(good[0], to="evaluate"), good[1], good[2]]
    assert decision_path_problems(path, bad) == [  # type: ignore[arg-type]
        "after parse_check run 1 the decision says evaluate, the path compose"
    ]
