"""Reliability and safety: bad images, bad model output, budgets, files, concurrency, corrupt stores."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOOD_ABC, ROOT, fenced, write_replay
from PIL import Image

from image2music.cli import main
from image2music.graph.config import load_settings
from image2music.runner import compose_image

CALLS = [("describe", "A harbour."), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC)), ("explain", "Calm.")]


def _bad_images(d: Path) -> dict[str, tuple[Path, int]]:
    """name -> (path, expected exit code): 2 = refused with one line, 0 = converted and composed."""
    d.mkdir()
    cases: dict[str, tuple[Path, int]] = {}
    (d / "empty.png").write_bytes(b"")
    cases["empty file"] = (d / "empty.png", 2)
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (1, 2, 3)).save(buf, format="PNG")
    (d / "trunc.png").write_bytes(buf.getvalue()[:200])
    cases["truncated PNG"] = (d / "trunc.png", 2)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(buf, format="JPEG")
    (d / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    cases["truncated JPEG"] = (d / "trunc.jpg", 2)
    (d / "text.jpg").write_text("this is not a picture")
    cases["text named .jpg"] = (d / "text.jpg", 2)
    Image.new("1", (30000, 30000)).save(d / "bomb.png")
    cases["decompression bomb"] = (d / "bomb.png", 2)
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)).save(d / "sixteen.png")
    cases["16-bit"] = (d / "sixteen.png", 0)
    Image.new("CMYK", (40, 40), (10, 200, 30, 0)).save(d / "cmyk.jpg")
    cases["CMYK"] = (d / "cmyk.jpg", 0)
    Image.new("P", (40, 40), 0).save(d / "pal.png", transparency=0)
    cases["palette with transparency"] = (d / "pal.png", 0)
    frames = [Image.new("RGB", (30, 30), c) for c in [(200, 0, 0), (0, 200, 0)]]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    cases["animated GIF"] = (d / "anim.gif", 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 30)).save(d / "rotated.jpg", exif=exif)
    cases["EXIF-rotated"] = (d / "rotated.jpg", 0)
    cases["missing path"] = (d / "nope.png", 2)
    (d / "folder.png").mkdir()
    cases["a directory"] = (d / "folder.png", 2)
    return cases


@pytest.mark.slow
def test_bad_images_end_in_one_clear_line_or_a_result(tmp_path: Path) -> None:
    replay = write_replay(tmp_path / "calls.jsonl", CALLS)
    cases = _bad_images(tmp_path / "imgs")
    outcomes = {}
    for name, (path, expected) in cases.items():
        r = CliRunner().invoke(
            main,
            [
                "compose",
                str(path),
                "--replay",
                str(replay),
                "--top-k",
                "0",
                "-o",
                str(tmp_path / "runs" / name.replace(" ", "_")),
            ],
        )
        outcomes[name] = r.exit_code
        assert r.exit_code == expected, (name, r.output)
        assert "Traceback" not in r.output, name
        assert r.exception is None or isinstance(r.exception, SystemExit), name
        if expected == 2:
            errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1, (name, r.output)
    print(
        f"bad images: {len(cases)} cases, {sum(v == 2 for v in outcomes.values())} refused, "
        f"{sum(v == 0 for v in outcomes.values())} converted"
    )
    rotated = json.loads((tmp_path / "runs" / "EXIF-rotated" / "run.json").read_text())
    assert rotated["status"] == "ok"


def test_huge_answer_is_capped_and_the_run_ends_within_budget(tmp_path: Path, image_path: Path) -> None:
    endless = "la " * 400_000  # a model that rambles on
    replay = write_replay(tmp_path / "c.jsonl", [("describe", "A harbour.")] + [("compose", endless)] * 3)
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, max_parse_retries=2)
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    assert rec["status"] == "failed" and rec["path"].count("compose") == 3
    assert "characters" in rec["versions"][0]["errors"][0]["message"]


def test_hostile_abc_is_rejected_and_retried(tmp_path: Path, image_path: Path) -> None:
    hostile = fenced("X:1\nT:t\nM:4/4\nL:1/8\nK:C\nC999999999 |]")
    replay = write_replay(
        tmp_path / "c.jsonl", [("describe", "x"), ("compose", hostile), ("compose", fenced(GOOD_ABC)), ("explain", "y")]
    )
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, refine_rounds=0)
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    assert rec["status"] == "ok" and [v["ok"] for v in rec["versions"]] == [False, True]
    assert "out of range" in rec["versions"][0]["errors"][0]["message"]


def test_step_budget_follows_the_loop_bounds(tmp_path: Path, image_path: Path) -> None:
    """The step budget is computed from retries and rounds: the longest legal run ends on its retry
    budget, never on LangGraph's recursion limit."""
    replay = write_replay(tmp_path / "c.jsonl", [("describe", "x")] + [("compose", "no music")] * 21)
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, max_parse_retries=20, refine_rounds=20)
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    assert rec["status"] == "failed" and "no valid ABC after 21 attempt(s)" in rec["reason"]
    assert len(rec["path"]) < s.recursion_limit


