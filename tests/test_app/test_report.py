"""The HTML report: self-contained, renders in headless Chromium without console errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import GOOD_ABC, fenced, write_replay
from image2music.graph.config import load_settings

from image2music.runner import compose_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run(tmp_path: Path, image: Path) -> Path:
    replay = write_replay(
        tmp_path / "c.jsonl",
        [("describe", "Boats at dawn."), ("compose", fenced(GOOD_ABC)), ("explain", "Calm <b>G major</b>.")],
    )
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, refine_rounds=0)
    return compose_image(image, s, run_dir=tmp_path / "run").run_dir


def test_report_is_self_contained(tmp_path: Path, image_path: Path) -> None:
    run_dir = _run(tmp_path, image_path)
    page = (run_dir / "report.html").read_text()
    assert "Calm Harbour" in page and "Boats at dawn." in page and "pitch_range" in page
    assert "Calm &lt;b&gt;G major&lt;/b&gt;." in page  # model text is escaped
    assert "data:image/png;base64," in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: chromium)")
@pytest.mark.skipif(
    shutil.which("abcm2ps") is None or shutil.which("fluidsynth") is None,
    reason="abcm2ps and fluidsynth make the score and the audio",
)
def test_report_renders_in_headless_chromium(tmp_path: Path, image_path: Path) -> None:
    run_dir = _run(tmp_path, image_path)
    assert CHROMIUM is not None
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = (run_dir / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<audio" in dom.stdout and "<svg" in dom.stdout and "Calm Harbour" in dom.stdout
    # Chromium logs every console message (console.error, uncaught exceptions) as ":CONSOLE" lines
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == []
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1000,1400", url], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
