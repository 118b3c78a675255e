"""The per-run HTML report: one self-contained page (inline images, score, piano roll and chart; no script,
no third-party code). Everything a model or a file name wrote is escaped; see ``CSP``."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from image2music.graph.state import FindingRecord, Version
from image2music.record import RunRecord
from image2music.tools.files import atomic_write_text
from image2music.tools.music.abcparse import Tune
from image2music.tools.music.metrics import METRIC_MEANINGS

MAX_INLINE_AUDIO = 8 * 1024 * 1024

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:1.5rem auto;padding:0 1rem;
color:#222;background:#fcfcfd;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem;overflow-wrap:anywhere}
h2{font-size:1.15rem;margin-top:1.8rem;border-bottom:1px solid #ddd}
.status-ok{color:#176f2c}.status-failed{color:#b3261e}.muted{color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}
figure{margin:0}figure img{max-width:100%;border-radius:6px;border:1px solid #ddd}
figcaption{font-size:.85rem;color:#555}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #e2e2e2;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f1fb}pre{background:#f6f6f8;padding:.8rem;overflow-x:auto;border-radius:6px;font-size:.85rem}
.score img,.roll svg,.chart svg{max-width:100%;height:auto;background:white;border-radius:6px}.chart svg{width:520px}
audio{width:100%}details{margin:.5rem 0}summary{cursor:pointer}
.files a{margin-right:.8rem;white-space:nowrap}.bad{color:#b3261e}.warn{color:#8a5a00}
"""

CSP = (
    "default-src 'none'; img-src data:; media-src data: 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
"""The report runs no script at all: only inline styles, data: images and the run's own audio."""

VOICE_COLOURS = ("#5b3fd1", "#d1603f", "#2f8f5b", "#b8860b", "#1f77b4", "#c2185b")


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _audio_src(wav: Path) -> str:
    """The audio inside the page as MP3, so the page plays alone (mailed, copied); ``music.wav`` stays beside
    it. Longer than MAX_INLINE_AUDIO or not encodable: a link to the WAV."""
    from image2music.tools.music.convert import ConversionError, mp3_bytes

    try:
        mp3 = mp3_bytes(wav)
    except ConversionError:
        return "music.wav"
    if len(mp3) > MAX_INLINE_AUDIO:
        return "music.wav"
    return "data:audio/mpeg;base64," + base64.b64encode(mp3).decode("ascii")


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _svg_image(path: Path) -> str:
    """The score as an image (an SVG inside <img> can run no script), sanitised once more."""
    from image2music.tools.music.safe_svg import sanitize_svg

    safe = sanitize_svg(path.read_text(encoding="utf-8", errors="replace"))
    if safe is None:
        return "<p class='muted'>(the score could not be shown)</p>"
    uri = "data:image/svg+xml;base64," + base64.b64encode(safe.encode("utf-8")).decode("ascii")
    return f"<img alt='the score' src='{uri}'>"


def piano_roll(abc: str, width: int = 1000, height: int = 220, tune: Tune | None = None) -> str:
    """An inline SVG piano roll of a tune (repeats played): time across, pitch up, one colour per voice; the
    run's reading of the tune when given (no second parse), else ``abc`` read with the checker's limits."""
    from image2music.tools.music.abcparse import read_tune
    from image2music.tools.music.convert import voice_notes

    tune = tune if tune is not None else read_tune(abc)
    voices = [(vid, voice_notes(v, tune.part_order)) for vid, v in tune.voices.items()]
    notes = [n for _vid, ns in voices for n in ns]
    if not notes:
        return ""
    end = float(max(s + d for s, d, _p in notes)) or 1.0
    lo, hi = min(p for *_x, p in notes), max(p for *_x, p in notes)
    span = max(hi - lo + 1, 12)
    row = (height - 20) / span
    rects = []
    for k, (vid, ns) in enumerate(voices):
        colour = VOICE_COLOURS[k % len(VOICE_COLOURS)]
        for s, d, p in ns:
            x = 40 + float(s) / end * (width - 50)
            w = max(1.0, float(d) / end * (width - 50) - 0.5)
            y = 10 + (hi - p) * row
            rects.append(
                f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{max(row - 0.5, 1):.1f}' fill='{colour}'>"
                f"<title>voice {_e(vid)}: MIDI {p}</title></rect>"
            )
    labels = "".join(
        f"<text x='2' y='{10 + (hi - p) * row + row:.1f}' font-size='10' fill='#666'>{_e(name)}</text>"
        for p, name in ((hi, _note_name(hi)), (lo, _note_name(lo)))
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='piano roll'><rect width='{width}' height='{height}' fill='white'/>{labels}{''.join(rects)}</svg>"
    )


def _note_name(p: int) -> str:
    return ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"][p % 12] + str(p // 12 - 1)


def score_chart(versions: list[Version], width: int = 520, height: int = 160) -> str:
    """An inline SVG of each valid version's score (1.0 = every target met) across the versions."""
    points = [(i, float(s)) for i, v in enumerate(versions) if v.get("ok") and (s := v.get("score")) is not None]
    if len(points) < 2:
        return ""
    n = max(len(versions) - 1, 1)

    def xy(i: int, s: float) -> tuple[float, float]:
        return 40 + i / n * (width - 60), 15 + (1 - s) * (height - 40)

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, s) for i, s in points))
    dots = "".join(
        f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='#5b3fd1'><title>v{i + 1}: {s}</title></circle>"
        f"<text x='{x - 8:.1f}' y='{height - 8}' font-size='11' fill='#444'>v{i + 1}</text>"
        for i, s in points
        for x, y in [xy(i, s)]
    )
    axis = (
        f"<line x1='40' y1='15' x2='40' y2='{height - 25}' stroke='#bbb'/>"
        f"<text x='4' y='19' font-size='11' fill='#444'>1.0</text>"
        f"<text x='4' y='{height - 25}' font-size='11' fill='#444'>0</text>"
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' role='img' aria-label='scores'>"
        f"<rect width='{width}' height='{height}' fill='white'/>{axis}"
        f"<polyline points='{line}' fill='none' stroke='#5b3fd1' stroke-width='2'/>{dots}</svg>"
    )


