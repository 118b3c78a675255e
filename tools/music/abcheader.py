"""The header fields of ABC as small pure functions: key (with clefs and clauses), meter, unit length, tempo,
and the passes of a numbered ending. Each returns a value or a message (a ``str``) the reader reports."""

from __future__ import annotations

import re
from fractions import Fraction

# --- key signatures -------------------------------------------------------------------------------------

_NATURAL_SHARPS = {"C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F": -1}
_MODE_OFFSET = {
    "maj": 0,
    "ion": 0,
    "min": -3,
    "m": -3,
    "aeo": -3,
    "mix": -1,
    "dor": -2,
    "phr": -4,
    "lyd": 1,
    "loc": -5,
}
_SHARP_ORDER = "FCGDAEB"
_FLAT_ORDER = "BEADGCF"
_KEY_RE = re.compile(r"^([A-Ga-g])([#b]?)\s*([A-Za-z]*)$")
_CLEFS = {"treble", "bass", "alto", "tenor", "perc", "none", "bass3", "alto1", "alto2", "treble-8", "treble+8"}
_STEP = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


_CLEF_RE = re.compile(
    r"^(treble|bass|alto|tenor|baritone|soprano|mezzo(?:soprano)?|perc(?:ussion)?|[CFG][1-5]?)([1-5])?([+-](?:8|15))?$",
    re.I,
)


def key_clauses(spec: str) -> tuple[str, int | None]:
    """Split a K: value into the key itself and its octave shift: clef names (``bass``, ``alto4``,
    ``treble-8``) and ``name=value`` clauses (``clef=``, ``middle=``, ``transpose=``, ``octave=``, ...) are
    removed; ``octave=N`` is returned. An empty key means the field only changed the clef (the key stays)."""
    tokens = spec.split("%", 1)[0].split()
    octave: int | None = None
    clef_shift = 0  # `treble-8` / `bass+8`: the music sounds an octave lower / higher (ABC 2.1, as abc2midi)
    kept: list[str] = []
    for n, tok in enumerate(tokens):
        if "=" in tok and not re.match(r"^=[A-Ga-g]$", tok):
            m = re.match(r"^octave=([+-]?\d)$", tok, re.I)
            if m:
                octave = int(m.group(1))
            m = re.match(r"^clef=\w*?([+-])8$", tok, re.I)
            if m:
                clef_shift = 1 if m.group(1) == "+" else -1
            continue
        short_key = n == 0 and len(tok) <= 2 and _KEY_RE.match(tok) is not None  # "C", "F", "Gm"
        if tok.lower() == "clef" or (_CLEF_RE.match(tok) and not short_key):
            m = re.search(r"([+-])8$", tok)
            if m:
                clef_shift = 1 if m.group(1) == "+" else -1
            continue
        kept.append(tok)
    if clef_shift:
        octave = (octave or 0) + clef_shift
    text = " ".join(kept)
    # explicit accidentals may be glued to the tonic: "C^f^c" -> "C ^f ^c"
    text = re.sub(r"(?<=[A-Za-z#])(?=(\^\^|\^|__|_|=)[A-Ga-g])", " ", text)
    return text, octave


def key_signature(spec: str) -> tuple[dict[str, int], str] | str:
    """Return ({letter: semitone shift}, normalised name) for a K: value, or an error message."""
    tokens = spec.split()
    if not tokens:
        return {}, "C"
    first = tokens[0]
    rest = tokens[1:]
    accs: dict[str, int] = {}
    name = "C"
    if first.lower() == "none" or first in ("HP", "Hp"):
        name = "none" if first.lower() == "none" else "HP"
        if first in ("HP", "Hp"):  # Highland pipes: F and C sharp, G natural (HP only prints no signature)
            accs = {"F": 1, "C": 1, "G": 0}
    elif first[0] in "^_=":
        rest = tokens
    else:
        # the mode may be glued ("Am", "Dmix") or separate ("A minor"); clef words follow
        m = _KEY_RE.match(first)
        mode_word = ""
        if m is None:
            return f"unknown key '{spec}': write a tonic A-G, optional # or b, and a mode, e.g. K:G, K:Am, K:D dorian"
        if (
            not m.group(3)
            and rest
            and rest[0].isalpha()
            and rest[0].lower() not in _CLEFS
            and "=" not in rest[0]
            and rest[0].lower() != "exp"
        ):
            mode_word = rest[0]
            rest = rest[1:]
        else:
            mode_word = m.group(3)
        tonic = m.group(1).upper()
        acc = m.group(2)
        mode = mode_word.lower()
        if mode in ("", "maj", "major", "ion", "ionian"):
            offset, mname = 0, ""
        elif mode == "m":
            offset, mname = -3, "m"
        else:
            key3 = mode[:3]
            if key3 not in _MODE_OFFSET or (len(mode) > 3 and not _full_mode_ok(mode)):
                return f"unknown mode '{mode_word}' in K:{spec}: use maj, min (m), dor, phr, lyd, mix, aeo, loc"
            offset = _MODE_OFFSET[key3]
            mname = {"min": "m", "aeo": "m"}.get(key3, key3)
        sharps = _NATURAL_SHARPS[tonic] + (7 if acc == "#" else -7 if acc == "b" else 0) + offset
        if abs(sharps) > 7:
            return f"key K:{spec} would need {abs(sharps)} {'sharps' if sharps > 0 else 'flats'}; use its enharmonic"
        if sharps > 0:
            accs = {c: 1 for c in _SHARP_ORDER[:sharps]}
        elif sharps < 0:
            accs = {c: -1 for c in _FLAT_ORDER[:-sharps]}
        name = f"{tonic}{acc}{mname}"
    for tok in rest:
        mm = re.match(r"^(\^\^|\^|__|_|=)([A-Ga-g])$", tok)
        if mm:
            shift = {"^^": 2, "^": 1, "__": -2, "_": -1, "=": 0}[mm.group(1)]
            accs[mm.group(2).upper()] = shift
    return accs, name


