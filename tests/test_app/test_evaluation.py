"""Built-in evaluation: ablation configurations, objective metrics, a scripted judge, the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import GOOD_ABC, fenced, write_replay

from image2music.cli import main
from image2music.evaluation import JudgeError, mode_agreement, parse_judge, summarise, tempo_agreement


def _scores(v: int) -> str:
    keys = ["overall", "melody", "rhythm", "authenticity", "harmony", "consistency_overall", "semantics", "emotion"]
    return json.dumps(dict.fromkeys(keys, v))


def test_parse_judge() -> None:
    s = parse_judge('<think>hmm {"x": 1}</think> Scores: ' + _scores(5))
    assert s.overall == 5 and s.emotion == 5
    with pytest.raises(JudgeError, match="no JSON"):
        parse_judge("I liked it a lot.")
    with pytest.raises(JudgeError, match="overall"):
        parse_judge(_scores(9))


def test_agreement_rules() -> None:
    assert tempo_agreement("a slow, calm lake", 60) == 1.0
    assert tempo_agreement("a slow, calm lake", 140) == 0.0
    assert tempo_agreement("a lively dance", 132) == 1.0
    assert tempo_agreement("a lake", 60) is None
    assert mode_agreement("melancholic dusk", "Am") == 1.0
    assert mode_agreement("melancholic dusk", "C") == 0.0
    assert mode_agreement("a bright sunny day", "Ddor") == 0.0
    assert mode_agreement("a bright sunny day", "G") == 1.0


def test_summary_means_from_known_rows() -> None:
    rows = [
        {
            "config": "full",
            "overall": 6,
            "melody": 5,
            "rhythm": 5,
            "authenticity": 6,
            "harmony": 5,
            "consistency_overall": 6,
            "semantics": 5,
            "emotion": 6,
            "first_try_ok": 1.0,
        },
        {
            "config": "full",
            "overall": 4,
            "melody": 5,
            "rhythm": 3,
            "authenticity": 4,
            "harmony": 5,
            "consistency_overall": 6,
            "semantics": 5,
            "emotion": 4,
            "first_try_ok": 0.0,
        },
        {
            "config": "none",
            "overall": 3,
            "melody": 3,
            "rhythm": 3,
            "authenticity": 3,
            "harmony": 3,
            "consistency_overall": 3,
            "semantics": 3,
            "emotion": 3,
            "first_try_ok": None,
        },
    ]
    s = summarise(rows, ["full", "none"])
    assert s["full"]["overall"] == 5.0 and s["full"]["rhythm"] == 4.0 and s["full"]["first_try_ok"] == 0.5
    assert s["full"]["quality_average"] == 4.8 and s["full"]["consistency_average"] == 5.333
    assert s["none"]["first_try_ok"] is None and s["none"]["quality_average"] == 3.0


@pytest.mark.slow
def test_eval_end_to_end(tmp_path: Path, image_path: Path, tiny_clip: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(main, ["kb", "build-starter", "--embed-model", str(tiny_clip), "--limit", "20"]).exit_code == 0
    good2 = GOOD_ABC.replace("Q:1/4=80", "Q:1/4=70")
    replay = write_replay(
        tmp_path / "c.jsonl",
        [
            ("describe", "A calm harbour at dawn, melancholic light."),
            ("compose", fenced(GOOD_ABC)),
            ("reflect", fenced(good2)),
            ("explain", "Slow music."),
            ("explain", "Slow music."),
            ("explain", "Slow music."),
            ("explain", "Slow."),
            ("judge", "Sorry, I cannot score this."),
            ("judge", _scores(4)),
        ],
    )
    out = tmp_path / "eval"
    r = cli.invoke(
        main,
        [
            "eval",
            str(image_path),
            "-o",
            str(out),
            "--replay",
            str(replay),
            "--judge",
            "self",
            "--embed-model",
            str(tiny_clip),
            "--top-k",
            "1",
            "--ablation",
            "full,no-rag,no-refine,none",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    rows = {row["config"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"full", "no-rag", "no-refine", "none"}
    # the judge's replay lines are counted per run (like every node's): each run's first answer is unusable and
    # retried, its second scores; no judge error
    assert [rows[c]["overall"] for c in ("full", "no-refine", "no-rag", "none")] == ["4", "4", "4", "4"]
    assert all(not rows[c]["judge_error"] for c in rows) and "judge:" not in r.output
    # the judge's calls are the run's calls: in its vlm_calls.jsonl, with their prompts (recorded, replayable)
    judged = [
        c
        for c in map(json.loads, (Path(rows["no-refine"]["run_dir"]) / "vlm_calls.jsonl").read_text().splitlines())
        if c["node"] == "judge"
    ]
    assert [c["text"] for c in judged] == ["Sorry, I cannot score this.", _scores(4)]
    assert "could not be read" in judged[1]["prompt"] and "X:" in judged[0]["prompt"]
    assert int(rows["full"]["references"]) >= 1 and rows["no-rag"]["references"] == "0"
    assert rows["no-refine"]["reflect_rounds"] == "0" and rows["none"]["reflect_rounds"] == "0"
    assert rows["full"]["reflect_rounds"] == "1"

    # no-rag really sends no examples; full does
    def compose_prompt(cfg: str) -> str:
        calls = [json.loads(x) for x in (Path(rows[cfg]["run_dir"]) / "vlm_calls.jsonl").read_text().splitlines()]
        return [c for c in calls if c["node"] == "compose"][-1]["prompt"]

    assert "Reference 1:" in compose_prompt("full") and "Reference 1:" in compose_prompt("no-refine")
    assert "no reference music" in compose_prompt("no-rag") and "Reference 1:" not in compose_prompt("none")
    # describe ran once per image, shared by all configurations
    assert all(
        json.loads(x)["node"] != "describe" or i == 0
        for i, x in enumerate((Path(rows["none"]["run_dir"]) / "vlm_calls.jsonl").read_text().splitlines())
    )
    summary = (out / "summary.md").read_text()
    assert "| Ours (full) | 4.00 | 4.00 |" in summary and "could not score" not in summary  # all equal: none bold
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    # slow and melancholic words: Q:70 agrees (< 90), K:G (major) does not
    assert rows["full"]["agreement_tempo"] == "1.0" and rows["full"]["agreement_mode"] == "0.0"
    assert rows["full"]["agreement"] == "0.5"


def test_summary_says_when_the_rag_comparison_is_empty() -> None:
    from image2music.evaluation import summary_markdown

    same = {"first_try_ok": 1.0, "ok_within_budget": 1.0, "attempts": 1.0, "bar_consistency": 1.0, "agreement": None}
    styles = dict.fromkeys(("scale_consistency", "pitch_class_entropy", "empty_beat_rate", "duration_seconds"))
    summary = {c: styles | same for c in ("full", "no-rag")}
    text = summary_markdown(summary, ["full", "no-rag"], judged=False, top_k=0)  # type: ignore[arg-type]
    assert "The RAG comparison is empty" in text and "**" not in text.split("## Objective")[1].split("Agreement")[0]
    assert "empty" not in summary_markdown(summary, ["full", "no-rag"], judged=False, top_k=1)  # type: ignore[arg-type]


def test_a_judge_error_is_said_on_the_console_and_in_the_summary(tmp_path: Path, image_path: Path) -> None:
    """Before: the console said `ok` for every row while results.csv alone carried the judge's error."""
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [("describe", "A calm harbour."), ("compose", fenced(GOOD_ABC)), ("explain", "Slow."),
         ("judge", "Sorry, I cannot score this.")],
    )  # fmt: skip
    out = tmp_path / "eval"
    r = CliRunner().invoke(
        main,
        ["eval", str(image_path), "-o", str(out), "--replay", str(replay), "--judge", "self", "--judge-retries", "0",
         "--top-k", "0", "--ablation", "none"],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "judge: judge answer unusable after 1 attempt(s)" in " ".join(r.output.split())
    summary = (out / "summary.md").read_text()
    assert "The judge could not score 1 run(s)" in summary and "none: judge answer unusable" in summary