@pytest.mark.slow
def test_nothing_is_written_outside_the_run_dir_and_home(tmp_path: Path, image_path: Path) -> None:
    home, cwd, data = tmp_path / "userhome", tmp_path / "work", tmp_path / "data"
    home.mkdir()
    cwd.mkdir()
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "I2M_HOME": str(data),
        "I2M_KB_AUTO_BUILD": "false",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "image2music.cli", "compose", str(image_path), "--replay", str(replay), "--top-k", "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(home.rglob("*")) == [] and list(cwd.iterdir()) == []
    assert (data / "runs.sqlite").exists() and len(list((data / "runs").iterdir())) == 1


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
@pytest.mark.slow
def test_concurrent_runs_share_the_knowledge_base_and_database(
    tmp_path: Path, image_path: Path, tiny_clip: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "I2M_EMBED_MODEL": str(tiny_clip)}
    # two builders at once: the write lock and stable ids keep the base exact
    builders = [
        subprocess.Popen(
            [sys.executable, "-m", "image2music.cli", "kb", "build-starter", "--limit", "60"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for b in builders:
        assert b.wait(timeout=300) == 0, b.stderr.read() if b.stderr else ""
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "image2music.cli",
                "compose",
                str(image_path),
                "--replay",
                str(replay),
                "--top-k",
                "2",
                "-o",
                str(tmp_path / f"run{i}"),
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    recs = []
    for p in runs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        recs.append(json.loads(out))
    assert all(r["status"] == "ok" and r["references"] for r in recs)
    r = CliRunner().invoke(main, ["kb", "stats", "--embed-model", str(tiny_clip), "--json"])
    assert json.loads(r.stdout)["count"] == 60
    r = CliRunner().invoke(main, ["runs", "list", "--json"])
    assert {x["run_id"] for x in json.loads(r.stdout)} >= {rec["run_id"] for rec in recs}


def test_corrupt_knowledge_base_is_a_clear_message(tmp_path: Path, tiny_clip: Path) -> None:
    s = load_settings(embed_model=str(tiny_clip))
    s.kb_dir.mkdir(parents=True)
    (s.kb_dir / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    r = CliRunner().invoke(main, ["kb", "stats", "--embed-model", str(tiny_clip)])
    assert r.exit_code == 1 and "i2m kb build-starter" in r.output and "Traceback" not in r.output


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_a_full_disk_leaves_no_truncated_file_and_the_run_resumes(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The -o disk fills as the first version is written (every write there then fails with ENOSPC after
    half its bytes): the run fails in plain words, resumable; no file under a final name is partial; once
    space is back, `runs resume` completes it."""
    import errno
    import types

    from image2music.resume import resume_run
    from image2music.tools import files

    run_dir = tmp_path / "out"
    full = {"on": False}
    real_fdopen = os.fdopen

    class Filling:
        """A file on a disk that fills: half of what is written lands, then ENOSPC."""

        def __init__(self, fh: Any, name: str) -> None:
            self.fh, self.name = fh, name

        def __enter__(self) -> Filling:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device", self.name)

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        name = os.readlink(f"/proc/self/fd/{fd}")
        fh = real_fdopen(fd, mode, *args, **kwargs)
        if "/versions/" in name:
            full["on"] = True
        return Filling(fh, name) if full["on"] and name.startswith(str(run_dir)) else fh

    fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake_os.fdopen = fdopen
    monkeypatch.setattr(files, "os", fake_os)
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0)
    res = compose_image(image_path, s, run_dir=run_dir, notify=lambda m: None)
    reason = res.record["reason"] or ""
    assert res.record["status"] == "failed" and "is full" in reason and "MB free" in reason
    assert f"i2m runs resume {res.run_id}" in reason and "internal error" not in reason
    leftovers = [p.name for p in run_dir.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert leftovers == []  # no temp file left, and nothing half-written under a final name
    assert not (run_dir / "versions" / "v1.abc").exists() and not (run_dir / "run.json").exists()

    monkeypatch.setattr(files, "os", os)  # space is back
    done = resume_run(res.run_id, s, notify=lambda m: None)
    assert done.record["status"] == "ok" and (run_dir / "run.json").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"


def test_i2m_home_that_is_a_file_or_a_damaged_run_database_is_said_so(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    a_file = tmp_path / "home-file"
    a_file.write_text("not a folder")
    monkeypatch.setenv("I2M_HOME", str(a_file))
    r = CliRunner().invoke(main, ["compose", str(image_path), "--replay", str(replay), "--top-k", "0"])
    assert r.exit_code == 2 and "is a file, not a folder" in r.output and "Traceback" not in r.output
    home = tmp_path / "home"
    home.mkdir()
    (home / "runs.sqlite").write_bytes(b"not a database" * 100)
    monkeypatch.setenv("I2M_HOME", str(home))
    r = CliRunner().invoke(main, ["runs", "list"])
    assert r.exit_code == 1 and "is damaged" in r.output and "writable" not in r.output


@pytest.mark.slow
def test_parallel_first_use_of_a_fresh_home(tmp_path: Path, image_path: Path, tiny_clip: Path) -> None:
    """8 composes at once on a fresh I2M_HOME: each opens the knowledge base and the run database first;
    all succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "I2M_EMBED_MODEL": str(tiny_clip), "I2M_HOME": str(tmp_path / "h")}
    # each opens the base (Chroma's first-time set-up of its folder, where the race was) and finds it empty
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "image2music.cli", "compose", str(image_path), "--replay", str(replay)]
            + ["--top-k", "1", "-o", str(tmp_path / f"run{i}"), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outcomes = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0] * 8, [err[-300:] for _, err in outcomes]
    assert all(json.loads(out)["status"] == "ok" for out, _ in outcomes)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_prompt_files_and_inputs_are_checked_before_the_run(tmp_path: Path, image_path: Path) -> None:
    """A FIFO (it would block forever), a binary file, a 300 MB file, a missing replay file: exit 2, one
    line, before any run starts."""
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    fifo = tmp_path / "fifo.md"
    os.mkfifo(fifo)
    binary = tmp_path / "bin.md"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 100)
    huge = tmp_path / "huge.md"
    with open(huge, "wb") as fh:
        fh.truncate(300 * 1024 * 1024)  # sparse: no disk used
    cases = {fifo: "not a regular file", binary: "not UTF-8", huge: "at most 256 kB"}
    for path, said in cases.items():
        r = CliRunner().invoke(
            main, ["compose", str(image_path), "--replay", str(replay), "--top-k", "0", "--prompt", f"compose={path}"]
        )
        assert r.exit_code == 2 and said in r.output, (path, r.output)
        assert "Traceback" not in r.output and "error:" in r.output.splitlines()[-1]
    r = CliRunner().invoke(main, ["compose", str(image_path), "--vlm-backend", "replay", "--top-k", "0"])
    assert r.exit_code == 2 and "needs a file" in r.output
    r = CliRunner().invoke(main, ["runs", "list", "--json"])
    assert json.loads(r.stdout) == []  # nothing started


def test_the_run_deadline_stops_a_node_that_is_still_running(tmp_path: Path, image_path: Path) -> None:
    """describe's model call would wait 600 s; I2M_RUN_DEADLINE_S=1: the run stops the call (it ends at once),
    waits for the run's graph thread, and only then ends failed with its record: nothing of the call is
    checkpointed or recorded (a run that waited for the node would have describe in its path), no thread of the
    run is left, and the run resumes. Nothing here is decided by the clock."""
    import threading

    from image2music.resume import resume_run

    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, replay_delay_s=600.0, run_deadline_s=1.0)
    res = compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None)
    rec = res.record
    assert rec["status"] == "failed" and "I2M_RUN_DEADLINE_S=1" in (rec["reason"] or "")
    assert f"runs resume {res.run_id}" in (rec["reason"] or "") and rec["path"] == []
    assert not [t for t in threading.enumerate() if t.name == f"i2m-run-{res.run_id}"]  # joined before the record
    assert not (tmp_path / "run" / "vlm_calls.jsonl").exists()
    done = resume_run(res.run_id, s, notify=lambda m: None, replay_delay_s=0.0, run_deadline_s=600.0)
    assert done.record["status"] == "ok" and done.record["path"][0] == "describe"