def _findings(items: list[FindingRecord], cls: str) -> str:
    from image2music.tools.music.findings import Finding

    return "".join(f"<li class='{cls}'>[{_e(f.get('code'))}] {_e(Finding.from_dict(f).render())}</li>" for f in items)


def _final_title(record: RunRecord) -> str | None:
    final = record.get("final")
    return final.get("title") if final else None


def _attention_note(record: RunRecord) -> str:
    from image2music.tools.vlm.backends import BACKENDS

    name = str((record.get("settings") or {}).get("vlm_backend") or "transformers")
    return (BACKENDS.get(name) or BACKENDS["transformers"]).no_map


def render_report(record: RunRecord, run_dir: Path, tune: Tune | None = None) -> str:
    run_dir = Path(run_dir)
    files = record.get("files") or {}
    status = str(record.get("status"))
    parts: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>i2m {_e(record.get('run_id'))}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(_final_title(record) or 'image2music run')}</h1>",
        f"<p class='muted'>run {_e(record.get('run_id'))} · <span class='status-{_e(status)}'>{_e(status)}</span>"
        + (f" · {_e(record.get('reason'))}" if record.get("reason") else "")
        + "</p>",
    ]
    images = []
    src = next(iter(sorted(run_dir.glob("input.*"))), None)
    if src is not None:
        mime = "image/png" if src.suffix == ".png" else "image/jpeg" if src.suffix in (".jpg", ".jpeg") else ""
        images.append(
            f"<figure><img alt='input image' src='{_e(_data_uri(src, mime))}'>"
            "<figcaption>the image</figcaption></figure>"
        )
    attention = record.get("attention") or {}
    for name, fname in (attention.get("files") or {}).items():
        p = run_dir / fname
        if p.exists():
            images.append(
                f"<figure><img alt='attention map {_e(name)}' src='{_data_uri(p, 'image/png')}'>"
                f"<figcaption>where the model looked: {_e(name)} ({_e(attention.get('method'))})</figcaption></figure>"
            )
    if images:
        parts.append("<div class='grid'>" + "".join(images) + "</div>")
    if not attention.get("files"):
        parts.append(f"<p class='muted'>{_e(_attention_note(record))}</p>")
    if record.get("description"):
        parts.append(f"<h2>Description</h2><p>{_e(record['description'])}</p>")
    parts.append("<h2>References</h2>")
    if record.get("references"):
        rows = "".join(
            f"<tr><td>{float(r['score']):.3f}</td><td>{_e(r['via'])}</td><td>{_e(r['caption'])}</td></tr>"
            for r in record["references"]
        )
        parts.append(
            f"<div class='scroll'><table><tr><th>score</th><th>via</th><th>caption</th></tr>{rows}</table></div>"
        )
    else:
        why = next((n for n in record.get("notes") or [] if "without examples" in str(n)), None)
        parts.append(f"<p class='muted'>{_e(why or 'No references: the run composed without examples.')}</p>")
    final = record.get("final")
    if final:
        parts.append("<h2>Music</h2>")
        wav = run_dir / "music.wav"
        if "wav" in files and wav.exists():
            parts.append(f"<audio controls preload='metadata' src='{_e(_audio_src(wav))}'></audio>")
        if "svg" in files and (run_dir / "music.svg").exists():
            parts.append(f"<div class='score'>{_svg_image(run_dir / 'music.svg')}</div>")
        roll = piano_roll(str(final["abc"]), tune=tune)
        if roll:
            parts.append(f"<h3>Piano roll</h3><div class='roll'>{roll}</div>")
        parts.append(f"<details><summary>ABC of version {_e(final['version'])}</summary><pre>{_e(final['abc'])}</pre>"
                     "</details>")  # fmt: skip
    links = [f"<a href='{_e(f)}'>{_e(k)}</a>" for k, f in files.items() if k != "report"]
    links += [f"<a href='{_e(f)}'>{_e(name)}</a>" for name, f in (attention.get("files") or {}).items()]
    links += ["<a href='run.json'>run.json</a>", "<a href='vlm_calls.jsonl'>vlm_calls.jsonl</a>"]
    links += [
        f"<a href='{_e(f)}'>{_e(Path(f).name)}</a>"
        for v in record.get("versions") or []
        for f in (v.get("files") or {}).values()
    ]
    parts.append("<h2>Files</h2><p class='files'>" + " ".join(links) + "</p>")
    versions = record.get("versions") or []
    if versions:
        head = "".join(
            f"<th>v{i + 1} {_e(v['node'])}{'' if v['ok'] else ' (invalid)'}"
            f"{' ★' if final and final['version'] == i + 1 else ''}</th>"
            for i, v in enumerate(versions)
        )
        body = []
        for name, meaning in METRIC_MEANINGS.items():
            cells = "".join(
                f"<td>{_e('-' if (m := (v.get('metrics') or {}).get(name)) is None else m)}</td>" for v in versions
            )
            body.append(f"<tr><td title='{_e(meaning)}'>{_e(name)}</td>{cells}</tr>")
        body.append(
            "<tr><td>warnings</td>" + "".join(f"<td>{len(v.get('warnings') or [])}</td>" for v in versions) + "</tr>"
        )
        body.append(
            "<tr><td title='1.0 = every target for this image met'>score</td>"
            + "".join(f"<td>{_e('-' if (s := v.get('score')) is None else s)}</td>" for v in versions)
            + "</tr>"
        )
        parts.append(
            "<h2>Versions and metrics</h2><div class='scroll'><table>"
            f"<tr><th>metric</th>{head}</tr>{''.join(body)}</table></div>"
        )
        chart = score_chart(versions)
        if chart:
            parts.append(f"<div class='chart'>{chart}</div>")
        attempts = []
        for i, v in enumerate(versions):
            findings = _findings(v.get("errors") or [], "bad") + _findings(v.get("warnings") or [], "warn")
            open_ = " open" if status != "ok" and not v.get("ok") else ""
            abc = v.get("abc") or "(no ABC was found in the answer)"
            attempts.append(
                f"<details{open_}><summary>v{i + 1} {_e(v['node'])}: {'valid' if v['ok'] else 'invalid'}, "
                f"{len(v.get('errors') or [])} error(s), {len(v.get('warnings') or [])} warning(s)</summary>"
                f"<ul>{findings}</ul><pre>{_e(abc)}</pre></details>"
            )
        parts.append("<h2>Every attempt</h2>" + "".join(attempts))
    decisions = [d for d in record.get("decisions") or [] if d.get("after") == "evaluate"]
    if decisions:
        items = "".join(
            f"<li><b>{_e(d['to'])}</b> because: {_e('; '.join(d.get('because') or []))}</li>" for d in decisions
        )
        parts.append(f"<h2>Decisions</h2><ol>{items}</ol>")
    if record.get("motivation"):
        parts.append(f"<h2>Motivation</h2><p>{_e(record['motivation'])}</p>")
    steps = " → ".join(
        f"{_e(n)} {t:.2f}s" for n, t in zip(record.get("path", []), record.get("timings", []), strict=False)
    )
    parts.append(f"<h2>Path</h2><p class='muted'>{steps}</p></body></html>")
    return "\n".join(parts)


def write_report(record: RunRecord, run_dir: Path, tune: Tune | None = None) -> Path:
    """Write ``report.html`` into the run dir (``tune``: the run's reading of the final music, if at hand)."""
    return atomic_write_text(Path(run_dir) / "report.html", render_report(record, run_dir, tune))
