"""The per-run HTML report: one self-contained page (inline images and score, no third-party code)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from image2music.tools.files import atomic_write_text
from image2music.tools.music.metrics import METRIC_MEANINGS

MAX_INLINE_AUDIO = 8 * 1024 * 1024

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;
color:#222;background:#fcfcfd}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.status-ok{color:#176f2c}.status-failed{color:#b3261e}.muted{color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:1rem}
figure{margin:0}figure img{max-width:100%;border-radius:6px;border:1px solid #ddd}
figcaption{font-size:.85rem;color:#555}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #e2e2e2;padding:.3rem .5rem;text-align:left}
th{background:#f3f1fb}pre{background:#f6f6f8;padding:.8rem;overflow-x:auto;border-radius:6px;font-size:.85rem}
.score svg,.score img{max-width:100%;height:auto;background:white}audio{width:100%}
"""


CSP = (
    "default-src 'none'; img-src data:; media-src data: 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
"""The report runs no script at all: only inline styles, data: images and the run's own audio."""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


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


def render_report(record: dict[str, Any], run_dir: Path) -> str:
    run_dir = Path(run_dir)
    files = record.get("files") or {}
    parts: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>i2m {_e(record.get('run_id'))}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e((record.get('final') or {}).get('title') or 'image2music run')}</h1>",
        f"<p class='muted'>run {_e(record.get('run_id'))} · <span class='status-{_e(record.get('status'))}'>"
        f"{_e(record.get('status'))}</span>"
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
    for name, fname in ((record.get("attention") or {}).get("files") or {}).items():
        p = run_dir / fname
        if p.exists():
            images.append(
                f"<figure><img alt='attention map {_e(name)}' src='{_data_uri(p, 'image/png')}'>"
                f"<figcaption>where the model looked: {_e(name)} "
                f"({_e((record.get('attention') or {}).get('method'))})</figcaption></figure>"
            )
    if images:
        parts.append("<div class='grid'>" + "".join(images) + "</div>")
    if record.get("description"):
        parts.append(f"<h2>Description</h2><p>{_e(record['description'])}</p>")
    if record.get("references"):
        rows = "".join(
            f"<tr><td>{r['score']:.3f}</td><td>{_e(r['via'])}</td><td>{_e(r['caption'])}</td></tr>"
            for r in record["references"]
        )
        parts.append(f"<h2>References</h2><table><tr><th>score</th><th>via</th><th>caption</th></tr>{rows}</table>")
    final = record.get("final")
    if final:
        parts.append("<h2>Music</h2>")
        wav = run_dir / "music.wav"
        if "wav" in files and wav.exists():
            src_audio = _data_uri(wav, "audio/wav") if wav.stat().st_size <= MAX_INLINE_AUDIO else "music.wav"
            parts.append(f"<audio controls preload='metadata' src='{src_audio}'></audio>")
        if "svg" in files and (run_dir / "music.svg").exists():
            parts.append(f"<div class='score'>{_svg_image(run_dir / 'music.svg')}</div>")
        parts.append(f"<pre>{_e(final['abc'])}</pre>")
        links = [f"<a href='{_e(f)}'>{_e(k)}</a>" for k, f in files.items() if k in ("midi", "abc", "musicxml", "wav")]
        parts.append("<p>files: " + " · ".join(links) + "</p>")
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
                f"<td>{_e('-' if (v.get('metrics') or {}).get(name) is None else v['metrics'][name])}</td>"
                for v in versions
            )
            body.append(f"<tr><td title='{_e(meaning)}'>{_e(name)}</td>{cells}</tr>")
        body.append(
            "<tr><td>warnings</td>" + "".join(f"<td>{len(v.get('warnings') or [])}</td>" for v in versions) + "</tr>"
        )
        body.append(
            "<tr><td title='1.0 = every target for this image met'>score</td>"
            + "".join(f"<td>{_e('-' if v.get('score') is None else v['score'])}</td>" for v in versions)
            + "</tr>"
        )
        parts.append(f"<h2>Versions and metrics</h2><table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>")
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


def write_report(record: dict[str, Any], run_dir: Path) -> Path:
    return atomic_write_text(Path(run_dir) / "report.html", render_report(record, run_dir))
