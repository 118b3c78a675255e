"""Routers decide from the state and the context's bounds alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from image2music.graph.config import load_settings
from image2music.graph.context import RunContext
from image2music.graph.routing import after_evaluate, after_parse_check
from langgraph.runtime import Runtime


def _runtime(tmp_path: Path, **settings: Any) -> Runtime[RunContext]:
    s = load_settings(vlm_backend="replay", **settings)
    return Runtime(context=RunContext(settings=s, run_id="r", image_path=tmp_path / "i.png", run_dir=tmp_path))


def _v(node: str, ok: bool) -> dict[str, Any]:
    return {"index": 0, "node": node, "ok": ok, "abc": "", "errors": [], "warnings": []}


def test_after_parse_check_routes_by_validity_writer_and_budget(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    assert after_parse_check({"versions": [_v("compose", True)]}, rt) == "evaluate"
    assert after_parse_check({"versions": [_v("compose", False)]}, rt) == "compose"
    assert after_parse_check({"versions": [_v("reflect", False)]}, rt) == "reflect"
    assert after_parse_check({"versions": [_v("reflect", False)], "status": "failed"}, rt) == "__end__"


def test_after_evaluate_counts_rounds(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, refine_rounds=2)
    assert after_evaluate({"refine_round": 0}, rt) == "reflect"
    assert after_evaluate({"refine_round": 1}, rt) == "reflect"
    assert after_evaluate({"refine_round": 2}, rt) == "explain"
    assert after_evaluate({}, _runtime(tmp_path, refine_rounds=0)) == "explain"
