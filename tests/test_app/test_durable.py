"""Durable runs: kill a run mid-way and resume it; replay from a checkpoint; list, show and diff runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import GOOD_ABC, ROOT, WARN_ABC, fenced, write_replay

from image2music.cli import main


def _nodes(run_dir: Path) -> list[str]:
    return [json.loads(x)["node"] for x in (run_dir / "vlm_calls.jsonl").read_text().splitlines()]


def test_the_run_database_is_wal_without_a_flush_per_commit(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL: parallel runs do not queue behind each other's fsync; what a killed i2m
    had committed is kept (test_kill_and_resume kills one with SIGKILL and resumes it)."""
    from image2music.graph.config import load_settings
    from image2music.rundb import connect_db

    conn = connect_db(load_settings(home=tmp_path / "home"))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_and_resume(tmp_path: Path, image_path: Path) -> None:
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [
            ("describe", "A harbour."),
            ("compose", fenced(WARN_ABC)),
            ("reflect", fenced(GOOD_ABC)),
            ("explain", "Because."),
        ],
    )
    run_dir = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "I2M_REPLAY_DELAY_S": "1.5", "I2M_TOP_K": "0"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "image2music.cli",
                "compose",
                str(image_path),
                "--replay",
                str(replay),
                "-o",
                str(run_dir),
            ],
            stderr=fh,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    deadline = time.time() + 120
    while "evaluate" not in log.read_text() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)  # during reflect's (slow) model call
    proc.wait()
    assert _nodes(run_dir) == ["describe", "compose"]
    assert not (run_dir / "run.json").exists()
    run_id = next(line.split()[1] for line in log.read_text().splitlines() if line.startswith("run "))

    r = CliRunner().invoke(main, ["runs", "resume", run_id, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["status"] == "ok" and rec["final"]["version"] == 2
    # describe and compose had finished: not called again; the rest ran once
    assert _nodes(run_dir) == ["describe", "compose", "reflect", "explain"]
    assert rec["path"].count("describe") == 1 and rec["path"].count("compose") == 1


def _start(tmp_path: Path, image_path: Path, run_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [("describe", "A harbour."), ("compose", fenced(WARN_ABC)), ("reflect", fenced(GOOD_ABC)), ("explain", "Why.")],
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "I2M_REPLAY_DELAY_S": "1.5", "I2M_TOP_K": "0"}
    cmd = [sys.executable, "-m", "image2music.cli", "compose", str(image_path), "--replay", str(replay)]
    with open(log, "w") as fh:
        return subprocess.Popen([*cmd, "-o", str(run_dir)], stderr=fh, stdout=subprocess.DEVNULL, env=env)


def _wait_for(log: Path, proc: subprocess.Popen[bytes], text: str) -> str:
    deadline = time.time() + 120  # generous: only a bound on a hang, nothing is decided by it
    while text not in log.read_text() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return next(line.split()[1] for line in log.read_text().splitlines() if line.startswith("run "))


@pytest.mark.slow
def test_sigterm_ends_the_run_cancelled_with_its_record_and_resume_completes(tmp_path: Path, image_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _start(tmp_path, image_path, run_dir, log)
    run_id = _wait_for(log, proc, "evaluate")
    proc.send_signal(signal.SIGTERM)  # during reflect's (slow) model call: what timeout, docker stop send
    assert proc.wait(timeout=60) == 143
    assert "terminated (SIGTERM)" in log.read_text() and "Traceback" not in log.read_text()
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "cancelled" and "SIGTERM" in rec["reason"] and f"runs resume {run_id}" in rec["reason"]
    assert (run_dir / "report.html").exists() and rec["final"]["version"] == 1  # the valid version so far
    shown = CliRunner().invoke(main, ["runs", "list", "--json"], catch_exceptions=False)
    assert {"run_id": run_id, "status": "cancelled"}.items() <= next(
        r for r in json.loads(shown.stdout) if r["run_id"] == run_id
    ).items()
    r = CliRunner().invoke(main, ["runs", "resume", run_id, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["status"] == "ok" and rec["final"]["version"] == 2
    assert _nodes(run_dir) == ["describe", "compose", "reflect", "explain"]


@pytest.mark.slow
def test_one_process_executes_a_run(tmp_path: Path, image_path: Path) -> None:
    """A second `runs resume` of a run another process executes exits 2 at once, naming that process."""
    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _start(tmp_path, image_path, run_dir, log)
    try:
        run_id = _wait_for(log, proc, "compose")
        r = CliRunner().invoke(main, ["runs", "resume", run_id], catch_exceptions=False)
        assert r.exit_code == 2, r.output
        assert f"being executed by process {proc.pid}" in r.output and len(r.output.strip().splitlines()) == 1
        assert proc.poll() is None  # the first goes on
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0 and json.loads((run_dir / "run.json").read_text())["status"] == "ok"
    assert _nodes(run_dir) == ["describe", "compose", "reflect", "explain"]  # every call made once


@pytest.mark.slow
def test_replay_from_compose_with_another_prompt(tmp_path: Path, image_path: Path) -> None:
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [
            ("describe", "A harbour."),
            ("compose", fenced(GOOD_ABC)),
            ("explain", "Because."),
        ],
    )
    # answers for the replayed nodes (the k-th call of a node gets the k-th line: k counts from the record)
    other = write_replay(
        tmp_path / "other.jsonl", [("describe", "never used"), ("compose", fenced(WARN_ABC)), ("explain", "Again.")]
    )
    cli = CliRunner()
    r = cli.invoke(
        main,
        [
            "compose",
            str(image_path),
            "--replay",
            str(replay),
            "--top-k",
            "0",
            "--refine-rounds",
            "0",
            "-o",
            str(tmp_path / "a"),
            "--json",
        ],
        catch_exceptions=False,
    )
    first = json.loads(r.stdout)
    prompt = tmp_path / "my_compose.md"
    prompt.write_text("Write ABC music for: $description\n$examples\n$feedback")
    r = cli.invoke(
        main,
        [
            "runs",
            "replay",
            first["run_id"],
            "--from",
            "compose",
            "--prompt",
            f"compose={prompt}",
            "--replay",
            str(other),
            "-o",
            str(tmp_path / "b"),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)
    assert second["replayed_from"] == {"run_id": first["run_id"], "node": "compose"}
    assert second["description"] == "A harbour." and second["final"]["title"] == "Short bars"
    calls = [json.loads(x) for x in (tmp_path / "b" / "vlm_calls.jsonl").read_text().splitlines()]
    assert [c["node"] for c in calls] == ["describe", "compose", "explain"]
    assert calls[1]["prompt"].startswith("Write ABC music for: A harbour.")  # the new prompt was used
    assert second["prompts"]["compose"] == str(prompt)

    r = cli.invoke(main, ["runs", "list", "--json"], catch_exceptions=False)
    listed = json.loads(r.stdout)
    assert [x["run_id"] for x in listed][:2] == [second["run_id"], first["run_id"]]
    assert listed[0]["parent"] == first["run_id"]
    r = cli.invoke(main, ["runs", "show", first["run_id"][:-2]], catch_exceptions=False)
    assert r.exit_code == 0 and "Calm Harbour" in r.stdout and "pitch_range" in r.stdout
    r = cli.invoke(main, ["runs", "diff", first["run_id"], second["run_id"]], catch_exceptions=False)
    assert r.exit_code == 0 and "prompt compose" in r.stdout and "differs" in r.stdout and "Short bars" in r.stdout
    r = cli.invoke(main, ["runs", "show", "nope"])
    assert r.exit_code == 2 and "no run 'nope'" in r.output
