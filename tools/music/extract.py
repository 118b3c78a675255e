"""Find the ABC tune in free model output.

Models wrap ABC in fenced blocks, put prose before and after, write several drafts, think aloud in
``<think>`` sections and decorate lines with markdown. The last complete tune wins; everything else is
that version's commentary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_THINK_RE = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE_RE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)
_FIELD_RE = re.compile(r"^([A-Za-z]):\s*(.*)$")
_HEADER_START = set("XTMLKQCV")
_WORD_TOKEN = re.compile(r"[(\[]?[A-Za-z][a-z'’-]*[.,;:!?)\]]*")
_MUSIC_LETTERS = set("abcdefgABCDEFGzZxXyHLMOPSTuv")


class NoABCError(ValueError):
    """The text holds no ABC tune."""


@dataclass(frozen=True)
class Extracted:
    """An ABC tune found in model output, and the prose around it."""

    abc: str
    commentary: str
    unclosed_fence: bool = False
    """The tune came after a fence that never closes (the answer may have been cut off)."""
    cleaned: tuple[tuple[str, str], ...] = ()
    """Model artefacts removed from the text, as (finding code, message): each becomes a warning."""


_SPECIAL_TOKEN_RE = re.compile(
    r"</s>|<s>|<\|[A-Za-z_]{2,30}\|>|\[(?:EOS|BOS|PAD|SEP|CLS|UNK)\]|</?(?:eos|bos|pad|unk|start_of_turn|end_of_turn)>",
)
_LINE_MARKER_RE = re.compile(r"^(\s*)(?:\d{1,4}[.):]|[-*+•])\s+(?=\S)")
_SPACED_LENGTH_RE = re.compile(r"([A-Ga-gzx][,']*|\])[ \t]+(\d{1,3}(?:/\d{0,3})?|/{1,3}\d{0,3})(?=[ \t|:\]]|$)")
_FIELDS_IN_A_LINE_RE = re.compile(r"(?<=\S)[ \t]+(?=[XTMLKQCV]:)")


def clean_model_artefacts(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Remove what language models leave in ABC and abc2midi plays through: end-of-sequence and other special
    tokens, line numbers or list markers before music lines, a length written as its own token (``C 2`` for
    ``C2``), several header fields on one line (a tune written as space-separated tokens). Each kind removed is
    reported once, as (finding code, message)."""
    notes: list[tuple[str, str]] = []
    found = sorted(set(_SPECIAL_TOKEN_RE.findall(text)))
    if found:
        text = _SPECIAL_TOKEN_RE.sub("", text)
        notes.append(("special-token", f"model tokens removed from the answer: {', '.join(found[:5])}"))
    out: list[str] = []
    markers = spaced = fields = 0
    in_body = False
    for line in text.split("\n"):
        stripped = line.strip()
        m = _LINE_MARKER_RE.match(line)
        if m and (_is_field(line[m.end() :]) or ("|" in line and _is_music(line[m.end() :]))):
            line = m.group(1) + line[m.end() :]
            markers += 1
            stripped = line.strip()
        if _FIELD_RE.match(stripped) and len(re.findall(r"(?:^|\s)[XTMLKQCV]:", stripped)) >= 2:
            parts = _FIELDS_IN_A_LINE_RE.split(stripped)
            if all(_FIELD_RE.match(p) for p in parts[:-1]):
                last = parts[-1]
                km = re.match(r"^(K:\s*\S+(?:\s+(?:maj|min|dor|mix|lyd|phr|loc|aeo|ion)\w*)?)\s+(.*)$", last)
                parts = [*parts[:-1], km.group(1), km.group(2)] if km and ("|" in km.group(2)) else parts
                out.extend(parts)
                fields += 1
                in_body = in_body or any(p.startswith("K:") for p in parts)
                continue
        if _FIELD_RE.match(stripped):
            in_body = in_body or stripped.startswith("K:")
        elif in_body and stripped and not stripped.startswith("%") and not _is_prose(stripped):
            new = _SPACED_LENGTH_RE.sub(r"\1\2", line)
            if new != line:
                spaced += 1
                line = new
        out.append(line)
    if markers:
        notes.append(("line-marker", f"line numbers or list markers removed before {markers} line(s) of the tune"))
    if fields:
        notes.append(("token-text", "header fields written on one line were put on lines of their own"))
    if spaced:
        notes.append(
            (
                "spaced-length",
                f"note lengths written apart from their notes joined ('C 2' read as 'C2') on {spaced} line(s)",
            )
        )
    return "\n".join(out), notes