def test_formats_choose_the_outputs(tmp_path: Path, image_path: Path) -> None:
    """`--formats abc,mid`: only the music, its MIDI and run.json (no conversions, no report); a bad name is
    refused before the run."""
    replay = write_replay(tmp_path / "c.jsonl", CALLS)
    args = ["compose", str(image_path), "--replay", str(replay), "--top-k", "0", "-o", str(tmp_path / "o")]
    r = CliRunner().invoke(main, [*args, "--formats", "abc,mid", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert set(rec["files"]) == {"abc", "midi"}
    assert sorted(p.name for p in (tmp_path / "o").glob("music.*")) == ["music.abc", "music.mid"]
    assert not (tmp_path / "o" / "report.html").exists() and (tmp_path / "o" / "run.json").exists()
    r = CliRunner().invoke(main, [*args, "--formats", "abc,mp4"])
    assert r.exit_code == 2 and "unknown format(s) mp4" in r.output


def test_a_stopped_run_stops_before_its_record(tmp_path: Path, image_path: Path) -> None:
    """A batch's StopSignal arrives while describe's model is writing: the call ends at its next piece, the run's
    graph thread is joined, and only then is the record written (cancelled, resumable). No thread of the run is
    left to write anything afterwards, and the abandoned call is not in vlm_calls.jsonl."""
    import threading

    from image2music.runner import StopSignal

    stop = StopSignal()
    shown: list[str] = []

    def on_text(node: str, piece: str) -> None:
        shown.append(piece)
        stop.stop(KeyboardInterrupt())

    calls = [("describe", "A long description " * 50), *CALLS[1:]]
    s = load_settings(
        vlm_backend="replay", replay_file=write_replay(tmp_path / "c.jsonl", calls), top_k=0, replay_token_delay_s=0.01
    )
    with pytest.raises(KeyboardInterrupt):
        compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None, stop=stop, on_text=on_text)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["status"] == "cancelled" and rec["path"] == []
    assert not [t for t in threading.enumerate() if t.name == f"i2m-run-{rec['run_id']}" and t.is_alive()]
    assert 1 <= len(shown) < 100  # the call ended early, not after its 100 pieces
    assert not (tmp_path / "run" / "vlm_calls.jsonl").exists()


def test_a_multi_line_error_is_a_one_line_reason(tmp_path: Path, image_path: Path) -> None:
    from image2music.graph import nodes

    def broken(*a: object, **k: object) -> dict[str, object]:
        raise RuntimeError("first line\nsecond line\n\tthird")

    s = load_settings(vlm_backend="replay", replay_file=write_replay(tmp_path / "c.jsonl", CALLS), top_k=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nodes, "describe", broken)
        rec = compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None).record
    assert rec["status"] == "failed" and "\n" not in rec["reason"] and "first line second line third" in rec["reason"]


