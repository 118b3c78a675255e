"""image2music.viz: the graph drawn (mermaid, ASCII, graphviz) and the path a run took."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import cli, fenced, replay_run, write_replay


def test_graph_mermaid_and_ascii() -> None:
    r = cli("graph")
    assert r.exit_code == 0 and "parse_check -. errors .-> compose" in r.stdout
    assert "evaluate -. rounds left .-> reflect" in r.stdout and "evaluate -. done .-> explain" in r.stdout
    r = cli("graph", "--format", "ascii")
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and lines[:2] == ["start", "  └──▶ describe"]
    assert "  ├─ errors ─▶ compose  (loops back)" in lines and "  └─ done ─▶ explain" in lines
    assert max(len(x) for x in lines) < 48  # a vertical list, not a tangle


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_graph_png(tmp_path: Path) -> None:
    r = cli("graph", "--format", "png", "-o", str(tmp_path / "g.png"))
    assert r.exit_code == 0 and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_graph_png_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = cli("graph", "--format", "png", "-o", str(tmp_path / "g.png"))
    assert r.exit_code == 1 and "'graphviz'" in r.output


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
def test_graph_of_a_run(tmp_path: Path, image_path: Path) -> None:
    rec = json.loads(
        cli("compose", str(image_path), "--replay", str(replay_run(tmp_path)), "--top-k", "0", "--json").stdout
    )
    r = cli("graph", "--run", rec["run_id"])
    assert "evaluate -->|6:" in r.stdout and "explain --> __end__([ok]):::ok" in r.stdout
    r = cli("graph", "--run", rec["run_id"], "--format", "ascii")
    assert "reflect" in r.stdout and "(round 1)" in r.stdout


def test_graph_of_a_failed_run_shows_the_failed_steps(tmp_path: Path, image_path: Path) -> None:
    from conftest import BROKEN_ABC

    replay = write_replay(tmp_path / "bad.jsonl", [("describe", "x"), ("compose", fenced(BROKEN_ABC))] * 1)
    r = cli("compose", str(image_path), "--replay", str(replay), "--top-k", "0", "--max-parse-retries", "0", "--json")
    rec = json.loads(r.stdout)
    drawn = cli("graph", "--run", rec["run_id"], "--format", "ascii").stdout
    assert "✗ invalid:" in drawn and "-> failed: no valid ABC" in drawn
    assert "✗|" in cli("graph", "--run", rec["run_id"]).stdout


def _record(path: list[str], oks: list[bool], status: str = "ok", reason: str | None = None) -> dict[str, object]:
    """A run's record as the viz functions read it: a path, its timings, one version per parse check."""
    versions = [{"ok": ok, "errors": [] if ok else ["line 3: bad"]} for ok in oks]
    decisions = [
        {"after": "parse_check", "to": "evaluate" if ok else "compose", "because": ["valid" if ok else "1 error"]}
        for ok in oks
    ] + [{"after": "evaluate", "to": "explain", "because": ["the metrics are in their bands"]}]
    return {
        "path": path, "timings": [0.5] * len(path), "versions": versions, "decisions": decisions,
        "status": status, "reason": reason,
    }  # fmt: skip


def test_a_runs_path_numbers_its_steps_and_marks_the_failed_check() -> None:
    """Unit: the run's path drawn from its record alone (no graph run): a retry is labelled, the invalid version's
    check is marked in every format, the decisions are written under their steps."""
    from image2music import viz

    rec = _record(["describe", "retrieve", "compose", "parse_check", "compose", "parse_check", "evaluate", "explain"],
                  [False, True])  # fmt: skip
    text = viz.run_path_ascii(rec)  # type: ignore[arg-type]
    lines = text.splitlines()
    assert lines[0].split() == ["1.", "describe", "0.50s"] and "(retry 1)" in lines[5]
    assert "✗ invalid: 1 error(s)" in lines[3] and "-> compose because: 1 error" in lines[4]
    assert lines[-1] == "     -> ok" and "-> explain because: the metrics are in their bands" in text
    mer = viz.run_path_mermaid(rec)  # type: ignore[arg-type]
    assert "compose -->|4: 0.50s ✗| parse_check" in mer and "explain --> __end__([ok]):::ok" in mer
    assert mer.count("|") == 2 * 8  # every step an edge
    dot = viz.run_path_dot(rec)  # type: ignore[arg-type]
    assert dot.count('fontcolor="#c0392b"') == 1 and '"explain" -> "ok";' in dot
    failed = viz.run_path_ascii(_record(["describe", "compose", "parse_check"], [False], "failed", "no valid ABC"))  # type: ignore[arg-type]
    assert failed.splitlines()[-1] == "     -> failed: no valid ABC"


def test_the_graph_drawings_name_every_node_and_label_every_loop() -> None:
    from image2music import viz
    from image2music.graph.routing import EDGE_LABELS
    from image2music.graph.state import NODE_IDS

    mer, dot, art = viz.mermaid(), viz.dot(), viz.ascii_art()
    for node in NODE_IDS:
        assert f"  {node}({node})" in mer and f'"{node}"' in dot and node in art.splitlines()
    for (src, dst), label in EDGE_LABELS.items():
        assert f"{src} -. {label} .-> {dst}" in mer and f'"{src}" -> "{dst}" [style=dashed, label="{label}"];' in dot