def _clean_line(line: str) -> str:
    s = line.rstrip()
    # markdown decoration that models put around ABC lines
    s = re.sub(r"^\s*>\s?", "", s)
    s = re.sub(r"^\s*[-*]\s+(?=[A-Za-z]:)", "", s)
    s = re.sub(r"^\s*(\*\*|__)(.*?)(\*\*|__)\s*$", r"\2", s)
    s = re.sub(r"^\s*`([^`]*)`\s*$", r"\1", s)
    s = re.sub(r"^(\*\*|__)([A-Za-z]:)(\*\*|__)", r"\2", s)
    return s


def _is_field(line: str) -> bool:
    m = _FIELD_RE.match(line.strip())
    return m is not None


def _is_prose(line: str) -> bool:
    """Words, not notes: tokens that read as English words (letters a note line would not hold)."""
    s = line.strip()
    if not s or s.startswith("%"):
        return False
    s2 = re.sub(r'"[^"]*"', "", s)
    s2 = re.sub(r"![^!|\s]*!", "", s2)
    tokens = s2.split()
    if not tokens:
        return False
    wordlike = 0
    for tok in tokens:
        if _WORD_TOKEN.fullmatch(tok) and sum(1 for ch in tok if ch.isalpha() and ch not in _MUSIC_LETTERS) >= 2:
            wordlike += 1
    if "|" in s2:
        return wordlike >= 3 and wordlike * 2 >= len(tokens)
    return wordlike >= 1


def _is_music(line: str) -> bool:
    s = line.strip()
    if not s:
        return False
    if s.startswith("%"):
        return True
    if _is_field(s) or re.match(r"^\[[A-Za-z]:[^\]]*\]", s):
        return True
    if "|" in s and re.fullmatch(r"[|:\[\]0-9,\-\s\\]+", s):
        return True  # bar lines and repeat signs alone (`|:\` before a continued line)
    return not _is_prose(s) and bool(re.search(r"[A-Ga-gzZ]", s))


def _tunes_in(lines: list[str], trusted: bool) -> list[tuple[int, int]]:
    """Spans [start, end) of tunes in ``lines``. ``trusted`` (inside a fence) keeps every line."""
    spans: list[tuple[int, int]] = []
    i = 0
    n = len(lines)
    while i < n:
        s = lines[i].strip()
        m = _FIELD_RE.match(s)
        if not (m and m.group(1) in _HEADER_START and (m.group(1) == "X" or _header_run(lines, i))):
            i += 1
            continue
        start = i
        j = i + 1
        in_text = False
        while j < n:
            t = lines[j].strip()
            if re.match(r"^%%begin[a-z]*", t):
                in_text = True
            if in_text:  # a block inside the tune (%%begintext, %%beginps ... %%end...) belongs to it
                in_text = not re.match(r"^%%end[a-z]*", t)
                j += 1
                continue
            if _FIELD_RE.match(t) and t.startswith("X:"):
                break
            if not t:
                # a blank line ends a tune unless more music follows it
                k = j
                while k < n and not lines[k].strip():
                    k += 1
                if (
                    k < n
                    and (trusted or _is_music(lines[k]))
                    and not lines[k].strip().startswith("X:")
                    and _tune_has_key(lines[start:j])
                ):
                    j = k
                    continue
                break
            continued = lines[j - 1].split("%", 1)[0].rstrip().endswith("\\")  # `T:long \` + next line
            if not trusted and not continued and not _is_music(t):
                break
            j += 1
        spans.append((start, j))
        i = j
    return spans


