"""The HTML report: self-contained, renders in headless Chromium without console errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import GOOD_ABC, fenced, write_replay

from image2music.graph.config import load_settings
from image2music.runner import compose_image

HOSTILE_ABC = GOOD_ABC.replace(
    "K:G",
    "%%beginsvg\n<script>document.title='PWNED'</script>\n%%endsvg\n"
    '%%<script>document.title="PWNED"</script>\n'
    "%%postscript <script>document.title='PWNED'</script>\n"
    "I:beginsvg\n<script>document.title='PWNED'</script>\nI:endsvg\n"
    "K:G",
).replace("T:Calm Harbour", "T:Calm Harbour <script>document.title='PWNED'</script>")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run(tmp_path: Path, image: Path, abc: str = GOOD_ABC) -> Path:
    replay = write_replay(
        tmp_path / "c.jsonl",
        [("describe", "Boats at dawn."), ("compose", fenced(abc)), ("explain", "Calm <b>G major</b>.")],
    )
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, refine_rounds=0)
    return compose_image(image, s, run_dir=tmp_path / "run").run_dir


@pytest.mark.slow
def test_report_is_self_contained(tmp_path: Path, image_path: Path) -> None:
    run_dir = _run(tmp_path, image_path)
    page = (run_dir / "report.html").read_text()
    assert "Calm Harbour" in page and "Boats at dawn." in page and "pitch_range" in page
    assert "Calm &lt;b&gt;G major&lt;/b&gt;." in page  # model text is escaped
    assert "data:image/png;base64," in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page
    if (run_dir / "music.wav").exists():  # the page plays alone: its audio is inside it, as MP3
        import base64
        import re

        import soundfile as sf

        src = re.search(r"<audio [^>]*src='data:audio/mpeg;base64,([^']+)'", page)
        assert src is not None
        mp3 = base64.b64decode(src[1])
        (tmp_path / "alone.mp3").write_bytes(mp3)
        info = sf.info(str(tmp_path / "alone.mp3"))
        wav = sf.info(str(run_dir / "music.wav"))
        assert abs(info.duration - wav.duration) < 0.2 and len(mp3) <= 1_000_000 * max(1.0, info.duration / 60)
        assert (info.channels, info.samplerate) == (1, 22050) and (wav.channels, wav.samplerate) == (2, 44100)
        # the preview sounds like the render: the same loudness envelope, second by second
        import numpy as np

        a, _ = sf.read(str(tmp_path / "alone.mp3"), dtype="float32", always_2d=True)
        b, _ = sf.read(str(run_dir / "music.wav"), dtype="float32", always_2d=True)
        secs = int(min(len(a) / 22050, len(b) / 44100))
        ea = [float(np.sqrt((a[i * 22050 : (i + 1) * 22050] ** 2).mean())) for i in range(secs)]
        eb = [float(np.sqrt((b[i * 44100 : (i + 1) * 44100].mean(axis=1) ** 2).mean())) for i in range(secs)]
        assert secs >= 2 and np.corrcoef(ea, eb)[0, 1] > 0.9
        assert (run_dir / "music.wav").exists()  # the WAV stays beside it


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: chromium)")
@pytest.mark.skipif(
    shutil.which("abcm2ps") is None or shutil.which("fluidsynth") is None,
    reason="abcm2ps and fluidsynth make the score and the audio",
)
@pytest.mark.slow
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
    assert "<audio" in dom.stdout and "data:image/svg+xml" in dom.stdout and "Calm Harbour" in dom.stdout
    # Chromium logs every console message (console.error, uncaught exceptions) as ":CONSOLE" lines
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == []
    for width in (1280, 390):  # a desktop and a phone
        shot = tmp_path / f"shot-{width}.png"
        r = subprocess.run(
            [*flags, f"--screenshot={shot}", f"--window-size={width},2400", url], capture_output=True, timeout=120
        )
        assert shot.exists() and shot.stat().st_size > 10_000
        assert not [ln for ln in r.stderr.decode(errors="replace").splitlines() if ":CONSOLE" in ln]
    for section in ("Piano roll", "Every attempt", "Files", "References", "No attention map"):
        assert section in dom.stdout, section


def _chromium_dom(tmp_path: Path, url: str) -> str:
    assert CHROMIUM is not None
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("abcm2ps") is None, reason="abcm2ps makes the score")
def test_model_written_markup_never_reaches_the_score_or_the_report(tmp_path: Path, image_path: Path) -> None:
    run_dir = _run(tmp_path, image_path, HOSTILE_ABC)
    svg = (run_dir / "music.svg").read_text()
    page = (run_dir / "report.html").read_text()
    assert "<script" not in svg.lower() and "<script" not in page.lower()
    assert "Content-Security-Policy" in page
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: chromium)")
    for url in ((run_dir / "report.html").as_uri(), (run_dir / "music.svg").as_uri()):
        dom = _chromium_dom(tmp_path, url)
        assert "PWNED" not in dom.split("<title>")[-1].split("</title>")[0] if "<title>" in dom else True
        assert "document.title" not in dom or "&lt;script&gt;" in dom


def test_input_copy_is_re_encoded_and_file_names_never_become_markup(tmp_path: Path, image_path: Path) -> None:
    hostile = tmp_path / "a.x' onerror='document.title=1'<!--.png"
    hostile.write_bytes(image_path.read_bytes())
    run_dir = _run(tmp_path, hostile)
    assert sorted(p.name for p in run_dir.glob("input*")) == ["input.png"]
    page = (run_dir / "report.html").read_text()
    assert "onerror" not in page.replace("onerror=&#x27;", "")


def test_a_failed_run_shows_every_attempt_and_its_findings(tmp_path: Path, image_path: Path) -> None:
    from conftest import BROKEN_ABC

    replay = write_replay(tmp_path / "c.jsonl", [("describe", "Boats."), ("compose", fenced(BROKEN_ABC))])
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0, max_parse_retries=0)
    run_dir = compose_image(image_path, s, run_dir=tmp_path / "run").run_dir
    page = (run_dir / "report.html").read_text()
    assert "status-failed" in page and "<details open><summary>v1 compose: invalid" in page
    assert "[syntax]" in page or "[unclosed]" in page
    assert "T:Broken" in page
