"""Differential testing against abc2midi (Debian ``abcmidi``) as the oracle for ABC -> MIDI note events.

Both renderings of a tune are reduced to a multiset of note events ``(onset, pitch)``, the onset in quarter
notes quantised to 1/12 beat. abc2midi runs as ``abc2midi FILE -o OUT -NGUI -NGRA -NFER`` on the tune with
``R:`` lines removed: no guitar-chord accompaniment, no grace notes, no fermata lengthening, no hornpipe swing;
trills and rolls are removed (abc2midi plays them as extra notes). Accidentals are not normalised: both sides
follow ABC 2.1 §11.3, whose default (``%%propagate-accidentals pitch``) carries an accidental to the end of the
bar in every octave, and both honour the directive when a tune sets it.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import mido

from image2music.tools.music.abcheader import _STEP

TOLERANCE = 1 / 24
"""Two onsets of the same pitch match when they are at most 1/24 quarter note apart: finer than any written
rhythm in the corpora (triplet eighths are 1/3 apart, ``L:1/32`` notes 1/8), coarser than abc2midi's slight
staggering of chord notes and a tick of rounding."""


@dataclass(frozen=True)
class Notes:
    """Note-on events of one rendering: pitch -> sorted onsets in quarter notes."""

    onsets: dict[int, list[float]]
    silenced: dict[int, list[float]] = field(default_factory=dict)
    """Notes written with velocity 0 (not sounding; not in ``onsets``): abc2midi's hairpins reaching 0."""

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.onsets.values())

    def with_silenced(self) -> Notes:
        """Every note written, the silenced ones included."""
        both = {p: sorted(self.onsets.get(p, []) + self.silenced.get(p, [])) for p in {*self.onsets, *self.silenced}}
        return Notes(both)

    def matched(self, other: Notes, tolerance: float = TOLERANCE) -> int:
        """Events of ``self`` paired one-to-one with events of ``other`` (same pitch, onsets within tolerance)."""
        total = 0
        for pitch, mine in self.onsets.items():
            theirs = other.onsets.get(pitch, [])
            i = j = 0
            while i < len(mine) and j < len(theirs):
                d = mine[i] - theirs[j]
                if abs(d) <= tolerance + 1e-9:
                    total += 1
                    i += 1
                    j += 1
                elif d < 0:
                    i += 1
                else:
                    j += 1
        return total


def midi_notes(data: bytes) -> Notes:
    """The note-on events of a MIDI file (drums excluded), onsets in quarter notes; apart, the silenced ones: a
    note-on of velocity 0 for a key that is not sounding starts a note at velocity 0 rather than ending one
    (abc2midi writes these when hairpins drive the velocity to 0)."""
    mid = mido.MidiFile(file=io.BytesIO(data))
    tpq = mid.ticks_per_beat
    out: dict[int, list[float]] = {}
    silent: dict[int, list[float]] = {}
    for track in mid.tracks:
        t = 0
        sounding: dict[tuple[int, int], int] = {}
        for msg in track:
            t += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel == 9:
                continue
            key = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                out.setdefault(msg.note, []).append(t / tpq)
                sounding[key] = sounding.get(key, 0) + 1
            elif sounding.get(key):
                sounding[key] -= 1
            elif msg.type == "note_on":
                silent.setdefault(msg.note, []).append(t / tpq)
    return Notes({p: sorted(v) for p, v in out.items()}, {p: sorted(v) for p, v in silent.items()})


_FIELD = re.compile(r"\s*[A-Za-z+]:")


