"""Excerpts of stored tunes for prompts: valid ABC within a character budget, cut at bar lines.

An excerpt keeps the header (``X:`` to ``K:``, with ``Q:``, ``M:``, the voices and their programs) and the first
N whole bars of every voice, N as large as the budget allows; when not even one bar of every voice fits, the
last voices are left out (the first voice, usually the melody, stays). The cut is made at a bar line found by
the reader, never inside a token, and the result is read again: an excerpt always passes the checker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from image2music.tools.music.abcparse import Limits, join_field_continuations, read_tune

_VOICE_LINE = re.compile(r"^\s*(?:V:\s*(\S+)|\[V:\s*([^\]\s]+))")
_FIELD_LINE = re.compile(r"^\s*[A-Za-z+]:")


@dataclass(frozen=True)
class Excerpt:
    abc: str
    bars: int
    total_bars: int
    voices: int
    total_voices: int

    @property
    def whole(self) -> bool:
        return self.bars == self.total_bars and self.voices == self.total_voices

    def describe(self) -> str:
        """How much of the tune this is, for the prompt."""
        if not self.abc:
            return "its music is too dense to show within the example length"
        if self.whole:
            return "the whole tune"
        voices = f", {self.voices} of its {self.total_voices} voices" if self.voices < self.total_voices else ""
        return f"an excerpt: the first {self.bars} of {self.total_bars} bars{voices}"


def _voice_of(line: str) -> str | None:
    m = _VOICE_LINE.match(line)
    return None if m is None else (m.group(1) or m.group(2))


def _build(
    lines: list[str],
    header_end: int,
    starts: dict[str, list[tuple[int, int]]],
    first_voice: str,
    n: int,
    keep: set[str],
    declared: list[str],
) -> str:
    """Header and body lines of the voices in ``keep``, each cut before its bar ``n + 1`` (``starts``: line and
    column where each bar of each voice begins; ``declared``: the voices in the order the tune names them)."""
    out: list[str] = []
    last: dict[str, int] = {}  # each voice's last music line in ``out``
    for line in lines[: header_end + 1]:
        vid = _voice_of(line)
        if vid is None or vid in keep:
            out.append(line)
    cur = first_voice
    for idx in range(header_end + 1, len(lines)):
        line, line_no = lines[idx], idx + 1
        vid = _voice_of(line)
        if vid is not None:
            cur = vid
            if cur in keep and line.lstrip().startswith("V:"):
                out.append(line)
                continue
        if cur not in keep:
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("%") or (vid is None and _FIELD_LINE.match(stripped)):
            out.append(line)
            continue
        bars = starts.get(cur, [])
        if n < len(bars) and bars[n][0] <= line_no:
            if bars[n][0] == line_no:  # bar n+1 starts on this line: keep what is before its bar line
                head = line[: bars[n][1] - 1]
                k = head.rfind("|")
                head = head[: k + 1].rstrip() if k >= 0 else ""
                if head.strip(" |"):
                    last[cur] = len(out)
                    out.append(head)
            continue
        last[cur] = len(out)
        out.append(line)
    for i in last.values():  # a tie into a bar that is left out would tie to nothing
        out[i] = _untied_end(out[i])
    return _renumbered("\n".join(out).rstrip() + "\n", [v for v in declared if v in keep])


def _untied_end(line: str) -> str:
    """``line`` without the ties of its last note or chord (before its closing bar line and comment)."""
    m = re.match(r"^(.*?)((?:\[[^\]]*\]|[^\s|\]\[])[^\s|]*?)(\s*[|:\]]*\s*(?:%.*)?)$", line)
    if m is None or "-" not in m.group(2):
        return line
    return m.group(1) + m.group(2).replace("-", "") + m.group(3)


def _renumbered(text: str, kept: list[str]) -> str:
    """Numbered voices renumbered 1..k in order when some were left out (abc2midi merges a voice whose number
    is out of sequence: "V:4 out of sequence, treating as V:2")."""
    if not kept or not all(v.isdigit() for v in kept) or kept == [str(i) for i in range(1, len(kept) + 1)]:
        return text
    new = {old: str(i) for i, old in enumerate(kept, start=1)}
    return re.sub(
        r"(^\s*V:\s*|\[V:\s*)(\d+)(?=[\s\]]|$)", lambda m: m.group(1) + new.get(m.group(2), m.group(2)), text,
        flags=re.M,
    )  # fmt: skip


def excerpt(abc: str, max_chars: int, limits: Limits | None = None) -> Excerpt:
    """The largest bar-aligned excerpt of ``abc`` within ``max_chars`` (the whole tune when it fits)."""
    tune = read_tune(abc, limits)
    voices = list(tune.voices)
    total_bars = max((len(v.bars) for v in tune.voices.values()), default=0)
    if len(abc) <= max_chars or not tune.ok or not voices or total_bars == 0:
        return Excerpt(abc, total_bars, total_bars, len(voices), len(voices))
    lines = join_field_continuations(abc.split("\n"))
    header_end = next((i for i, ln in enumerate(lines) if re.match(r"^\s*K:", ln)), 0)
    starts = {vid: [(b.line, b.column) for b in v.bars] for vid, v in tune.voices.items()}
    declared = list(dict.fromkeys(v for v in map(_voice_of, lines) if v is not None))  # as written

    sounding = {vid: sorted({ev.bar for ev in v.events if ev.pitches}) for vid, v in tune.voices.items()}

    def playing(n: int) -> list[str]:
        """The voices with notes in the first ``n`` bars (a voice that only rests there is left out)."""
        return [vid for vid in voices if sounding[vid] and sounding[vid][0] <= n]

    def fits(n: int, k: int) -> str | None:
        keep = playing(n)[:k]
        if not keep:
            return None
        text = _build(lines, header_end, starts, voices[0], n, set(keep), declared)
        return text if len(text) <= max_chars else None

    first = min((b[0] for b in sounding.values() if b), default=1)
    k = len(voices)
    while k > 1 and fits(first, k) is None:
        k -= 1
    lo, best = first, fits(first, k)
    if best is None:
        return Excerpt("", 0, total_bars, 0, len(voices))
    hi = total_bars
    while lo < hi:  # the largest n that fits
        mid = (lo + hi + 1) // 2
        text = fits(mid, k)
        if text is None:
            hi = mid - 1
        else:
            lo, best = mid, text
    return Excerpt(best, lo, total_bars, len(playing(lo)[:k]), len(voices))