def _full_mode_ok(mode: str) -> bool:
    return mode in {
        "major",
        "minor",
        "ionian",
        "aeolian",
        "mixolydian",
        "dorian",
        "phrygian",
        "lydian",
        "locrian",
    }


# --- meter, length and tempo ----------------------------------------------------------------------------


class AbsurdValue(str):
    """A message for a value that is readable but impossible (an error, where an unreadable one only warns)."""


def parse_meter(text: str) -> tuple[int, int] | None | str:
    """Return (numerator, denominator), ``None`` for free meter, or an error message."""
    t = text.strip()
    if t in ("C", ""):
        return (4, 4) if t else None
    if t == "C|":
        return (2, 2)
    if t.lower() == "none":
        return None
    m = re.match(r"^\(?\s*([0-9+ ]+?)\s*\)?\s*/\s*([0-9]+)$", t)
    if not m:
        return f"unknown meter M:{text.strip()}: write it as a fraction such as 4/4, 6/8 or 3/4, or C, C|"
    try:
        num = sum(int(p) for p in m.group(1).replace(" ", "").split("+") if p)
    except ValueError:
        return f"unknown meter M:{text.strip()}"
    den = int(m.group(2))
    if den == 0 or num == 0:
        return AbsurdValue(f"impossible meter M:{text.strip()}: numerator and denominator must be positive")
    if num > 64 or den > 64:
        return AbsurdValue(f"meter M:{text.strip()} is out of range")
    return (num, den)


def parse_fraction(text: str) -> Fraction | str:
    m = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", text)
    if not m:
        if re.match(r"^\s*1\s*$", text):
            return Fraction(1)
        return f"cannot read '{text.strip()}' as a fraction such as 1/8"
    if int(m.group(2)) == 0:
        return f"impossible length {text.strip()}: division by zero"
    return Fraction(int(m.group(1)), int(m.group(2)))


def parse_tempo(text: str, unit: Fraction) -> float | str:
    """Quarter notes per minute from ``Q:1/4=96``, ``Q:"Allegro" 3/8=60`` or legacy ``Q:96`` (unit = L)."""
    t = re.sub(r'"[^"]*"', " ", text).strip()
    if not t:
        return 120.0
    m = re.search(r"((?:\d+/\d+\s*)+)=\s*(?:ca\.?\s*|c\.\s*|~\s*)?(\d+(?:\.\d+)?)", t)
    if m:
        beat = Fraction(0)
        for part in m.group(1).split():
            fr = parse_fraction(part)
            if isinstance(fr, str):
                return fr
            beat += fr
        bpm = float(m.group(2))
    else:
        m2 = re.match(r"^(?:C\s*=\s*)?(?:ca\.?\s*)?(\d+(?:\.\d+)?)$", t)
        if not m2:
            return f"cannot read tempo Q:{text.strip()}: write Q:1/4=96"
        beat = unit
        bpm = float(m2.group(1))
    qpm = bpm * float(beat) * 4.0
    if bpm <= 0 or bpm > 1000 or not 4 <= qpm <= 4000:  # MIDI holds 3.6 to 60,000,000 quarter notes a minute
        return AbsurdValue(f"tempo Q:{text.strip()} is out of range (1-1000 beats per minute)")
    return qpm


def ending_passes(spec: str) -> tuple[int, ...]:
    """The passes of an ending: ``1`` -> (1,), ``1,3`` -> (1, 3), ``1-3`` -> (1, 2, 3) (bounded)."""
    out: list[int] = []
    for part in spec.split(","):
        nums = [int(x[:3]) for x in part.split("-") if x.isdigit()] or [1]
        a, b = nums[0], nums[-1]  # "1-3" -> 1..3; a malformed "5-5-3" reads as 5..3 -> 5
        out.extend(range(a, min(max(a, b), a + 16) + 1))
    return tuple(sorted(set(out)))


MINOR_MODES = ("m", "min", "dor", "phr", "aeo", "loc")
"""Modes with a minor third above the tonic."""


def is_minor_key(key: str | None) -> bool | None:
    """Whether a key name (``Am``, ``Ddor``, ``Gmix``) is minor-like; None without a key."""
    if not key:
        return None
    m = re.match(r"^[A-G][#b]?(.*)$", key)
    return (m.group(1) if m else "").lower() in MINOR_MODES
