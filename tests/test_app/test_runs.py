"""End-to-end graph runs with scripted VLM answers (replay backend)."""

from __future__ import annotations

import json
from pathlib import Path

import muspy
import pytest
from conftest import BROKEN_ABC, GOOD_ABC, WARN_ABC, fenced, write_replay

from image2music.graph.config import load_settings
from image2music.runner import InputError, compose_image

DESC = ("describe", "A harbour at dawn with small boats and pink light.")
EXPLAIN = ("explain", "The gentle G major melody follows the boats rocking in the pink light.")


def run(tmp_path: Path, image: Path, calls: list[tuple[str, str]], **overrides: object):  # noqa: ANN201
    replay = write_replay(tmp_path / "calls.jsonl", calls)
    settings = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, **overrides)
    return compose_image(image, settings, run_dir=tmp_path / "run")


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
def test_clean_run_writes_everything(tmp_path: Path, image_path: Path) -> None:
    res = run(tmp_path, image_path, [DESC, ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC)), EXPLAIN])
    rec = res.record
    assert rec["status"] == "ok" and rec["reason"] is None
    assert rec["path"] == [
        "describe",
        "retrieve",
        "compose",
        "parse_check",
        "evaluate",
        "reflect",
        "parse_check",
        "evaluate",
        "explain",
    ]
    assert len(rec["timings"]) == len(rec["path"])
    assert [v["node"] for v in rec["versions"]] == ["compose", "reflect"]
    assert all(v["metrics"] and v["metrics"]["pitch_range"] == 20 for v in rec["versions"])
    assert rec["final"]["version"] == 2 and rec["motivation"].startswith("The gentle")
    assert rec["versions"][0]["commentary"].startswith("Here is the music.")
    assert set(rec["prompts"]) >= {"describe", "compose", "reflect", "explain"}
    run_dir = tmp_path / "run"
    for f in ("run.json", "vlm_calls.jsonl", "music.abc", "music.mid", "music.musicxml"):
        assert (run_dir / f).exists(), f
    assert muspy.read_midi(str(run_dir / "music.mid")).get_end_time() > 0
    calls = [json.loads(x) for x in (run_dir / "vlm_calls.jsonl").read_text().splitlines()]
    assert [c["node"] for c in calls] == ["describe", "compose", "reflect", "explain"]
    assert "A harbour at dawn" in calls[1]["prompt"]  # the description reaches compose
    assert "pitch_range = 20" in calls[2]["prompt"]  # metrics reach reflect
    assert json.loads((run_dir / "run.json").read_text()) == rec


def test_parse_error_then_fixed_compose(tmp_path: Path, image_path: Path) -> None:
    res = run(
        tmp_path,
        image_path,
        [DESC, ("compose", fenced(BROKEN_ABC)), ("compose", fenced(GOOD_ABC)), EXPLAIN],
        refine_rounds=0,
    )
    rec = res.record
    assert rec["status"] == "ok"
    assert rec["path"][:6] == ["describe", "retrieve", "compose", "parse_check", "compose", "parse_check"]
    assert [v["ok"] for v in rec["versions"]] == [False, True]
    err = rec["versions"][0]["errors"][0]
    assert err["line"] == 6 and err["message"].startswith("unclosed chord")
    calls = [json.loads(x) for x in (tmp_path / "run" / "vlm_calls.jsonl").read_text().splitlines()]
    assert "unclosed chord" in calls[2]["prompt"] and "could not be used" in calls[2]["prompt"]
    assert "reflect" not in rec["path"]


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
@pytest.mark.slow
def test_retries_exhausted_fails_with_best_so_far(tmp_path: Path, image_path: Path) -> None:
    calls = [DESC, ("compose", fenced(GOOD_ABC))] + [("reflect", "I cannot improve it, sorry.")] * 3
    res = run(tmp_path, image_path, calls, max_parse_retries=2)
    rec = res.record
    assert rec["status"] == "failed"
    assert "no valid ABC after 3 attempt(s) in reflect round 1" in rec["reason"]
    assert rec["path"].count("reflect") == 3 and rec["path"][-1] == "parse_check"
    assert rec["final"]["version"] == 1  # the valid compose version is kept
    assert (tmp_path / "run" / "music.mid").exists()
    assert "explain" not in rec["path"]


def test_compose_retries_exhausted_has_no_final(tmp_path: Path, image_path: Path) -> None:
    res = run(tmp_path, image_path, [DESC] + [("compose", "No music today.")] * 2, max_parse_retries=1)
    assert res.record["status"] == "failed" and res.record["final"] is None
    assert not (tmp_path / "run" / "music.mid").exists()


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_refine_rounds_are_honoured(tmp_path: Path, image_path: Path, rounds: int) -> None:
    calls = [DESC, ("compose", fenced(WARN_ABC))] + [("reflect", fenced(GOOD_ABC))] * rounds + [EXPLAIN]
    rec = run(tmp_path, image_path, calls, refine_rounds=rounds).record
    assert rec["status"] == "ok"
    assert rec["path"].count("reflect") == rounds
    assert rec["vlm_calls"].get("reflect", 0) == rounds
    # the compose version has bar warnings; a valid refinement without warnings is kept
    assert rec["final"]["version"] == (1 if rounds == 0 else rounds + 1)
    if rounds:
        prompt = json.loads((tmp_path / "run" / "vlm_calls.jsonl").read_text().splitlines()[2])["prompt"]
        assert "bar 2 has 2 beats, M:6/4 needs 6" in prompt


