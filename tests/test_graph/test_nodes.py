"""Nodes return partial updates and never mutate the state they were given."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from conftest import ABC_DIR
from langgraph.runtime import Runtime

from image2music.graph import nodes
from image2music.graph.config import load_settings
from image2music.graph.context import RunContext


def _runtime(tmp_path: Path, **settings: Any) -> Runtime[RunContext]:
    s = load_settings(vlm_backend="replay", **settings)
    return Runtime(context=RunContext(settings=s, run_id="r", image_path=tmp_path / "i.png", run_dir=tmp_path))


def test_parse_check_adds_a_version_and_writes_its_files(tmp_path: Path) -> None:
    abc = (ABC_DIR / "pickup_ok.abc").read_text()
    state: dict[str, Any] = {"draft": {"node": "compose", "text": f"```abc\n{abc}\n```"}, "versions": []}
    before = copy.deepcopy(state)
    update = nodes.parse_check(state, _runtime(tmp_path))  # type: ignore[arg-type]
    assert state == before
    (v,) = update["versions"]
    assert v["ok"] and v["index"] == 0 and update["parse_failures"] == 0 and update["path"] == ["parse_check"]
    assert v["files"] == {"abc": "versions/v1.abc", "midi": "versions/v1.mid"}  # where they are: in the record
    assert (tmp_path / v["files"]["abc"]).read_text() == v["abc"]
    assert (tmp_path / v["files"]["midi"]).read_bytes()[:4] == b"MThd"


def test_parse_check_ends_the_run_when_the_retry_budget_is_spent(tmp_path: Path) -> None:
    state: dict[str, Any] = {"draft": {"node": "compose", "text": "no music here"}, "versions": [], "parse_failures": 1}
    update = nodes.parse_check(state, _runtime(tmp_path, max_parse_retries=1))  # type: ignore[arg-type]
    assert update["parse_failures"] == 2 and update["status"] == "failed"
    assert update["versions"][0]["files"] == {}  # no ABC in the answer: nothing written, nothing named
    assert "I2M_MAX_PARSE_RETRIES=1" in update["reason"]


def test_a_music_tool_that_raises_becomes_a_finding(tmp_path: Path, monkeypatch: Any) -> None:
    abc = (ABC_DIR / "pickup_ok.abc").read_text()

    def boom(*_a: Any, **_k: Any) -> Any:
        raise UnicodeEncodeError("latin-1", "\u591c", 0, 1, "cannot encode")

    monkeypatch.setattr(nodes, "midi_bytes", boom)
    update = nodes.parse_check({"draft": {"node": "compose", "text": abc}}, _runtime(tmp_path))  # type: ignore[arg-type]
    (v,) = update["versions"]
    assert not v["ok"] and v["errors"][0]["code"] == "internal" and "UnicodeEncodeError" in v["errors"][0]["message"]
    monkeypatch.setattr(nodes, "tune_metrics", boom)
    version = {"index": 0, "node": "compose", "abc": abc, "ok": True, "errors": [], "warnings": []}
    update = nodes.evaluate({"versions": [version]}, _runtime(tmp_path))  # type: ignore[arg-type]
    (v,) = update["versions"]
    assert v["metrics"] == {} and v["warnings"][-1]["code"] == "internal"


def test_studio_runs_without_a_context(tmp_path: Path, image_path: Path, monkeypatch: Any) -> None:
    """``langgraph dev`` runs the module-level graph with no context: one is made from the environment."""
    from conftest import GOOD_ABC, fenced, write_replay

    from image2music.graph.builder import graph

    replay = write_replay(
        tmp_path / "c.jsonl",
        [
            ("describe", "A harbour."),
            ("compose", fenced(GOOD_ABC)),
            ("reflect", fenced(GOOD_ABC)),
            ("explain", "Calm."),
        ],
    )
    monkeypatch.setenv("I2M_VLM_BACKEND", "replay")
    monkeypatch.setenv("I2M_REPLAY_FILE", str(replay))
    monkeypatch.setenv("I2M_TOP_K", "0")
    monkeypatch.setenv("I2M_SERVER_IMAGE_PATHS", "true")  # a local server that may read the image file
    out = graph.invoke({"image": str(image_path)}, config={"configurable": {"thread_id": "t1"}})
    assert out["status"] == "ok" and out["path"][-1] == "explain"
    home = Path(__import__("os").environ["I2M_HOME"])
    assert (home / "runs" / "studio-t1" / "vlm_calls.jsonl").exists()
