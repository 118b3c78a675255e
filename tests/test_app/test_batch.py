"""image2music.batch: many images, one run each, results.jsonl; Ctrl-C stops them all, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, cli, ctrl_c_works, replay_run


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
    from image2music.resume import resume_run

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


def test_collect_images_takes_files_as_given_and_folders_sorted_flat(tmp_path: Path) -> None:
    """Unit: a folder gives its image files sorted, not recursively, by suffix in any case; a file given by name
    is kept whatever it is (the run refuses it with a reason); every path absolute and normalised."""
    from image2music.batch import collect_images

    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for name in ["b.PNG", "a.jpg", "c.txt", "sub/d.png", "e.webp"]:
        (d / name).write_bytes(b"x")
    loose = tmp_path / "notes.txt"
    loose.write_text("x")
    got = collect_images([d, tmp_path / "imgs" / ".." / "notes.txt"])
    assert got == [d / "a.jpg", d / "b.PNG", d / "e.webp", loose]
    assert all(p.is_absolute() and ".." not in p.parts for p in got)