@pytest.mark.slow
def test_worse_reflection_keeps_the_better_version(tmp_path: Path, image_path: Path) -> None:
    rec = run(
        tmp_path, image_path, [DESC, ("compose", fenced(GOOD_ABC)), ("reflect", fenced(WARN_ABC)), EXPLAIN]
    ).record
    assert rec["status"] == "ok" and rec["final"]["version"] == 1


def test_running_out_of_replay_answers_is_a_clear_failure(tmp_path: Path, image_path: Path) -> None:
    rec = run(tmp_path, image_path, [DESC]).record
    assert rec["status"] == "failed" and "has 0 answer(s) for node 'compose'" in rec["reason"]


def test_bad_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        run(tmp_path, tmp_path / "x.jpg", [DESC])


def test_nothing_is_written_to_the_working_directory(tmp_path: Path, image_path: Path) -> None:
    cwd = Path.cwd()
    before = set(cwd.iterdir())
    replay = write_replay(tmp_path / "calls.jsonl", [DESC, ("compose", fenced(GOOD_ABC)), EXPLAIN])
    settings = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, refine_rounds=0)
    res = compose_image(image_path, settings)  # default run dir under I2M_HOME
    assert res.run_dir.is_relative_to(settings.home)
    assert set(cwd.iterdir()) == before


def test_module_graph_runs_without_a_context_as_in_studio(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from image2music.graph.builder import graph

    replay = write_replay(tmp_path / "calls.jsonl", [DESC, ("compose", fenced(GOOD_ABC)), EXPLAIN])
    for k, v in {
        "I2M_VLM_BACKEND": "replay",
        "I2M_REPLAY_FILE": str(replay),
        "I2M_TOP_K": "0",
        "I2M_REFINE_ROUNDS": "0",
        "I2M_SERVER_IMAGE_PATHS": "true",  # a local server that may read the image file
    }.items():
        monkeypatch.setenv(k, v)
    out = graph.invoke({"image": str(image_path)})
    assert out["status"] == "ok" and out["path"][-1] == "explain" and out["motivation"] == EXPLAIN[1]


@pytest.mark.usefixtures("paper_policy")
def test_enter_at_a_refine_pause_lets_the_run_decide(tmp_path: Path, image_path: Path) -> None:
    # before: an empty answer resumed with Command(update={}), which langgraph 1.2 fails on (resume_is_map)
    from image2music.graph.config import load_settings
    from image2music.runner import compose_image

    replay = write_replay(
        tmp_path / "c.jsonl",
        [("describe", "A calm harbour."), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC)),
         ("explain", "Calm.")],
    )  # fmt: skip
    asked: list[int] = []
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0)
    result = compose_image(image_path, s, run_dir=tmp_path / "run", on_pause=lambda state: asked.append(1) or "")
    rec = result.record
    assert asked == [1] and rec["status"] == "ok", rec.get("errors")
    assert rec["path"].count("reflect") == 1 and not rec.get("errors")


def test_run_json_holds_every_public_setting_and_never_the_key(tmp_path: Path, image_path: Path) -> None:
    # before: a 7-field subset (no temperature, seed or per-node generation settings)
    from image2music.graph.config import load_settings
    from image2music.rundb import public_settings
    from image2music.runner import compose_image

    replay = write_replay(
        tmp_path / "c.jsonl", [("describe", "A harbour."), ("compose", fenced(GOOD_ABC)), ("explain", "Calm.")]
    )
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, temperature=0.3, seed=7, vlm_api_key="sk-x1")
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["settings"] == public_settings(s) == rec["settings"]
    assert saved["settings"]["temperature"] == 0.3 and saved["settings"]["seed"] == 7
    assert "node_generation" in saved["settings"] and "vlm_api_key" not in saved["settings"]
    assert "sk-x1" not in (tmp_path / "run" / "run.json").read_text()


def test_warm_up_imports_the_later_stages_once_while_the_first_call_is_out(tmp_path: Path) -> None:
    """In a fresh process: the modules the outputs, report and map import when a run reaches them are imported
    by one background thread, once per process, and a served model's map finds its embedding model there
    (here one that is absent, offline: the map's own loader says so later, the warm-up stays quiet)."""
    import os
    import subprocess
    import sys

    code = """
import sys, threading
from image2music.graph.config import load_settings
from image2music import runner, warmup  # a run's modules: none of the later stages' imported
s = load_settings(vlm_backend="openai", vlm_base_url="http://127.0.0.1:9/v1", vlm_model="m",
                  embed_model="nobody/no-clip", formats="abc,mid")
assert not any(m in sys.modules for m in warmup.LATER_IMPORTS), [m for m in warmup.LATER_IMPORTS if m in sys.modules]
warmup.warm_up(s)
warm = [t for t in threading.enumerate() if t.name == "i2m-warm-up"]
warmup.warm_up(s)
assert len([t for t in threading.enumerate() if t.name == "i2m-warm-up"]) <= 1
for t in warm:
    t.join(60)
missing = [m for m in warmup.LATER_IMPORTS if m not in sys.modules]
assert len(warm) == 1 and not missing, missing
from image2music.tools import models
assert isinstance(models._RESOLVED["nobody/no-clip"][0], models.ModelNotFound)
print("ok")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