def test_a_resume_cleans_what_a_killed_run_left_and_tmpdir_stays_clean(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill -9 in the middle of a WAV render leaves a half-written `.i2m-tmp-music.wav.*.wav` and the renderer's
    scratch folder in the run folder (never in TMPDIR): the resume removes them; the user's files stay."""
    import tempfile

    from image2music.graph import nodes
    from image2music.resume import resume_run

    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    s = load_settings(vlm_backend="replay", replay_file=write_replay(tmp_path / "c.jsonl", CALLS), top_k=0)

    def killed(*a: object, **k: object) -> dict[str, object]:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(nodes, "explain", killed)
        compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None)
    run = tmp_path / "run"
    (run / ".i2m-tmp-music.wav.k2j4.wav").write_bytes(b"RIFF" + b"\0" * 3_000)
    (run / ".i2m-tmp-fluidsynth-abcd").mkdir()
    (run / ".i2m-tmp-fluidsynth-abcd" / "config").write_text("x")
    (run / "versions" / ".i2m-tmp-v1.abc.x1y2.tmp").write_text("half")
    (run / "my-notes.txt").write_text("the user's own file")
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    done = resume_run(run_id, s, notify=lambda m: None)
    assert done.record["status"] == "ok"
    assert not [p.name for p in run.rglob(".i2m-tmp-*")] and (run / "my-notes.txt").exists()
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("i2m-")]


def test_a_read_only_run_folder_is_a_refused_resume(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from image2music import resume
    from image2music.graph import nodes
    from image2music.tools.errors import InputError

    s = load_settings(vlm_backend="replay", replay_file=write_replay(tmp_path / "c.jsonl", CALLS), top_k=0)

    def killed(*a: object, **k: object) -> dict[str, object]:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(nodes, "explain", killed)
        compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None)
    run_id = json.loads((tmp_path / "run" / "run.json").read_text())["run_id"]
    real = os.access
    monkeypatch.setattr(resume.os, "access", lambda p, mode: False if Path(p) == tmp_path / "run" else real(p, mode))
    with pytest.raises(InputError, match="is read-only: make it writable"):
        resume.resume_run(run_id, s, notify=lambda m: None)
