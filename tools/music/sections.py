"""Sections of a model answer (``% [section]`` marks and voices) and the attention map of each."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_SECTION = re.compile(r"^[ \t]*%[ \t]*\[([^\]\n]{1,60})\]|^[ \t]*V:[ \t]*(\S+)|^[ \t]*\[V:[ \t]*([^\]\s]+)", re.M)


def abc_sections(text: str) -> list[tuple[str, int, int]]:
    """Parts of a model answer, as (name, start char, end char): each ``% [section]`` and each voice.

    A section runs to the next section mark (or the end of the text); a voice is named ``voice <id>``.
    """
    marks = []
    for m in _SECTION.finditer(text):
        name = m.group(1) or (f"voice {m.group(2) or m.group(3)}")
        marks.append((name.strip(), m.start()))
    out = []
    for i, (name, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else len(text)
        fence = text.find("```", start)
        if 0 <= fence < end:
            end = fence
        out.append((name, start, end))
    return out


def section_maps(result: Any) -> dict[str, dict[str, Any]]:
    """Attention grid per section/voice of a VLM answer that carries token attention (else empty)."""
    maps: dict[str, dict[str, Any]] = {}
    for name, start, end in abc_sections(result.text):
        grid = result.attention_map(start, end)
        if grid is not None and name not in maps:
            maps[name] = {"grid": np.round(grid, 6).tolist(), "shape": list(grid.shape), "method": "vlm-attention"}
    return maps
