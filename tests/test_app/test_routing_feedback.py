"""Routing on metric feedback: each route with replayed answers, and the decisions that explain it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import GOOD_ABC, fenced, write_replay

from image2music.graph.config import load_settings
from image2music.runner import compose_image

CALM = "A calm, quiet lake at dusk; a peaceful scene."
FAST_ABC = GOOD_ABC.replace("Q:1/4=80", "Q:1/4=140")
# worse: still too fast, and a two-note range (pitch_range and pitch classes miss their bands too)
WORSE_ABC = """X:1
T:Worse
M:4/4
L:1/8
Q:1/4=160
K:G
G2 A2 G2 A2 | G2 A2 G2 A2 | G8 |]
"""


def _run(tmp_path: Path, image: Path, answers: list[tuple[str, str]], **settings: object) -> dict:
    replay = write_replay(tmp_path / "calls.jsonl", [("describe", CALM), *answers, ("explain", "Calm.")])
    options: dict[str, object] = {"refine_policy": "feedback", "refine_rounds": 2, **settings}
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, **options)
    return compose_image(image, s, run_dir=tmp_path / "run").record


def _prompts(tmp_path: Path, node: str) -> list[str]:
    lines = (tmp_path / "run" / "vlm_calls.jsonl").read_text().splitlines()
    return [json.loads(x)["prompt"] for x in lines if json.loads(x)["node"] == node]


def test_on_target_at_once_no_reflect(tmp_path: Path, image_path: Path) -> None:
    rec = _run(tmp_path, image_path, [("compose", fenced(GOOD_ABC))])
    assert rec["status"] == "ok"
    assert rec["path"] == ["describe", "retrieve", "compose", "parse_check", "evaluate", "explain"]
    assert rec["targets"]["tempo_qpm"]["high"] == 90 and rec["versions"][0]["score"] == 1.0
    last = rec["decisions"][-1]
    assert last["after"] == "evaluate" and last["to"] == "explain" and "meets every target" in last["because"][0]


def test_off_target_then_fixed_reflects_once(tmp_path: Path, image_path: Path) -> None:
    rec = _run(tmp_path, image_path, [("compose", fenced(FAST_ABC)), ("reflect", fenced(GOOD_ABC))])
    assert rec["path"].count("reflect") == 1 and rec["path"][-1] == "explain" and rec["status"] == "ok"
    evals = [d for d in rec["decisions"] if d["after"] == "evaluate"]
    assert [d["to"] for d in evals] == ["reflect", "explain"]
    assert evals[0]["because"] == ["tempo 140 but the description says calm (30-90)"]
    assert rec["versions"][0]["feedback"][0]["code"] == "off-target" and rec["versions"][0]["score"] < 1.0
    prompt = _prompts(tmp_path, "reflect")[0]
    assert "tempo 140 but the description says calm (30-90)" in prompt and "tempo_qpm = 140" in prompt


def test_worse_after_reflect_restarts_from_the_better_version(tmp_path: Path, image_path: Path) -> None:
    rec = _run(
        tmp_path,
        image_path,
        [("compose", fenced(FAST_ABC)), ("reflect", fenced(WORSE_ABC)), ("reflect", fenced(GOOD_ABC))],
    )
    assert rec["path"].count("reflect") == 2 and rec["status"] == "ok"
    v1, v2 = rec["versions"][0], rec["versions"][1]
    assert v2["score"] < v1["score"]
    second = [d for d in rec["decisions"] if d["after"] == "evaluate"][1]
    assert second["to"] == "reflect" and "starts again from version 1" in second["because"][-1]
    prompts = _prompts(tmp_path, "reflect")
    assert "Q:1/4=140" in prompts[1] and "T:Worse" not in prompts[1]  # round 2 revises version 1
    assert rec["final"]["version"] == 3


def test_round_cap_reached(tmp_path: Path, image_path: Path) -> None:
    rec = _run(
        tmp_path,
        image_path,
        [("compose", fenced(FAST_ABC)), ("reflect", fenced(FAST_ABC)), ("reflect", fenced(FAST_ABC))],
    )
    assert rec["path"].count("reflect") == 2 and rec["status"] == "ok"
    last = rec["decisions"][-1]
    assert last["to"] == "explain" and "round cap reached (I2M_REFINE_ROUNDS=2)" in last["because"][0]


@pytest.mark.slow
def test_fixed_policy_reproduces_the_papers_path(tmp_path: Path, image_path: Path) -> None:
    answers = [("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC))]
    rec = _run(tmp_path, image_path, answers, refine_policy="fixed", refine_rounds=1)
    assert rec["path"] == [
        "describe", "retrieve", "compose", "parse_check", "evaluate", "reflect", "parse_check", "evaluate", "explain",
    ]  # fmt: skip
    assert [d["because"][0] for d in rec["decisions"] if d["after"] == "evaluate"] == [
        "fixed policy: round 1 of 1",
        "fixed policy: 1 round(s) done",
    ]
    prompt = _prompts(tmp_path, "reflect")[0]
    assert "hints, not as targets" in prompt and "pitch_entropy =" in prompt


def test_decisions_are_shown_in_progress_runs_show_graph_and_report(tmp_path: Path, image_path: Path) -> None:
    from click.testing import CliRunner

    from image2music.cli import main

    replay = write_replay(
        tmp_path / "calls.jsonl",
        [("describe", CALM), ("compose", fenced(FAST_ABC)), ("reflect", fenced(GOOD_ABC)), ("explain", "Calm.")],
    )
    out = tmp_path / "run"
    args = ["compose", str(image_path), "--replay", str(replay), "--top-k", "0", "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--refine-policy", "feedback", "--refine-rounds", "2"])
    assert r.exit_code == 0, r.output
    because = "reflect because: tempo 140 but the description says calm (30-90)"
    assert because in r.output
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    shown = CliRunner().invoke(main, ["runs", "show", run_id])
    assert "tempo 140 but the description says calm" in shown.output
    drawn = CliRunner().invoke(main, ["graph", "--run", run_id, "--format", "ascii"])
    assert because in drawn.output
    assert "Decisions" in (out / "report.html").read_text()