def _strip_ornaments(line: str) -> str:
    """A music line without the ornaments abc2midi plays as extra notes (trills ``T``/``!trill!``, rolls
    ``~``); quoted text, inline fields and other ``!decorations!`` are kept."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "%":
            out.append(line[i:])
            break
        if c in '"!+' or (c == "[" and i + 2 < n and line[i + 1].isalpha() and line[i + 2] == ":"):
            close = {'"': '"', "!": "!", "+": "+", "[": "]"}[c]
            j = line.find(close, i + 1)
            if j < 0 and c in "!+":  # a lone `!` (an old line-break mark) or `+`: one character, not a decoration
                out.append(c)
                i += 1
                continue
            j = n - 1 if j < 0 else j
            token = line[i : j + 1]
            if token not in ("!trill!", "+trill+"):
                out.append(token)
            i = j + 1
            continue
        if c not in "~TR":  # roll, trill, and the roll `R` (abc2midi plays each as several notes)
            out.append(c)
        i += 1
    return "".join(out)


_PROTECTED = re.compile(r'("[^"]*"|![^!]*!|\[[A-Za-z]:[^\]]*\])')
"""What a music line holds besides music: quoted text, decorations, inline fields (split out, kept as is)."""

_SPACED_LENGTH = re.compile(r"(?<=[A-Ga-gz,'])[ \t]+(?=/|[1-9]\d*(?![\d(]))")  # `a 3(gfe)`: a misplaced tuplet
"""A note's length written after a space (``C 2``, folk-rnn's token text): abc2midi drops it ("Unrecognized
character"); ABC readers that take it (ours) play the length its writer meant."""


def _join_spaced_lengths(line: str) -> tuple[str, int]:
    """``line`` with every spaced length joined to its note, outside quoted text and decorations; and how many."""
    parts = _PROTECTED.split(line)
    joined = 0
    for k in range(0, len(parts), 2):  # even parts are music; odd ones the protected tokens
        parts[k], n = _SPACED_LENGTH.subn("", parts[k])
        joined += n
    return "".join(parts), joined


def spaced_lengths(abc: str) -> int:
    """How many note lengths of ``abc``'s music are written after a space."""
    found = 0

    def count(line: str) -> str:
        nonlocal found
        found += _join_spaced_lengths(line)[1]
        return line

    _music_lines(abc, count)
    return found


def oracle_input(abc: str) -> str:
    """The tune as abc2midi gets it: ``R:`` lines removed (abc2midi swings hornpipes), the ornaments it expands
    into extra notes (trills, rolls) removed from the music, since we play ornaments as written notes, and
    lengths written after a space joined to their notes (abc2midi would drop them; counted apart)."""
    out: list[str] = []
    in_body = False
    for ln in abc.splitlines(keepends=True):
        if re.match(r"\s*R:", ln) or re.match(r"\s*%%MIDI\s+(drone|temperament)", ln):
            continue  # hornpipe swing; a drone is accompaniment (like guitar chords), a temperament tuning
        if _FIELD.match(ln) or ln.lstrip().startswith("%"):
            in_body = in_body or ln.lstrip().startswith("K:")
            out.append(ln)
            if ln.lstrip().startswith("X:"):  # chord notes at one instant (abc2midi staggers them); abc2midi
                out.append("%%MIDI chordattack 0\n")  # obeys it in the tune header, not before X:
            continue
        out.append(_join_spaced_lengths(_strip_ornaments(ln))[0] if in_body else ln)
    if "%%MIDI chordattack 0\n" not in out:  # no X: line: on line 2, as before
        out.insert(min(1, len(out)), "%%MIDI chordattack 0\n")
    return "".join(out)


def abc2midi_notes(abc: str, timeout_s: float = 20.0) -> Notes | None:
    """abc2midi's note events for ``abc``, or None when it wrote no MIDI (it rejected the tune)."""
    return abc2midi_run(abc, timeout_s)[0]


def abc2midi_run(abc: str, timeout_s: float = 20.0) -> tuple[Notes | None, str]:
    """(abc2midi's note events or None, what it printed: its errors and warnings are on stdout)."""
    exe = shutil.which("abc2midi")
    if exe is None:
        raise FileNotFoundError("abc2midi is not installed (Debian package 'abcmidi')")
    with tempfile.TemporaryDirectory(prefix="i2m-oracle-") as d:
        src, dst = Path(d) / "t.abc", Path(d) / "t.mid"
        src.write_text(oracle_input(abc), encoding="utf-8")
        try:
            proc = subprocess.run(
                [exe, str(src), "-o", str(dst), "-NGUI", "-NGRA", "-NFER"],
                capture_output=True,
                timeout=timeout_s,
                cwd=d,
            )
        except subprocess.TimeoutExpired:
            return None, "timed out"
        said = proc.stdout.decode("utf-8", "replace")
        if not dst.exists():
            return None, said
        try:
            return midi_notes(dst.read_bytes()), said
        except (OSError, ValueError, EOFError):
            return None, said


DELIBERATE: dict[str, str] = {
    "broken-rhythm-unequal": "a broken rhythm between notes of different lengths (`f<a2`): ABC 2.1 dots the first "
    "and halves the second; abc2midi refuses it ('Cannot apply broken rhythm') and plays the plain lengths",
    "voices-out-of-order": "voices declared out of numeric order under %%score: abc2midi merges them ('out of "
    "sequence') and loses notes; we play every voice",
    "last-ending-repeat": "a section's last ending closed with `:|` (`|1 ... :|2 ... :|`): we end the section "
    "there, as its author means; abc2midi goes back once more",
    "nested-tuplets": "a tuplet inside a tuplet (`(7:8:8(3A/A/A/ A/A/A/A/A/`): we apply both, every note counting "
    "in each (as abcm2ps engraves it); abc2midi refuses the nesting ('nested tuples')",
    "chord-unison": "a unison inside a chord (`[cc]`, `[^g_a]`): we play the key once, as one key can sound; "
    "abc2midi strikes it twice on one channel",
    "glued-key-accidentals": "explicit accidentals glued to the key (`K:C^f^c`): we read them (ABC 2.1 §4.6); "
    "abc2midi refuses them ('Unknown mode') and plays the plain key",
    "accidental-before-decoration": "an accidental written before a decoration (`^!1!d`): we read it as the "
    "note's accidental; abc2midi drops it ('Malformed note')",
    "repeat-after-endings": "a `:|` with no `|:` after a section with numbered endings (`[1 ...:|[2 ...|] C D "
    "E F:|`): we repeat from the end of those endings (the new part), abc2midi from elsewhere (the start of the "
    "section before them, or it skips the repeat)",
    "lowercase-key-tonic": "a key written with a lowercase tonic (`[K: cmin]`): we read C minor, as its writer "
    "means; abc2midi ignores the field ('Ignoring string') and stays in the key before",
    "malformed-tie": "a tie abc2midi cannot place (`F3-|1-F2`: written twice, into an ending, before a rest): "
    "we hold the note as its writer means; abc2midi says 'Could not find note to be tied' or 'Bad tie' and plays "
    "other lengths, or (`B,6-|1 B,3 :|2 B,3`) holds it into the first ending only and strikes it again in the "
    "second, or (`| -[D4A]`, a tie written after the bar line) strikes it again",
    "oracle-double-bar-repeat": "abc2midi's own bug: a repeat start written `||:` after a section with numbered "
    "endings makes it skip the next section's first ending (`|:` is read right); we play what is written",
    "oracle-silenced-notes": "abc2midi's own bug: repeated hairpins (`!>(!`...) drive its velocity to 0 and it "
    "writes those notes silent (note-on velocity 0); the tune is identical once they are counted",
}
"""Where we differ from abc2midi on purpose; a tune that differs and shows one of these is counted apart."""


def deliberate_reasons(tune: object, oracle_said: str, abc: str = "") -> list[str]:
    """Every reason (keys of ``DELIBERATE``) the tune shows for rendering differently on purpose; each is a
    claim until removing its cause makes both renderings identical (``compare``)."""
    out: list[str] = []
    if "Cannot apply broken rhythm" in oracle_said:
        out.append("broken-rhythm-unequal")
    if "nested tuples" in oracle_said:
        out.append("nested-tuplets")
    if re.search(r"Unknown mode '[\^_=]", oracle_said):
        out.append("glued-key-accidentals")
    if "out of sequence" in oracle_said:
        out.append("voices-out-of-order")
    if re.search(r"Could not find note to be tied|Bad tie|Cannot find note before tie", oracle_said) or re.search(
        r"-\s*:?\|\s*\[?[1-9]|\|\s*\[?[1-9]?\s*-", abc
    ):  # a tie into numbered endings (abc2midi carries it into the first only) or written after the bar line
        # before its note (`| -[D4A]`: abc2midi strikes the note again), both silently
        out.append("malformed-tie")
    if re.search(r"Ignoring string '[a-g][#b]?(m|min|maj|dor|phr|lyd|mix|aeo|loc|ion)?' in K: field", oracle_said):
        out.append("lowercase-key-tonic")
    warned = [w.message for w in getattr(tune, "warnings", [])]
    if any("written before a decoration" in w for w in warned):
        out.append("accidental-before-decoration")
    if any("unison inside a chord" in w for w in warned):
        out.append("chord-unison")
    for voice in getattr(tune, "voices", {}).values():
        bars = voice.bars
        for i, b in enumerate(bars):
            last_of_ending = i + 1 == len(bars) or not bars[i + 1].passes
            if b.passes and b.end_repeat and last_of_ending and max(b.passes) >= 2:
                out.append("last-ending-repeat")
                break
        after_endings = False
        for i, b in enumerate(bars):
            if b.start_repeat:
                after_endings = False
            if b.end_repeat and after_endings:
                out.append("repeat-after-endings")
                break
            if b.passes and (i + 1 == len(bars) or not bars[i + 1].passes):
                after_endings = True
            elif b.end_repeat and not b.passes:
                after_endings = False
    if "||:" in abc:
        out.append("oracle-double-bar-repeat")
    return list(dict.fromkeys(out))


def _music_lines(abc: str, edit: Callable[[str], str]) -> str:
    """``abc`` with ``edit`` applied to each music line after the first K: (fields and comments kept)."""
    out, in_body = [], False
    for ln in abc.splitlines(keepends=True):
        if _FIELD.match(ln) or ln.lstrip().startswith("%"):
            in_body = in_body or ln.lstrip().startswith("K:")
            out.append(ln)
        else:
            out.append(edit(ln) if in_body else ln)
    return "".join(out)


def _outside_text(edit: Callable[[str], str]) -> Callable[[str], str]:
    """``edit`` applied to a line's music only: quoted text, decorations and inline fields are kept."""

    def apply(line: str) -> str:
        parts = _PROTECTED.split(line)
        return "".join(edit(part) if k % 2 == 0 else part for k, part in enumerate(parts))

    return apply


_NOTE = re.compile(r"([\^_=]*)([A-Ga-g])([,']*)[\d/]*")
"""A note of a chord, its length with it."""


def _chord_without_unisons(chord: re.Match[str]) -> str:
    seen: set[int] = set()

    def keep(note: re.Match[str]) -> str:
        acc, letter, octave = note.groups()
        pitch = _STEP[letter.upper()] + 12 * (letter.islower() + octave.count("'") - octave.count(","))
        pitch += acc.count("^") - acc.count("_")
        if pitch in seen:
            return ""
        seen.add(pitch)
        return note.group(0)

    return _NOTE.sub(keep, chord.group(0))  # a note's length goes with it


def _walk_endings(abc: str, rewrite: Callable[[str, int], str | None]) -> str:
    """``abc`` with bar-line tokens rewritten by ``rewrite(token, ending)`` (None keeps the token); ``ending`` is
    the highest pass of the numbered ending the token closes (0: none)."""
    ending = 0

    def edit(line: str) -> str:
        nonlocal ending
        pieces = re.split(r"(:\|\d[\d,-]*|\|\|\d[\d,-]*|\|:|:\||::|\[\d[\d,-]*|\|\d[\d,-]*|\|\]|\|\|)", line)
        for k in range(1, len(pieces), 2):
            tok = pieces[k]
            passes = [int(x) for x in re.findall(r"\d+", tok)]
            new = rewrite(tok, ending) if not passes else None
            if new is not None:
                pieces[k] = new
            if passes:
                ending = max(passes)
            elif tok in ("|:", ":|", "::", "|]", "||"):
                ending = 0
        return "".join(pieces)

    return _music_lines(abc, _outside_text(edit))


def _last_ending_closed_plainly(abc: str) -> str:
    """The ``:|`` that closes a later ending (pass 2 or more) written as a plain bar line."""
    return _walk_endings(abc, lambda tok, ending: "|" if tok == ":|" and ending >= 2 else None)


def _repeat_start_after_endings(abc: str) -> str:
    """The bar line that closes a later ending (``||`` or ``|]``) written as a repeat start: the repeat that
    follows starts there explicitly (where we start it)."""
    return _walk_endings(abc, lambda tok, ending: "|:" if tok in ("||", "|]") and ending >= 2 else None)


REMOVE_CAUSE: dict[str, Callable[[str], str]] = {
    "broken-rhythm-unequal": lambda abc: _music_lines(abc, _outside_text(lambda m: re.sub(r"[<>]", "", m))),
    "nested-tuplets": lambda abc: _music_lines(abc, _outside_text(lambda m: re.sub(r"\(\d+(:\d*){0,2}", "", m))),
    "glued-key-accidentals": lambda abc: re.sub(r"(?m)^(\s*K:\s*[A-G][b#]?\w*?)((?:[\^_=][a-gA-G])+)", r"\1", abc),
    "voices-out-of-order": lambda abc: re.sub(r"(?m)^%%(score|staves).*\n", "", abc),
    "accidental-before-decoration": lambda abc: _music_lines(abc, lambda m: re.sub(r"([\^_=]+)(![^!]*!)", r"\2\1", m)),
    "chord-unison": lambda abc: _music_lines(
        abc, _outside_text(lambda m: re.sub(r"\[[^\]:]*\]", _chord_without_unisons, m))
    ),
    "lowercase-key-tonic": lambda abc: re.sub(
        r"((?:^|\[)\s*K:\s*)([a-g])", lambda m: m.group(1) + m.group(2).upper(), abc, flags=re.M
    ),
    "malformed-tie": lambda abc: _music_lines(abc, _outside_text(lambda m: m.replace("-", ""))),
    "oracle-double-bar-repeat": lambda abc: _music_lines(abc, lambda m: m.replace("||:", "|:")),
    "last-ending-repeat": _last_ending_closed_plainly,
    "repeat-after-endings": _repeat_start_after_endings,
}
"""For each reason a tune may differ on purpose, the tune with that cause removed: a label holds only when both
readers then play the tune identically (else the tune is a miss)."""


MIDI_TOLERANCE = 1 / 8
"""MIDI -> ABC is judged against the original file with onsets matched within 1/8 quarter note: the rounding of
a performance (a file not on a grid) to thirty-second notes stays inside it."""


def f1(original: Notes, rendered: Notes, tolerance: float = MIDI_TOLERANCE) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``rendered`` against ``original`` (one-to-one per pitch within tolerance)."""
    m = original.matched(rendered, tolerance)
    if original.count == 0 and rendered.count == 0:
        return 1.0, 1.0, 1.0
    p = m / rendered.count if rendered.count else 0.0
    r = m / original.count if original.count else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def overlap(a: Notes, b: Notes) -> float:
    """Matched events over the larger count (1.0 = the same notes at the same times)."""
    n = max(a.count, b.count)
    return 1.0 if n == 0 else a.matched(b) / n


@dataclass
class Comparison:
    """One tune, both ways."""

    source: str
    oracle_plays: bool
    accepted: bool
    identical: bool = False
    overlap: float = 0.0
    error: str | None = None
    """An exception our side raised (never expected)."""
    first_error: str | None = None
    deliberate: str | None = None
    """Renders differently on purpose (a key of ``DELIBERATE``), verified: with that cause removed (or abc2midi's
    silenced notes counted) both readers play the tune identically; counted apart from the misses."""
    unverified: str | None = None
    """A reason the tune shows but that does not explain its difference (removing it leaves one): a miss."""
    spaced_lengths: int = 0
    """Lengths written after a space, joined to their notes for abc2midi (which drops them)."""


def compare(source: str, abc: str) -> Comparison:
    """Render ``abc`` with our reader and MIDI writer and with abc2midi; compare note events."""
    from image2music.tools.music.check import check_abc
    from image2music.tools.music.convert import midi_bytes

    theirs, said = abc2midi_run(abc)
    plays = theirs is not None and theirs.count > 0
    try:
        result = check_abc(abc)
        accepted = result.ok and result.tune is not None
        if not accepted:
            first = result.errors[0].render() if result.errors else "not accepted"
            return Comparison(source, plays, False, first_error=first)
        ours = midi_notes(midi_bytes(result.tune))  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - the differential run counts every exception; none is expected
        return Comparison(source, plays, False, error=f"{type(e).__name__}: {e}")
    spaced = spaced_lengths(abc)
    if theirs is None:
        return Comparison(source, plays, True, spaced_lengths=spaced)
    ov = overlap(ours, theirs)
    why = claimed = None
    if ov < 1.0 and theirs.silenced and overlap(ours, theirs.with_silenced()) == 1.0:
        why = "oracle-silenced-notes"
    elif ov < 1.0:
        reasons = deliberate_reasons(result.tune, said, abc)
        claimed = " + ".join(reasons) or None
        why = claimed if reasons and causes_explain(reasons, abc) else None
    return Comparison(
        source, plays, True, identical=ov == 1.0, overlap=ov, deliberate=why,
        unverified=claimed if why is None else None, spaced_lengths=spaced,
    )  # fmt: skip


def causes_explain(reasons: list[str], abc: str) -> bool:
    """Whether ``reasons`` are why ``abc`` renders differently: with their causes removed (``REMOVE_CAUSE``)
    both readers play the tune identically."""
    from image2music.tools.music.check import check_abc
    from image2music.tools.music.convert import midi_bytes

    fixed = abc
    for reason in reasons:
        fixed = REMOVE_CAUSE[reason](fixed)
    if fixed == abc:
        return False
    theirs = abc2midi_notes(fixed)
    result = check_abc(fixed)
    if theirs is None or not result.ok or result.tune is None:
        return False
    return overlap(midi_notes(midi_bytes(result.tune)), theirs) == 1.0


@dataclass
class Summary:
    """Figures of one source. ``both`` excludes the tunes that differ on purpose (``deliberate``, by reason)."""

    tunes: int
    oracle_plays: int
    accepted_of_played: int
    both: int
    identical: int
    mean_overlap: float
    exceptions: int
    deliberate: dict[str, int] = field(default_factory=dict)
    unverified: dict[str, int] = field(default_factory=dict)
    """Reasons claimed by tunes whose difference they do not explain (those tunes are misses)."""
    spaced: int = 0
    """Tunes with lengths written after a space (joined for abc2midi)."""

    @property
    def rendered(self) -> int:
        """Tunes rendered both ways, those that differ on purpose included."""
        return self.both + sum(self.deliberate.values())

    @property
    def raw_identical_rate(self) -> float:
        """Identical before the verified causes are set apart (the tunes that differ on purpose counted as misses)."""
        return self.identical / self.rendered if self.rendered else 1.0

    @property
    def acceptance(self) -> float:
        return self.accepted_of_played / self.oracle_plays if self.oracle_plays else 1.0

    @property
    def identical_rate(self) -> float:
        return self.identical / self.both if self.both else 1.0

    def render(self) -> str:
        apart = ", ".join(f"{k} {v}" for k, v in sorted(self.deliberate.items())) or "none"
        claimed = ", ".join(f"{k} {v}" for k, v in sorted(self.unverified.items())) or "none"
        return (
            f"{self.tunes} tunes; abc2midi plays {self.oracle_plays}; we accept {self.accepted_of_played} of those "
            f"({self.acceptance:.1%}); note-identical: before setting apart {self.identical}/{self.rendered} "
            f"({self.raw_identical_rate:.1%}), after {self.identical}/{self.both} rendered both ways "
            f"({self.identical_rate:.1%}), mean overlap {self.mean_overlap:.4f}; exceptions {self.exceptions}; "
            f"different on purpose, verified by removing the cause (counted apart): {apart}; claimed but not "
            f"verified (misses): {claimed}; spaced lengths joined for abc2midi: {self.spaced} tunes"
        )


def summarise(rows: Iterable[Comparison]) -> Summary:
    rows = list(rows)
    both = [r for r in rows if r.accepted and r.oracle_plays and r.deliberate is None]
    apart: dict[str, int] = {}
    claimed: dict[str, int] = {}
    for r in rows:
        if r.accepted and r.oracle_plays and r.deliberate is not None:
            apart[r.deliberate] = apart.get(r.deliberate, 0) + 1
        if r.accepted and r.oracle_plays and r.unverified is not None:
            claimed[r.unverified] = claimed.get(r.unverified, 0) + 1
    return Summary(
        tunes=len(rows),
        oracle_plays=sum(r.oracle_plays for r in rows),
        accepted_of_played=sum(r.accepted for r in rows if r.oracle_plays),
        both=len(both),
        identical=sum(r.identical for r in both),
        mean_overlap=sum(r.overlap for r in both) / len(both) if both else 1.0,
        exceptions=sum(r.error is not None for r in rows),
        deliberate=apart,
        unverified=claimed,
        spaced=sum(r.spaced_lengths > 0 for r in rows),
    )


def debian_sample_tunes() -> list[tuple[str, str]]:
    """The sample tunes the Debian ``abcmidi`` and ``abcm2ps`` packages ship, split per tune."""
    from image2music.tools.music.corpus import split_tunes

    out: list[tuple[str, str]] = []
    roots = [Path("/usr/share/doc/abcmidi"), Path("/usr/share/doc/abcm2ps"), Path("/usr/share/abcm2ps")]
    files = sorted({p for r in roots if r.is_dir() for p in r.rglob("*.abc")})
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        header, tunes = split_tunes(text)
        for n, tune in enumerate(tunes, start=1):
            abc = tune.strip() + "\n"
            if header:
                first, _, rest = abc.partition("\n")
                abc = f"{first}\n{header}\n{rest}"
            out.append((f"{f.name}#{n}", abc))
    return out


SHARED_CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
"""The development corpora beside a developer's checkout (absent in a user's clone)."""


def shared_corpus_tunes(root: Path = SHARED_CORPORA) -> dict[str, list[tuple[str, str]]]:
    """Tunes of ``root/abc_human`` per tunebook (the file-name prefix) and ``root/abc_model`` (split per tune),
    as {source: [(name, abc)]}; empty when the corpora are absent."""
    from image2music.tools.music.corpus import split_tunes

    out: dict[str, list[tuple[str, str]]] = {}
    human = root / "abc_human"
    for f in sorted(human.glob("*.abc")) if human.is_dir() else []:
        out.setdefault(f"human: {f.name.split('_', 1)[0]}", []).append((f.name, f.read_text(errors="replace")))
    model = root / "abc_model"
    for f in sorted(model.iterdir()) if model.is_dir() else []:
        header, tunes = split_tunes(f.read_text(errors="replace"))
        for n, tune in enumerate(tunes, start=1):
            out.setdefault(f"model: {f.name.split('_', 1)[0]}", []).append((f"{f.name}#{n}", tune.strip() + "\n"))
    return out
