"""The ways people use it: graph drawing, prompt commands, batch runs and the Python API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, cli, ctrl_c_works, fenced, replay_run, write_replay

from image2music import Result, compose


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


def test_prompt_commands() -> None:
    r = cli("prompts", "list")
    assert "compose" in r.stdout and "$description" in r.stdout
    assert "ABC notation" in cli("prompts", "show", "compose").stdout
    path = Path(cli("prompts", "path", "reflect").stdout.strip())
    assert path == ROOT / "prompts" / "reflect.md" and path.exists()
    assert cli("prompts", "show", "nope").exit_code == 2


def test_batch_mixed_inputs(tmp_path: Path, image_path: Path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(image_path, imgs / "one.png")
    shutil.copy(image_path, imgs / "two.png")
    (imgs / "bad.jpg").write_text("not an image")
    (imgs / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    r = cli(
        "batch",
        str(imgs),
        "-o",
        str(out),
        "--jobs",
        "2",
        "--replay",
        str(replay_run(tmp_path)),
        "--top-k",
        "0",
        "--json",
    )
    assert r.exit_code == 1  # one image was refused
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    by_name = {Path(x["path"]).name: x for x in rows}
    assert set(by_name) == {"one.png", "two.png", "bad.jpg"}
    assert by_name["one.png"]["status"] == "ok" and by_name["bad.jpg"]["status"] == "refused"
    assert (out / "one" / "music.mid").exists() and (out / "two" / "run.json").exists()
    assert by_name["one.png"]["timings"][0][0] == "describe"
    assert json.loads(r.stdout)[0]["path"].endswith("bad.jpg")  # input order


def test_python_api(tmp_path: Path, image_path: Path) -> None:
    res = compose(image_path, output=tmp_path / "api", vlm_backend="replay", replay_file=replay_run(tmp_path), top_k=0)
    assert isinstance(res, Result) and res.ok and res.abc and "Calm Harbour" in res.abc
    assert res.midi is not None and res.midi.exists() and res.metrics and res.metrics["pitch_range"] == 20
    assert res.motivation == "Calm."


def test_python_api_streams_each_answer_as_it_is_written(tmp_path: Path, image_path: Path) -> None:
    """``on_text(node, piece)``: every model call's text arrives in pieces, node by node, in the run's order; the
    record (vlm_calls.jsonl) holds whole answers, once each."""
    pieces: list[tuple[str, str]] = []
    replay = replay_run(tmp_path)
    res = compose(
        image_path, output=tmp_path / "api", vlm_backend="replay", replay_file=replay, top_k=0,
        on_text=lambda node, piece: pieces.append((node, piece)),
    )  # fmt: skip
    assert res.ok
    calls = [json.loads(line) for line in (tmp_path / "api" / "vlm_calls.jsonl").read_text().splitlines()]
    nodes = [c["node"] for c in calls]
    assert [n for i, (n, _) in enumerate(pieces) if i == 0 or pieces[i - 1][0] != n] == nodes
    for node in set(nodes):
        shown = "".join(p for n, p in pieces if n == node)
        assert shown == "".join(c["text"] for c in calls if c["node"] == node)
    assert len(pieces) > len(calls)  # pieces, not whole answers


def test_graph_of_a_failed_run_shows_the_failed_steps(tmp_path: Path, image_path: Path) -> None:
    from conftest import BROKEN_ABC

    replay = write_replay(tmp_path / "bad.jsonl", [("describe", "x"), ("compose", fenced(BROKEN_ABC))] * 1)
    r = cli("compose", str(image_path), "--replay", str(replay), "--top-k", "0", "--max-parse-retries", "0", "--json")
    rec = json.loads(r.stdout)
    drawn = cli("graph", "--run", rec["run_id"], "--format", "ascii").stdout
    assert "✗ invalid:" in drawn and "-> failed: no valid ABC" in drawn
    assert "✗|" in cli("graph", "--run", rec["run_id"]).stdout


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_a_batch_at_once_with_every_run_resumable(tmp_path: Path, image_path: Path, jobs: int) -> None:
    """Ctrl-C reaches only the main thread: with jobs it is handed to the runs in the worker threads, whose model
    calls (600 s each here) are abandoned. The batch ends at once (exit 130); each run in flight has its record,
    cancelled and resumable; the images not started have their lines too."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from image2music.graph.config import load_settings
    from image2music.runner import resume_run

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(5):
        shutil.copy(image_path, imgs / f"img{i}.png")
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "I2M_REPLAY_DELAY_S": "600", "I2M_TOP_K": "0"}
    cmd = [sys.executable, "-m", "image2music.cli", "batch", str(imgs), "-o", str(out), "--jobs", str(jobs)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [*cmd, "--replay", str(replay_run(tmp_path))],
            stderr=fh,
            stdout=subprocess.DEVNULL,
            env=env,
            preexec_fn=ctrl_c_works,
        )
    try:
        deadline = time.time() + 120  # generous: only a bound on a hang, nothing is decided by it
        while len(list(out.glob("*/input.png"))) < jobs and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(1.0)  # the runs are in their first model call (the replay waits 600 s there)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)  # the model calls would hold it for 600 s
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 130 and "interrupted" in text and "Traceback" not in text, text[-2000:]
    rows = {Path(r["path"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {f"img{i}.png" for i in range(5)} and all(r["status"] == "cancelled" for r in rows.values())
    started = [r for r in rows.values() if r["run_id"] is not None]
    assert len(started) == jobs and all("stopped by Ctrl-C" in r["reason"] for r in started)
    assert all(f"runs resume {r['run_id']}" in r["reason"] for r in started)
    assert all(r["reason"] == "not started: the batch was stopped by Ctrl-C" for r in rows.values() if not r["run_id"])
    listed = {r["run_id"]: r["status"] for r in json.loads(cli("runs", "list", "--json").stdout)}
    assert all(listed[r["run_id"]] == "cancelled" for r in started)
    settings = load_settings(vlm_backend="replay", replay_file=replay_run(tmp_path), top_k=0)
    done = resume_run(started[0]["run_id"], settings, notify=lambda m: None, replay_delay_s=0.0)
    assert done.record["status"] == "ok" and (Path(started[0]["run_dir"]) / "music.mid").exists()


def test_scripted_runs_store_absolute_paths_say_things_once_and_leave_only_outputs(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative --replay and --prompt are stored absolute (`runs replay` from another folder works); image
    paths print normalised (no `..`); a batch says once why it has no references, not once per image; a run
    folder holds only what README lists (no lock file)."""
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    shutil.copy(image_path, work / "photos" / "a.png")
    shutil.copy(image_path, work / "photos" / "b.png")
    replay_run(work)
    (work / "my_compose.md").write_text(Path(cli("prompts", "path", "compose").stdout.strip()).read_text())
    monkeypatch.chdir(work)
    r = cli("compose", "photos/../photos/a.png", "-o", "run", "--replay", "calls.jsonl", "--top-k", "0",
            "--prompt", "compose=my_compose.md", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["image"] == str(work / "photos" / "a.png") and ".." not in r.output
    assert rec["settings"]["replay_file"] == str(work / "calls.jsonl")
    assert sorted(p.name for p in (work / "run").iterdir() if p.name.startswith(".")) == []  # no lock, no temp
    monkeypatch.chdir(tmp_path)
    again = cli("runs", "replay", rec["run_id"], "--from", "compose", "-o", str(tmp_path / "again"))
    assert again.exit_code == 0, again.output
    # a batch without an embedder: the reason there are no references is said once
    monkeypatch.chdir(work)
    b = cli("batch", "photos", "-o", str(tmp_path / "out"), "--replay", "calls.jsonl", "--top-k", "1",
            "--embed-model", "no-such-org/no-such-embedder-123")  # fmt: skip
    assert b.exit_code == 0, b.output
    assert b.output.count("composing without examples") == 1
