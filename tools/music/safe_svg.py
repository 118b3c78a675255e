"""Nothing a model writes becomes markup or code: ABC is cleaned before engraving and the SVG after it.

abcm2ps copies the body of ``%%beginsvg`` blocks (and other directives) into its SVG, so model-written ABC
could put ``<script>`` into music.svg and the report. Only layout directives from an allow-list reach
abcm2ps, and the SVG it writes is sanitised: no scripts, event handlers, foreign objects, external
references or entity declarations.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

ALLOWED_DIRECTIVES = frozenset(
    {
        "MIDI", "score", "staves", "scale", "pagewidth", "pageheight", "leftmargin", "rightmargin", "topmargin",
        "botmargin", "staffsep", "sysstaffsep", "measurenb", "barnumbers", "stretchlast", "stretchstaff",
        "landscape", "indent", "continueall", "linebreak", "propagate-accidentals", "abc-version", "abc-charset",
        "vskip", "newpage", "staffwidth", "notespacingfactor", "maxshrink",
    }
)  # fmt: skip
"""``%%`` directives passed to abcm2ps (layout only; none of them carries text or markup)."""

_BLOCK = re.compile(r"^\s*(?:%%|I:)\s*begin(\w+)", re.I)
_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK = "{http://www.w3.org/1999/xlink}href"
_FORBIDDEN = {"script", "foreignobject", "iframe", "object", "embed", "handler", "listener", "animate", "set"}


def engrave_input(abc: str) -> str:
    """The ABC abcm2ps gets: ``%%`` directives outside the allow-list, ``I:`` fields, inline ``[I:...]`` and
    every ``%%begin...``/``%%end...`` block removed."""
    out: list[str] = []
    block: str | None = None
    for line in abc.splitlines():
        s = line.strip()
        if block is not None:
            if re.match(rf"^(?:%%|I:)\s*end{block}\b", s, re.I):
                block = None
            continue
        m = _BLOCK.match(s)
        if m:
            block = m.group(1).lower()
            continue
        if s.startswith("%%"):
            name = re.split(r"[\s:]", s[2:], maxsplit=1)[0]
            if name in ALLOWED_DIRECTIVES:
                out.append(line)
            continue
        if re.match(r"^\s*I:", line):
            continue
        out.append(re.sub(r"\[I:[^\]]*\]", "", line))
    return "\n".join(out) + "\n"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _safe_url(value: str) -> bool:
    return value.strip().startswith("#")


def sanitize_svg(text: str) -> str | None:
    """A safe copy of an SVG document, or None when it cannot be read as XML."""
    text = re.sub(r"<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", "", text, flags=re.S | re.I)  # no DTD, no entities
    text = re.sub(r"<\?xml-stylesheet[^>]*>", "", text)
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError:
        return None
    if _local(root.tag) != "svg":
        return None
    for parent in list(root.iter()):
        for child in list(parent):
            if not isinstance(child.tag, str) or _local(child.tag) in _FORBIDDEN:
                parent.remove(child)
    for el in root.iter():
        for name in list(el.attrib):
            low = _local(name)
            value = el.attrib[name]
            if low.startswith("on") or (low in ("href", "src") or name == _XLINK) and not _safe_url(value):
                del el.attrib[name]
            elif "url(" in value.lower() and not re.fullmatch(r"[^()]*url\(\s*#[^)]*\)[^()]*", value):
                del el.attrib[name]
            elif "javascript:" in value.lower():
                del el.attrib[name]
        if _local(el.tag) == "style" and el.text:
            el.text = re.sub(r"@import[^;]*;?|url\((?!\s*#)[^)]*\)|expression\([^)]*\)", "", el.text, flags=re.I)
    ET.register_namespace("", _SVG_NS)
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    return ET.tostring(root, encoding="unicode")