def _header_run(lines: list[str], i: int) -> bool:
    """A tune without X: starts at a header line followed (soon) by K:."""
    for k in range(i, min(len(lines), i + 12)):
        s = lines[k].strip()
        if s.startswith("%"):
            continue  # comments and directives (`%%measurenb 1`) may stand between header lines
        m = _FIELD_RE.match(s)
        if not m:
            return False
        if m.group(1) == "K":
            return True
    return False


def _tune_has_key(lines: list[str]) -> bool:
    return any(re.match(r"^\s*K:", ln) for ln in lines)


def _complete(lines: list[str]) -> bool:
    has_k = False
    for ln in lines:
        s = ln.strip()
        if re.match(r"^K:", s):
            has_k = True
        elif has_k and s and not s.startswith("%") and not _is_field(s):
            return True
    return False


def extract_abc(text: str) -> Extracted:
    """Return the last complete tune in ``text`` and the remaining prose.

    Raises :class:`NoABCError` with a message a model can act on when there is no tune at all.
    """
    visible = _THINK_RE.sub("", text)
    if re.search(r"<think>", visible, re.I):  # unclosed think: nothing after it is an answer
        visible = visible[: re.search(r"<think>", visible, re.I).start()]  # type: ignore[union-attr]
    visible = re.sub(r"</think>", "", visible, flags=re.I)
    visible, cleaned = clean_model_artefacts(visible)

    candidates: list[tuple[int, int, list[str], bool]] = []  # (char start, char end, lines, complete)
    fenced_ranges: list[tuple[int, int]] = []
    for m in _FENCE_RE.finditer(visible):
        body = m.group(3)
        lines = [_clean_line(ln) for ln in body.split("\n")]
        spans = _tunes_in(lines, trusted=True)
        fenced_ranges.append((m.start(), m.end()))
        for a, b in spans:
            tune = lines[a:b]
            candidates.append((m.start(), m.end(), tune, _complete(tune)))
    # unfenced text between fences
    pos = 0
    segments: list[tuple[int, str]] = []
    for a, b in fenced_ranges:
        segments.append((pos, visible[pos:a]))
        pos = b
    segments.append((pos, visible[pos:]))
    for offset, seg in segments:
        raw_lines = seg.split("\n")
        lines = [_clean_line(ln) for ln in raw_lines]
        starts = []
        acc = 0
        for ln in raw_lines:
            starts.append(acc)
            acc += len(ln) + 1
        for a, b in _tunes_in(lines, trusted=False):
            tune = lines[a:b]
            if not _complete(tune) and not any(re.match(r"^\s*K:", t) for t in tune):
                continue
            end = starts[b - 1] + len(raw_lines[b - 1]) if b - 1 < len(raw_lines) else len(seg)
            candidates.append((offset + starts[a], offset + end, tune, _complete(tune)))
    if not candidates:
        raise NoABCError(
            "no ABC tune found in the answer: write the music in ABC notation, starting with X:1, "
            "then T:, M:, L:, Q:, K: header lines and the notes, inside a ```abc fenced block"
        )
    candidates.sort(key=lambda c: c[0])
    complete = [c for c in candidates if c[3]]
    chosen = (complete or candidates)[-1]
    start, end, tune_lines, _ = chosen
    while tune_lines and not tune_lines[-1].strip():
        tune_lines = tune_lines[:-1]
    abc = "\n".join(ln.rstrip() for ln in tune_lines).strip("\n") + "\n"
    commentary = (visible[:start] + visible[end:]).strip()
    commentary = re.sub(r"\n{3,}", "\n\n", commentary)
    last_fence_end = max((b for _a, b in fenced_ranges), default=0)
    opener = re.search(r"(?m)^[ \t]*(```+|~~~+)", visible[last_fence_end:])
    unclosed = opener is not None and start >= last_fence_end + opener.start()
    return Extracted(abc=abc, commentary=commentary, unclosed_fence=unclosed, cleaned=tuple(cleaned))
