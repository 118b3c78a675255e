"""A small, fast, pure-Python ABC 2.1 reader built for checking model-written music.

It reads one tune into timed note events per voice, with every bar's length and location, and reports
located errors (what stops conversion) and warnings (music that converts but is doubtful). It is linear
in the text and enforces the guards in :class:`Limits` (sizes and counts, never seconds, so a verdict does
not depend on load) before allocating anything, so a hostile tune cannot make it hang.

Time is measured in whole notes (``Fraction``); pitches are MIDI numbers (middle C = 60 = ``C``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from image2music.tools.music.abcheader import (
    _STEP,
    AbsurdValue,
    ending_passes,
    key_clauses,
    key_signature,
    parse_fraction,
    parse_meter,
    parse_tempo,
)
from image2music.tools.music.findings import Finding


@dataclass(frozen=True)
class Limits:
    """Guards against runaway or hostile ABC; all configurable."""

    max_chars: int = 100_000
    max_notes: int = 20_000
    max_note_whole_notes: Fraction = Fraction(16)
    max_seconds: float = 1800.0
    max_voices: int = 32
    max_overlays: int = 256
    """Guards are counts, never seconds: a verdict must not depend on how busy the machine is."""


class GuardError(Exception):
    """Raised inside the reader when a guard trips; becomes an error finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


@dataclass
class Event:
    """A note, chord or rest. ``pitches`` is empty for a rest."""

    start: Fraction
    dur: Fraction
    pitches: list[int]
    bar: int
    ties: frozenset[int] = frozenset()
    """The pitches tied into the next note or chord (``C-``, ``[C-E]``, ``[CE]-``)."""
    line: int = 0
    column: int = 0


@dataclass
class Bar:
    """One bar of one voice, as written (repeats not expanded)."""

    number: int
    start: Fraction
    length: Fraction = Fraction(0)
    expected: Fraction | None = None
    meter_text: str = ""
    meter: tuple[int, int] | None = None
    line: int = 0
    column: int = 0
    begins_section: bool = False
    ends_section: bool = False
    start_repeat: bool = False
    end_repeat: bool = False
    ending: int | None = None
    """First pass number of the ending (``[1``, ``|2``) this bar belongs to, None outside endings."""
    passes: tuple[int, ...] = ()
    """Every pass the ending is played on (``[1,3`` -> (1, 3); ``[1-3`` -> (1, 2, 3))."""
    multirest: int = 0
    part: str | None = None
    """The part (``P:A`` in the body) this bar belongs to, None before the first."""
    loose_repeat: bool = False
    """The ``|:`` was written apart (``| :``, ``|!:``): it starts a repeat but, as abc2midi reads it, does not
    first repeat a section left open."""
    ties_in: frozenset[int] = frozenset()
    """Pitches tied into this bar by a tie written inside it, before its first note (``|1 -d4``): they hold the
    note played before this bar only when this bar is played (an ending's own tie, not the other ending's)."""


@dataclass
class Voice:
    id: str
    name: str | None = None
    program: int | None = None
    channel: int | None = None
    events: list[Event] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)

    @property
    def length(self) -> Fraction:
        return sum((b.length for b in self.bars), Fraction(0))


@dataclass
class Tune:
    """What the reader understood of one tune."""

    text: str
    title: str | None = None
    meter: tuple[int, int] | None = None
    meter_text: str | None = None
    unit: Fraction = Fraction(1, 8)
    key: str = "C"
    tempo_qpm: float = 120.0
    voices: dict[str, Voice] = field(default_factory=dict)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    part_order: list[str] = field(default_factory=list)
    """The parts in playing order from the header's ``P:`` (``P:AABB``, ``P:(AB)2C``), empty when none."""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def seconds_per_whole(self) -> float:
        return 240.0 / self.tempo_qpm

    @property
    def n_notes(self) -> int:
        return sum(1 for v in self.voices.values() for e in v.events if e.pitches)


# --- the reader -----------------------------------------------------------------------------------------

_FIELD_RE = re.compile(r"^([A-Za-z+]):(.*)$")
_NOTE_RE = re.compile(r"(\^\^|\^|__|_|=)?(?:(?<=[\^_=])\d*/?\d*)?([A-Ga-g])([,']*)")
"""A note: accidental (a microtonal one such as ``^/`` or ``_3/4`` is played as its nearest semitone),
letter, octave marks."""
_LEN_RE = re.compile(r"(\d*)(/*)(\d*)")
_BAR_CHARS = "|:"
_DECORATION_LETTERS = set("HIJKLMNOPQRSTUVWhijklmnopqrstuvw.~")


def _accidental(m: re.Match[str]) -> str | None:
    """The accidental of a note match: ``micro`` when a fraction follows the sign (``^/``, ``_3/4``)."""
    acc = m.group(1)
    return "micro" if acc and m.end(1) != m.start(2) else acc


_ACC_THEN_DECORATION_RE = re.compile(r"(\^\^|\^|__|_|=)((?:![^!\s|]*!)+)")


@dataclass
class _VoiceState:
    voice: Voice
    meter: tuple[int, int] | None
    meter_text: str
    unit: Fraction
    key_accs: dict[str, int]
    octave: int = 0
    """Octave shift of the voice's pitches (``octave=`` in K: or V:)."""
    transpose: int = 0
    """Semitones the voice is played up or down (``%%MIDI transpose N``, as abc2midi plays it)."""
    time: Fraction = Fraction(0)
    bar: Bar | None = None
    bar_accs: dict[tuple[str, int], int] = field(default_factory=dict)
    overlay: bool = False
    overlay_time: Fraction = Fraction(0)
    slurs: list[tuple[int, int]] = field(default_factory=list)
    tuplet: tuple[Fraction, int, int, int] | None = None  # factor, notes left, line, col
    outer_tuplets: list[tuple[Fraction, int, int, int]] = field(default_factory=list)
    """Tuplets a nested one started inside (``(7:8:8(3A/A/A/ A/A/...``); each note counts in all of them."""
    broken_next: Fraction | None = None
    last_event: Event | None = None
    last_letters: dict[tuple[str, int], int] = field(default_factory=dict)
    """(letter, written octave) -> MIDI pitch of the last note or chord."""
    tie_carry: dict[tuple[str, int], int] = field(default_factory=dict)
    """After a tie: the pitch each tied letter keeps in the next note (``_A4-|A4`` holds A flat over the bar
    line, as abc2midi plays it and engravers write it)."""
    pending_begin: bool = True
    pending_repeat: bool = False
    pending_loose: bool = False
    pending_ending: tuple[int, ...] | None = None
    in_ending: tuple[int, ...] | None = None
    pending_ties_in: frozenset[int] = frozenset()


class _Reader:
    def __init__(self, text: str, limits: Limits) -> None:
        self.text = text
        self.limits = limits
        self.tune = Tune(text=text)
        self.states: dict[str, _VoiceState] = {}
        self.cur: _VoiceState | None = None
        self.n_overlays = 0
        self.n_notes = 0
        self.default_program: int | None = None
        self.default_transpose = 0
        """``%%MIDI transpose N`` before any voice: semitones every voice is played up (or down)."""
        self.header_done = False
        self.voice_decls: dict[str, tuple[str | None, str]] = {}
        self.key_accs: dict[str, int] = {}
        self.meter_seen = False
        self.unit_seen = False
        self.key_seen = False
        self.line_no = 0
        self.propagate = "pitch"
        self.current_part: str | None = None
        self.broken_ratio = (3, 1)
        self.last_decl: str | None = None
        self.body_tempo_seen = False
        self.decl_programs: dict[str, int] = {}
        self.octave = 0
        self.voice_octaves: dict[str, int] = {}
        self.in_text_block = False

    # -- reporting ---------------------------------------------------------------------------------------
    def error(self, msg: str, col: int | None = None, line: int | None = None, code: str = "syntax") -> None:
        self.tune.errors.append(self._finding(msg, col, line, code))

    def warn(self, msg: str, col: int | None = None, line: int | None = None, code: str = "cosmetic") -> None:
        self.tune.warnings.append(self._finding(msg, col, line, code))

    def _finding(self, msg: str, col: int | None, line: int | None, code: str = "guard") -> Finding:
        st = self.cur
        bar = st.bar.number if st is not None and st.bar is not None else None
        voice = st.voice.id if st is not None and (len(self.states) > 1 or self.voice_decls) else None
        return Finding(
            message=msg, line=line if line is not None else self.line_no, column=col, bar=bar, voice=voice, code=code
        )

    # -- header fields -----------------------------------------------------------------------------------
    def header_field(self, key: str, value: str, col: int) -> None:
        value = value.strip()
        self.tune.headers.setdefault(key, []).append(value)
        if key == "M":
            self.meter_seen = True
            usable, met = self.meter_of(value, col)
            if usable:
                self.tune.meter = met
                self.tune.meter_text = value
                if self.cur is not None:
                    self.cur.meter, self.cur.meter_text = met, value
        elif key == "L":
            self.unit_seen = True
            fr = parse_fraction(value)
            if isinstance(fr, str):
                self.error(f"L:{value}: {fr}", col, code="bad-length")
            elif fr <= 0 or fr > 4 or fr < Fraction(1, 512):
                self.error(f"impossible unit note length L:{value}", col, code="bad-length")
            else:
                self.tune.unit = fr
                if self.cur is not None:
                    self.cur.unit = fr
        elif key == "Q":
            q = parse_tempo(value, self.tune.unit)
            if isinstance(q, AbsurdValue):
                self.error(q, col, code="tempo")
            elif isinstance(q, str):
                self.warn(f"{q}; the default tempo is used", col, code="tempo")
            elif not self.header_done or not self.body_tempo_seen:
                # one tempo per MIDI file: the header's, or the first Q: of the body that overrides it
                self.tune.tempo_qpm = q
                self.body_tempo_seen = self.header_done
        elif key == "K":
            self.key_seen = True
            key_text, octave = key_clauses(value)
            # a K: after the header's but before any voice has begun (`K:D` then `K:Dmix`) is the key every
            # voice starts in (before, it was lost and the tune played in the header's key)
            starts = not self.header_done or self.cur is None
            if octave is not None:
                if starts:
                    self.octave = octave
                if self.cur is not None:
                    self.cur.octave = octave
            if not key_text:
                return  # only a clef or clauses: the key stays
            ks = key_signature(key_text)
            if isinstance(ks, str):
                self.error(ks, col, code="unknown-key")
            else:
                accs, name = ks
                if not self.header_done:
                    self.tune.key = name
                if starts:
                    self.key_accs = accs
                if self.cur is not None:
                    self.cur.key_accs = accs
        elif key == "V":
            self.voice_field(value)

    def meter_of(self, value: str, col: int) -> tuple[bool, tuple[int, int] | None]:
        """(usable, meter) of an M: field: an unreadable one is free meter with a warning; an impossible one
        is an error (not usable)."""
        met = parse_meter(value)
        if not isinstance(met, str):
            return True, met
        if isinstance(met, AbsurdValue):
            self.error(met, col, code="unknown-meter")
            return False, None
        first = parse_meter(value.split()[0]) if value.split() else met
        if not isinstance(first, str):
            self.warn(f"M:{value.strip()} read as M:{value.split()[0]}", col, code="unknown-meter")
            return True, first
        self.warn(f"{met}; read as free meter, bar lengths are not checked", col, code="unknown-meter")
        return True, None

    def voice_field(self, value: str) -> None:
        parts = value.split(None, 1)
        if not parts:
            self.error("V: needs a voice id, e.g. V:1 or V:RH")
            return
        vid = parts[0]
        rest = parts[1] if len(parts) > 1 else ""
        m = re.search(r'(?:name|nm)\s*=\s*"([^"]*)"', rest) or re.search(r"(?:name|nm)\s*=\s*(\S+)", rest)
        name = m.group(1) if m else None
        om = re.search(r"(?:^|\s)octave\s*=\s*([+-]?\d)", rest)
        if om:
            self.voice_octaves[vid] = int(om.group(1))
        if not self.header_done:
            self.voice_decls[vid] = (name, rest)
            self.last_decl = vid
        else:
            self.switch_voice(vid, name)

    # -- voices ------------------------------------------------------------------------------------------
    def switch_voice(self, vid: str, name: str | None = None) -> None:
        if vid not in self.states and len(self.states) >= self.limits.max_voices:
            raise GuardError(self._finding(f"more than {self.limits.max_voices} voices", None, None))
        if vid not in self.states:
            if (
                self.cur is not None
                and self.cur.voice.id == "1"
                and not self.cur.voice.events
                and "1" not in self.voice_decls
                and len(self.states) == 1
            ):
                # the implicit default voice held nothing: drop it
                del self.states["1"]
                del self.tune.voices["1"]
            v = Voice(id=vid, name=name or (self.voice_decls.get(vid, (None, ""))[0]))
            v.program = self.decl_programs.get(vid, self.default_program)
            st = _VoiceState(
                voice=v,
                meter=self.tune.meter,
                meter_text=self.tune.meter_text or "",
                unit=self.tune.unit,
                key_accs=dict(self.key_accs),
                octave=self.voice_octaves.get(vid, self.octave),
                transpose=self.default_transpose,
            )
            self.states[vid] = st
            self.tune.voices[vid] = v
        self.cur = self.states[vid]
        if vid in self.voice_octaves:
            self.cur.octave = self.voice_octaves[vid]
        if name and not self.cur.voice.name:
            self.cur.voice.name = name

    def ensure_voice(self) -> _VoiceState:
        if self.cur is None:
            first = next(iter(self.voice_decls), "1")
            self.switch_voice(first)
        assert self.cur is not None
        return self.cur

    # -- body --------------------------------------------------------------------------------------------
    def open_bar(self, st: _VoiceState, col: int) -> Bar:
        if st.bar is None:
            expected = None
            if st.meter is not None:
                expected = Fraction(st.meter[0], st.meter[1])
            b = Bar(
                number=len(st.voice.bars) + 1,
                start=st.time,
                expected=expected,
                meter_text=st.meter_text,
                meter=st.meter,
                line=self.line_no,
                column=col,
                begins_section=st.pending_begin,
                start_repeat=st.pending_repeat,
                part=self.current_part,
                loose_repeat=st.pending_loose,
            )
            if st.pending_ending is not None:
                st.in_ending = st.pending_ending
                st.pending_ending = None
            b.passes = st.in_ending or ()
            b.ending = b.passes[0] if b.passes else None
            st.pending_begin = False
            st.pending_repeat = False
            st.pending_loose = False
            b.ties_in, st.pending_ties_in = st.pending_ties_in, frozenset()
            st.voice.bars.append(b)
            st.bar = b
        return st.bar

    def close_bar(self, st: _VoiceState, token: str, col: int) -> None:
        b = st.bar
        ends_section = any(s in token for s in (":", "||", "|]", "[|"))
        if b is not None:
            if st.overlay:
                st.time = max(st.time, st.overlay_time)
                st.overlay = False
            b.ends_section = ends_section
            b.end_repeat = token.startswith(":") or ":|" in token
            st.bar = None
            st.bar_accs = {}
            if st.tuplet is not None and st.tuplet[1] > 0:
                self.warn(
                    f"tuplet started at line {st.tuplet[2]}, col {st.tuplet[3]} has "
                    f"{st.tuplet[1]} note(s) missing before the bar line",
                    col,
                )
                st.tuplet = None
                st.outer_tuplets = []
            if b.ends_section or b.end_repeat:
                st.in_ending = None
        else:
            # a bar line with no music since the previous one: carry its meaning to the next bar
            if st.voice.bars and ends_section:
                st.voice.bars[-1].ends_section = True
                st.in_ending = None  # an ending stops at any section line (`| |:` ends `|2 ...` too)
                if token.startswith(":") or ":|" in token:
                    st.voice.bars[-1].end_repeat = True
        if ends_section or not st.voice.bars:
            st.pending_begin = True
        if token.endswith(":") or "|:" in token:
            st.pending_repeat = True
            st.pending_begin = True

    def add_event(
        self, st: _VoiceState, dur: Fraction, pitches: list[int], col: int, ties: frozenset[int] = frozenset()
    ) -> Event:
        if st.tuplet is not None:
            factor, left, tl, tc = st.tuplet
            dur = dur * factor
            st.tuplet = (factor, left - 1, tl, tc) if left > 1 else None
            outer = []
            for f2, l2, a2, b2 in st.outer_tuplets:
                dur = dur * f2
                if l2 > 1:
                    outer.append((f2, l2 - 1, a2, b2))
            st.outer_tuplets = outer
            if st.tuplet is None and st.outer_tuplets:
                st.tuplet = st.outer_tuplets.pop()
        if dur > self.limits.max_note_whole_notes:
            raise GuardError(
                self._finding(
                    f"a note lasts {_fmt_frac(dur / st.unit)} units of L:{st.unit}, longer than the limit of "
                    f"{self.limits.max_note_whole_notes} whole notes; write shorter notes",
                    col,
                    None,
                )
            )
        if pitches:
            self.n_notes += 1
            if self.n_notes > self.limits.max_notes:
                raise GuardError(
                    self._finding(f"more than {self.limits.max_notes} notes; the tune is too long", col, None)
                )
        bar = self.open_bar(st, col)
        start = st.overlay_time if st.overlay else st.time
        ev = Event(start=start, dur=dur, pitches=pitches, bar=bar.number, ties=ties, line=self.line_no, column=col)
        st.voice.events.append(ev)
        if st.overlay:
            st.overlay_time += dur
        else:
            st.time += dur
            bar.length += dur
            if float(st.time) * self.tune.seconds_per_whole > self.limits.max_seconds:
                raise GuardError(
                    self._finding(
                        f"the music lasts more than {self.limits.max_seconds:g} s; make it shorter", col, None
                    )
                )
        st.last_event = ev
        return ev

    def apply_broken(self, st: _VoiceState, dur: Fraction) -> Fraction:
        if st.broken_next is not None:
            dur = dur * st.broken_next
            st.broken_next = None
        return dur

    def read_length(self, s: str, i: int, col: int) -> tuple[Fraction | None, int]:
        m = _LEN_RE.match(s, i)
        assert m is not None
        digits, slashes, digits2 = m.group(1), m.group(2), m.group(3)
        if len(digits) > 4 or len(digits2) > 4 or len(slashes) > 6:
            raise GuardError(
                self._finding(
                    f"note length '{m.group(0)}' is out of range; write lengths such as 2, 3/2 or /4", col, None
                )
            )
        num = int(digits) if digits else 1
        if slashes:
            if digits2:
                den = int(digits2) * (2 ** (len(slashes) - 1))
            else:
                den = 2 ** len(slashes)
        else:
            den = 1
            if digits2:
                num = int(digits2)
        if den == 0 or num == 0:
            self.error(f"impossible note length '{m.group(0)}' (zero)", col)
            return None, m.end()
        return Fraction(num, den), m.end()

    def pitch(self, st: _VoiceState, acc: str | None, letter: str, octs: str) -> int:
        base = 60 + _STEP[letter.upper()] + (12 if letter.islower() else 0)
        base += 12 * octs.count("'") - 12 * octs.count(",")
        held = st.tie_carry.get((letter.upper(), base)) if acc is None else None
        if held is not None:  # the end of a tie with no accidental of its own: the tied note goes on sounding
            self._remember(st, letter, base, held)
            return held
        p = self._pitch(st, acc, letter, base)
        self._remember(st, letter, base, p)
        return p

    @staticmethod
    def _remember(st: _VoiceState, letter: str, base: int, pitch: int) -> None:
        """The pitch this note or chord gave a (letter, octave); -1 when a chord gave it two (``[=C^C]``): a tie
        from it is then ambiguous, and the next note is read as written."""
        key = (letter.upper(), base)
        st.last_letters[key] = pitch if st.last_letters.get(key, pitch) == pitch else -1

    def _pitch(self, st: _VoiceState, acc: str | None, letter: str, base: int) -> int:
        # ABC 2.1 §11.3: an accidental holds to the end of the bar for the same letter in every octave
        # (``%%propagate-accidentals pitch``, the default, as abc2midi plays), its octave only (``octave``) or
        # not at all (``not``)
        key = (letter.upper(), base if self.propagate == "octave" else 0)
        if acc:
            # a microtonal accidental (`^/c`, `_3/4e`) is played on the written letter, as abc2midi plays it
            # (it bends that note; the MIDI note number stays the letter's)
            shift = {"^^": 2, "^": 1, "__": -2, "_": -1, "=": 0, "micro": 0}[acc]
            if self.propagate != "not":
                st.bar_accs[key] = shift
        elif key in st.bar_accs:
            shift = st.bar_accs[key]
        else:
            shift = st.key_accs.get(letter.upper(), 0)
        return base + shift + 12 * st.octave + st.transpose

    # -- the music: a token-dispatch reader -------------------------------------------------------------
    def music_line(self, s: str) -> None:
        """Read one line of music: each token's first character picks its reader, which returns where the
        next token starts (``len(s)`` ends the line)."""
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            reader = _TOKEN_READERS.get(c)
            if reader is None:
                reader = _Reader._t_space if c.isspace() else _Reader._t_note_or_other
            i = reader(self, self.ensure_voice(), s, i)

    def _t_space(self, st: _VoiceState, s: str, i: int) -> int:
        return i + 1  # any whitespace (non-breaking, thin, ideographic) and ` $ * \ separate like a space

    def _t_comment(self, st: _VoiceState, s: str, i: int) -> int:
        return len(s)

    def _skip_past(self, s: str, i: int, close: str, unclosed: str) -> int:
        """Past the ``close`` that ends the token starting at ``i``; an error and the line's end without one."""
        j = s.find(close, i + 1)
        if j < 0:
            self.error(unclosed, i + 1)
            return len(s)
        return j + 1

    def _t_annotation(self, st: _VoiceState, s: str, i: int) -> int:
        return self._skip_past(s, i, '"', "unclosed chord symbol or annotation: a '\"' has no partner on this line")

    def _t_decoration(self, st: _VoiceState, s: str, i: int) -> int:
        c = s[i]
        j = s.find(c, i + 1)
        if c == "!" and (j < 0 or any(ch in s[i + 1 : j] for ch in " |\t")):
            return i + 1  # ABC 1.6 line break, not a decoration
        return self._skip_past(s, i, c, "unclosed decoration: a '+' has no partner on this line")

    def _t_grace(self, st: _VoiceState, s: str, i: int) -> int:
        return self._skip_past(s, i, "}", "unclosed grace notes: '{' has no matching '}' on this line")

    def _t_stray_close(self, st: _VoiceState, s: str, i: int) -> int:
        self.error(f"'{s[i]}' without a matching '{'{' if s[i] == '}' else '['}'", i + 1)
        return i + 1

    def _t_bracket(self, st: _VoiceState, s: str, i: int) -> int:
        """``[K:...]`` inline field, ``[1`` ending, ``[|`` bar line, or a chord."""
        n, col = len(s), i + 1
        if i + 2 < n and s[i + 1].isalpha() and s[i + 2] == ":":
            j = s.find("]", i)
            if j < 0:
                self.error(f"unclosed inline field '[{s[i + 1]}:'", col)
                return n
            self.inline_field(s[i + 1], s[i + 3 : j], col)
            return j + 1
        if i + 1 < n and s[i + 1].isdigit():
            m = re.match(r"\[(\d+(?:[-,]\d+)*)", s[i:])
            assert m is not None
            self.close_bar(st, "|", col)
            st.pending_ending = ending_passes(m.group(1))
            return i + m.end()
        if i + 1 < n and s[i + 1] == "|":
            return self._t_bar(st, s, i)
        return self.chord(st, s, i)

    def _t_dot(self, st: _VoiceState, s: str, i: int) -> int:
        return self._t_bar(st, s, i) if s[i + 1 : i + 2] == "|" else i + 1  # dotted bar line, or staccato

    def _t_bar(self, st: _VoiceState, s: str, i: int) -> int:
        n, col = len(s), i + 1
        j = i + (1 if s[i] in "[." else 0)
        while j < n and s[j] in "|:":
            j += 1
        if j < n and s[j] == "]" and s[j - 1] == "|":
            j += 1
        token = s[i:j]
        if token == ":" or (token.strip(":") == "" and len(token) == 1):
            if s[:i].rstrip(" \t!").endswith("|"):
                st.pending_repeat = st.pending_begin = True  # "|!:" : a repeat split by an old line break
                st.pending_loose = True
            else:
                self.warn("stray ':' (not part of a bar line) ignored", col)
            return j
        self.close_bar(st, token, col)
        m = re.match(r"\[?(\d+(?:[-,]\d+)*)", s[j:])
        if m:
            st.pending_ending = ending_passes(m.group(1))
            j += m.end()
        return j

    def _t_overlay(self, st: _VoiceState, s: str, i: int) -> int:
        """``&``: the rest of the bar is a second layer starting at the bar's start."""
        b = self.open_bar(st, i + 1)
        if not st.overlay:
            st.overlay = True
            self.n_overlays += 1
            if self.n_overlays > self.limits.max_overlays:
                raise GuardError(
                    self._finding(f"more than {self.limits.max_overlays} voice overlays ('&')", i + 1, None)
                )
        st.overlay_time = b.start
        st.last_event = None  # a broken rhythm or tie cannot reach across the overlay into the other layer
        st.broken_next = None
        return i + 1

    def _t_open_paren(self, st: _VoiceState, s: str, i: int) -> int:
        """``(3`` a tuplet, or ``(`` a slur."""
        col = i + 1
        if not (i + 1 < len(s) and s[i + 1].isdigit()):
            st.slurs.append((self.line_no, col))
            return i + 1
        m = re.match(r"\((\d+)(?::(\d*))?(?::(\d*))?", s[i:])
        assert m is not None
        p = int(m.group(1))
        if p < 2 or p > 9:
            self.error(f"tuplet '({p}' is not possible: use (2 to (9", col)
            return i + m.end()
        compound = st.meter is not None and st.meter[0] % 3 == 0 and st.meter[0] > 3
        q_default = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(p, 3 if compound else 2)
        q = int(m.group(2)) if m.group(2) else q_default
        r = int(m.group(3)) if m.group(3) else p
        if q == 0 or r == 0:
            self.error(f"impossible tuplet '{m.group(0)}'", col)
        else:
            if st.tuplet is not None and st.tuplet[1] > 0 and len(st.outer_tuplets) < 4:
                st.outer_tuplets.append(st.tuplet)  # a tuplet inside a tuplet (nested)
            st.tuplet = (Fraction(q, p), r, self.line_no, col)
        return i + m.end()

    def _t_close_paren(self, st: _VoiceState, s: str, i: int) -> int:
        if st.slurs:
            st.slurs.pop()
        else:
            self.warn("')' closes a slur that was never opened", i + 1)
        return i + 1

    def _t_broken(self, st: _VoiceState, s: str, i: int) -> int:
        """``>`` / ``<`` (and doubled, tripled): the previous note longer, the next shorter, or the reverse."""
        c, j = s[i], i
        while j < len(s) and s[j] == c:
            j += 1
        k = j - i
        if st.last_event is None or k > 3:
            self.error(f"broken rhythm '{s[i:j]}' must stand between two notes", i + 1)
            return j
        short = Fraction(1, 2**k)
        if k == 1 and self.broken_ratio != (3, 1):  # `%%MIDI ratio n m`, as abc2midi plays it
            n, m = self.broken_ratio
            short = Fraction(2 * m, n + m)
        long = 2 - short
        first, second = (long, short) if c == ">" else (short, long)
        ev = st.last_event
        delta = ev.dur * first - ev.dur
        ev.dur = ev.dur * first
        if st.bar is not None and ev.bar == st.bar.number and not st.overlay:
            st.time += delta
            st.bar.length += delta
        elif st.overlay:
            st.overlay_time += delta
        st.broken_next = second
        return j

    def _t_tie(self, st: _VoiceState, s: str, i: int) -> int:
        if st.last_event is not None:
            tied = frozenset(st.last_event.pitches)
            if st.bar is None and st.pending_ending is not None:
                st.pending_ties_in = tied  # `|1 -d4`: a tie written inside the ending ties into it alone
            else:
                st.last_event.ties = tied
            st.tie_carry = {k: v for k, v in st.last_letters.items() if v >= 0 and v in tied}
        return i + 1

    def _t_rest(self, st: _VoiceState, s: str, i: int) -> int:
        ln, j = self.read_length(s, i + 1, i + 1)
        if ln is not None:
            self.add_event(st, self.apply_broken(st, st.unit * ln), [], i + 1)
        return j

    def _t_multirest(self, st: _VoiceState, s: str, i: int) -> int:
        col = i + 1
        m = re.match(r"[ZX](\d*)", s[i:])
        assert m is not None
        count = int(m.group(1)) if m.group(1) and len(m.group(1)) < 4 else 1
        bar_len = Fraction(st.meter[0], st.meter[1]) if st.meter else st.unit * 8
        for k in range(count):
            self.add_event(st, bar_len, [], col)
            assert st.bar is not None
            st.bar.multirest = count
            if k != count - 1:
                self.close_bar(st, "|", col)
        return i + m.end()

    def _t_spacer(self, st: _VoiceState, s: str, i: int) -> int:
        i += 1  # a spacer, with an optional width
        while i < len(s) and (s[i].isdigit() or s[i] == "/"):
            i += 1
        return i

    def _t_note_or_other(self, st: _VoiceState, s: str, i: int) -> int:
        """A note (accidental, letter, octave marks, length), else a decoration letter or an error."""
        c, col = s[i], i + 1
        m = _NOTE_RE.match(s, i)
        acc = _accidental(m) if m else None
        if m is None and c in "^_=":
            # `^!1!d` (a fingering between the accidental and its note): the accidental is the note's
            d = _ACC_THEN_DECORATION_RE.match(s, i)
            m = _NOTE_RE.match(s, d.end()) if d else None
            if d and m and not m.group(1):
                acc = d.group(1)
                self.warn(f"accidental '{acc}' written before a decoration: read as '{acc}{m.group(2)}'", col)
            else:
                m = None
        if m:
            st.last_letters = {}
            p = self.pitch(st, acc, m.group(2), m.group(3))
            st.tie_carry = {}  # a tie reaches the next note only
            ln, j = self.read_length(s, m.end(), col)
            if ln is not None:
                self.add_event(st, self.apply_broken(st, st.unit * ln), [p], col)
            return j
        if c in "^_=":
            self.error(f"accidental '{c}' is not followed by a note", col)
            return i + 1
        if c in _DECORATION_LETTERS:
            return i + 1
        if c.isdigit() or c == "/":
            j = i + 1
            while j < len(s) and (s[j].isdigit() or s[j] == "/"):
                j += 1
            # abc2midi ignores a stray length and plays on; the music around it is clear
            self.warn(f"length '{s[i:j]}' does not follow a note: ignored", col)
            return j
        if c in ",'":
            self.warn(f"octave mark '{c}' after a note's length ignored (write it before the length: D,4)", col)
            return i + 1
        self.error(f"unexpected character '{c}' in the music", col)
        return i + 1

    def chord(self, st: _VoiceState, s: str, i: int) -> int:
        col = i + 1
        j = s.find("]", i + 1)
        bar = s.find("|", i + 1)
        if j < 0 or (0 <= bar < j):
            self.error("unclosed chord: '[' has no matching ']' before the bar line", col)
            return i + 1
        inner = s[i + 1 : j]
        pitches: list[int] = []
        tied: set[int] = set()
        first_len: Fraction | None = None
        st.last_letters = {}
        k = 0
        while k < len(inner):
            ch = inner[k]
            if ch in " \t-.~" or ch in "()":
                k += 1
                continue
            if ch in "zx":  # a rest inside a chord adds nothing
                _ln, k = self.read_length(inner, k + 1, col + 1 + k)
                continue
            if ch == '"':
                e = inner.find('"', k + 1)
                k = len(inner) if e < 0 else e + 1
                continue
            if ch == "!":
                e = inner.find("!", k + 1)
                k = len(inner) if e < 0 else e + 1
                continue
            m = _NOTE_RE.match(inner, k)
            if not m:
                if ch in _DECORATION_LETTERS:
                    k += 1
                    continue
                self.warn(f"unexpected '{ch}' inside a chord ignored", col + 1 + k)
                k += 1
                continue
            pitch = self.pitch(st, _accidental(m), m.group(2), m.group(3))
            pitches.append(pitch)
            ln, k2 = self.read_length(inner, m.end(), col + 1 + k)
            if first_len is None:
                first_len = ln if ln is not None else Fraction(1)
            k = k2
            if k < len(inner) and inner[k] == "-":
                tied.add(pitch)  # a tie on this chord note only, as abc2midi reads it
                k += 1
        post, end = self.read_length(s, j + 1, col)
        if end < len(s) and s[end] == "-":
            tied.update(pitches)  # a tie after the chord ties every note of it
            end += 1
        # the tied notes of this chord go on sounding in the next note or chord (their accidentals held)
        st.tie_carry = {k: v for k, v in st.last_letters.items() if v >= 0 and v in tied}
        if not pitches:
            self.warn("empty chord '[]' ignored", col)
            return end
        if len(set(pitches)) < len(pitches):
            self.warn("a unison inside a chord is played once (one key sounds once)", col)
        if post is None:
            return end
        dur = st.unit * (first_len or Fraction(1)) * post
        self.add_event(st, self.apply_broken(st, dur), sorted(set(pitches)), col, frozenset(tied))
        return end

    def part_field(self, value: str, col: int) -> None:
        """``P:`` in the header: the order of the parts; in the body: the part the next bars belong to."""
        if not self.header_done:
            order = part_order(value)
            if isinstance(order, str):
                self.warn(f"P:{value.strip()}: {order}; the parts are played as written", col)
            else:
                self.tune.part_order = order
            return
        label = value.split("%", 1)[0].strip()
        for st in self.states.values():  # a new part ends any numbered ending still open (`|2 ...` then P:B)
            st.in_ending = st.pending_ending = None
        if len(label) == 1 and label.isalpha():
            self.current_part = label.upper()
        elif self.tune.part_order:  # a part label is one letter (ABC 2.1 §4.8): the order cannot be followed
            self.warn(f"P:{label[:40]} is not a part label (one letter); the parts are played as written", col)
            self.tune.part_order = []

    def inline_field(self, key: str, value: str, col: int) -> None:
        if key == "P":
            self.part_field(value, col)
            return
        if key == "V":
            parts = value.split(None, 1)
            if parts:
                self.switch_voice(parts[0])
            return
        if key in "MLKQ":
            st = self.ensure_voice()
            if key == "M":
                usable, met = self.meter_of(value, col)
                if usable:
                    st.meter, st.meter_text = met, value.strip()
                    if st.bar is not None and st.bar.length == 0:
                        st.bar.expected = Fraction(met[0], met[1]) if met else None
                        st.bar.meter_text = value.strip()
                        st.bar.meter = met
            elif key == "L":
                fr = parse_fraction(value)
                if isinstance(fr, str) or fr <= 0 or fr > 4 or fr < Fraction(1, 512):
                    self.error(f"L:{value.strip()}: impossible unit length", col, code="bad-length")
                else:
                    st.unit = fr
            elif key == "K":
                key_text, octave = key_clauses(value)
                if octave is not None:
                    st.octave = octave
                if key_text:
                    ks = key_signature(key_text)
                    if isinstance(ks, str):
                        self.error(ks, col, code="unknown-key")
                    else:
                        st.key_accs = ks[0]
            elif key == "Q":
                q = parse_tempo(value, st.unit)
                if isinstance(q, AbsurdValue):
                    self.error(q, col, code="tempo")
                elif isinstance(q, str):
                    self.warn(f"{q}; the tempo is kept", col, code="tempo")

    def midi_directive(self, text: str) -> None:
        m = re.match(r"^%%MIDI\s+ratio\s+(\d{1,3})\s+(\d{1,3})\b", text)
        if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
            self.broken_ratio = (int(m.group(1)), int(m.group(2)))
            return
        m = re.match(r"^%%propagate-accidentals\s+(not|octave|pitch)\b", text)
        if m:
            self.propagate = m.group(1)
            return
        m = re.match(r"^%%MIDI\s+program\s+(?:(\d+)\s+)?(\d+)", text)
        if m:
            prog = int(m.group(2))
            if not 0 <= prog <= 127:
                self.error(f"%%MIDI program {prog} is out of range 0-127")
                return
            if self.cur is None and self.last_decl is not None:
                self.decl_programs[self.last_decl] = prog
            elif self.cur is None:
                self.default_program = prog
            else:
                self.cur.voice.program = prog
            return
        m = re.match(r"^%%MIDI\s+transpose\s+([+-]?\d{1,2})\b", text)
        if m:
            semitones = max(-48, min(48, int(m.group(1))))
            if self.cur is None:
                self.default_transpose = semitones
            else:
                self.cur.transpose = semitones
            return
        m = re.match(r"^%%MIDI\s+channel\s+(\d+)", text)
        if m and self.cur is not None:
            self.cur.voice.channel = int(m.group(1))

    def run(self) -> Tune:
        if len(self.text) > self.limits.max_chars:
            self.error(
                f"the tune has {len(self.text)} characters, more than the limit of {self.limits.max_chars}", line=None
            )
            return self.tune
        try:
            self._run()
        except GuardError as g:
            self.tune.errors.append(dataclasses.replace(g.finding, code="guard"))
        return self.tune

    def _run(self) -> None:
        lines = join_field_continuations(self.text.split("\n"))
        for idx, raw in enumerate(lines, start=1):
            self.line_no = idx
            line = raw.rstrip("\r")
            stripped = line.strip()
            block = re.match(r"^(?:%%|I:)\s*(begin|end)(\w*)", stripped)
            if block:
                # %%begintext / %%beginsvg / %%beginps ... %%end...: not music (and never engraved, see safe_svg)
                self.in_text_block = block.group(1) == "begin"
                continue
            if self.in_text_block:
                continue
            if stripped.startswith("%%"):
                self.midi_directive(stripped)
                continue
            if not stripped or stripped.startswith("%"):
                if not stripped and self.header_done and self.cur is not None and self.cur.voice.events:
                    # a blank line ends the tune (ABC 2.1); anything after it is not this tune's music
                    rest = "\n".join(lines[idx:]).strip()
                    if rest and _looks_like_music("\n".join(lines[idx:])):
                        continue
                    if rest:
                        break
                continue
            fm = _FIELD_RE.match(stripped)
            if fm and not (self.header_done and stripped[0] in "|["):
                key, value = fm.group(1), fm.group(2)
                if "%" in value and key not in "wW":
                    value = value.split("%", 1)[0]
                if key == "X" and self.header_done and self.tune.n_notes:
                    break  # the next tune begins: this reader reads one
                if key == "T":
                    self.tune.headers.setdefault("T", []).append(value.strip())
                    if self.tune.title is None and value.strip():
                        self.tune.title = value.strip()
                    continue
                if key not in "MLKQV":
                    if key not in "X":
                        self.tune.headers.setdefault(key, []).append(value.strip())
                    if key == "P":
                        self.part_field(value, line.find(":") + 2)
                    continue
                if not self.header_done:
                    self.header_field(key, value, line.find(":") + 2)
                    if key == "K":
                        self.finish_header()
                    continue
                self.header_field(key, value, line.find(":") + 2)
                continue
            if not self.header_done:
                self.finish_header(missing_k=True)
            self.music_line(line)
        self.finish()

    def finish_header(self, missing_k: bool = False) -> None:
        self.header_done = True
        if missing_k:
            self.warn(
                "no K: field before the music; assuming K:C (write K: as the last header line)",
                line=None,
                code="missing-header",
            )
        if not self.meter_seen:
            self.warn(
                "no M: field; assuming free meter, so bar lengths are not checked (add e.g. M:4/4)",
                line=None,
                code="missing-header",
            )
        if not self.unit_seen:
            if self.tune.meter is not None and Fraction(*self.tune.meter) < Fraction(3, 4):
                self.tune.unit = Fraction(1, 16)
            else:
                self.tune.unit = Fraction(1, 8)
            self.warn(
                f"no L: field; using the ABC 2.1 default L:{self.tune.unit} from the meter",
                line=None,
                code="missing-header",
            )
        for vid, (name, _rest) in self.voice_decls.items():
            self.switch_voice(vid, name)
        self.cur = None

    def finish(self) -> None:
        if not self.header_done:
            self.finish_header(missing_k=not self.key_seen)
        for st in self.states.values():
            b = st.bar
            if b is not None and b.expected and 0 < b.length < b.expected and len(st.voice.bars) > 1:
                den = b.meter[1] if b.meter else 4
                self.tune.warnings.append(
                    Finding(
                        message=f"the tune stops in the middle of bar {b.number} ({_fmt_frac(b.length * den)} of "
                        f"{_fmt_frac(b.expected * den)} beats, no closing bar line): it looks cut off",
                        line=b.line,
                        column=b.column,
                        bar=b.number,
                        voice=st.voice.id if len(self.states) > 1 else None,
                        code="truncated",
                    )
                )
            if st.bar is not None:
                st.bar = None
            for line, col in st.slurs:
                self.tune.warnings.append(
                    Finding(
                        message="unclosed slur: '(' has no matching ')'",
                        code="unclosed",
                        line=line,
                        column=col,
                        bar=None,
                        voice=st.voice.id if len(self.states) > 1 else None,
                    )
                )
            if st.tuplet is not None:
                self.tune.warnings.append(
                    Finding(
                        message=f"tuplet is missing {st.tuplet[1]} note(s) at the end of the tune",
                        code="unclosed",
                        line=st.tuplet[2],
                        column=st.tuplet[3],
                        voice=st.voice.id if len(self.states) > 1 else None,
                    )
                )
        # drop voices that were declared but never written
        for vid in [v for v, s in self.states.items() if not s.voice.events]:
            if len(self.states) > 1:
                del self.tune.voices[vid]
        if not any(v.events for v in self.tune.voices.values()):
            self.error("the tune has no notes: write the music after the K: line", line=None, code="no-notes")
            return
        if self.tune.n_notes == 0:
            self.error("the tune has only rests", line=None, code="no-notes")
        self.check_bars()

    def check_pickups(self, v: Voice, bars: list[Bar], multi: bool) -> None:
        """A pickup and the closing bar of its section must add up to one bar."""
        for first, last in _pickup_pairs(bars):
            assert first.expected is not None
            total = first.length + last.length
            if total == first.expected:
                continue
            den = first.meter[1] if first.meter else 4
            self.tune.warnings.append(
                Finding(
                    message=f"the pickup (bar {first.number}, {_fmt_frac(first.length * den)}/{den}) and the closing "
                    f"bar {last.number} ({_fmt_frac(last.length * den)}/{den}) add up to "
                    f"{_fmt_frac(total * den)}/{den}, but M:{first.meter_text or '?'} needs "
                    f"{_fmt_frac(first.expected * den)}/{den}",
                    line=last.line,
                    column=last.column,
                    bar=last.number,
                    voice=v.id if multi else None,
                    code="pickup-mismatch",
                )
            )

    def check_bars(self) -> None:
        multi = len(self.tune.voices) > 1
        for v in self.tune.voices.values():
            bars = [b for b in v.bars if b.length > 0]
            for pos, b in enumerate(bars):
                if b.expected is None or b.length == b.expected:
                    continue
                short = b.length < b.expected
                first, last = pos == 0, pos == len(bars) - 1
                if short and (first or last or b.begins_section or b.ends_section or b.ending is not None):
                    continue
                if short and pos + 1 < len(bars) and (bars[pos + 1].begins_section or bars[pos + 1].ending):
                    continue
                assert b.expected is not None
                den = b.meter[1] if b.meter else 4
                has = _fmt_frac(b.length * den)
                needs = _fmt_frac(b.expected * den)
                who = f" of voice {v.id}" if multi else ""
                unit = "beat" if has == "1" else "beats"
                self.tune.warnings.append(
                    Finding(
                        message=f"bar {b.number}{who} has {has} {unit}, M:{b.meter_text or '?'} needs {needs}",
                        line=b.line,
                        column=b.column,
                        bar=b.number,
                        voice=v.id if multi else None,
                        code="bar-length",
                    )
                )
            self.check_pickups(v, bars, multi)
        if multi:
            lengths = {vid: v.length for vid, v in self.tune.voices.items()}
            longest = max(lengths.values())
            for vid, ln in lengths.items():
                if ln != longest:
                    self.tune.warnings.append(
                        Finding(
                            message=f"voice {vid} lasts {_fmt_frac(ln / self.tune.unit)} units of L:{self.tune.unit} "
                            f"but the longest voice lasts {_fmt_frac(longest / self.tune.unit)}; "
                            "voices should have the same length",
                            voice=vid,
                            code="voice-length",
                        )
                    )


_TOKEN_READERS: dict[str, Any] = {
    **dict.fromkeys(" \t`$*\\\u200b\ufeff", _Reader._t_space),
    "%": _Reader._t_comment,
    '"': _Reader._t_annotation,
    "!": _Reader._t_decoration,
    "+": _Reader._t_decoration,
    "{": _Reader._t_grace,
    "}": _Reader._t_stray_close,
    "]": _Reader._t_stray_close,
    "[": _Reader._t_bracket,
    "|": _Reader._t_bar,
    ":": _Reader._t_bar,
    ".": _Reader._t_dot,
    "&": _Reader._t_overlay,
    "(": _Reader._t_open_paren,
    ")": _Reader._t_close_paren,
    "<": _Reader._t_broken,
    ">": _Reader._t_broken,
    "-": _Reader._t_tie,
    "z": _Reader._t_rest,
    "x": _Reader._t_rest,
    "Z": _Reader._t_multirest,
    "X": _Reader._t_multirest,
    "y": _Reader._t_spacer,
}
"""Which reader handles a token, by its first character; everything else is a note, a decoration letter or
an error (:meth:`_Reader._t_note_or_other`)."""


def _pickup_pairs(bars: list[Bar]) -> list[tuple[Bar, Bar]]:
    """(pickup, closing bar) of each section whose first bar is short: the closing bar is the last bar before
    the next section starts (a repeat, ``||`` or the end), endings excluded."""
    pairs = []
    starts = [k for k, b in enumerate(bars) if k == 0 or b.start_repeat or bars[k - 1].ends_section]
    for n, k in enumerate(starts):
        end = (starts[n + 1] if n + 1 < len(starts) else len(bars)) - 1
        first = bars[k]
        while end > k and bars[end].passes and bars[end].ending != 1:
            end -= 1  # the closing bar of a section with endings: the last bar of its first ending
        last = bars[end]
        if end > k and first.expected and last.expected and first.length < first.expected:
            if last.length < last.expected and not last.passes:
                pairs.append((first, last))
    return pairs


def join_field_continuations(lines: list[str]) -> list[str]:
    """A field line ending in ``\\`` continues on the next line (``T:long \\`` / ``title``); the joined
    line takes the first line's place and a comment the second's, so line numbers stay true."""
    out = list(lines)
    for k in range(len(out) - 1):
        code = out[k].split("%", 1)[0].rstrip()
        if code.endswith("\\") and _FIELD_RE.match(out[k].strip()) and not out[k].lstrip().startswith("%"):
            out[k + 1], out[k] = "%", code[:-1] + out[k + 1].strip()
    return out


def _fmt_frac(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    f = float(x)
    return (
        f"{f:.3f}".rstrip("0").rstrip(".")
        if abs(f * 1000 - round(f * 1000)) < 1e-9
        else f"{x.numerator}/{x.denominator}"
    )


def _looks_like_music(rest: str) -> bool:
    for line in rest.split("\n"):
        s = line.strip()
        if not s:
            continue
        return bool(_FIELD_RE.match(s) and s[0] in "VPTKLMQw") or s.startswith("%") or "|" in s
    return False


MAX_PARTS_PLAYED = 64


def part_order(value: str) -> list[str] | str:
    """The parts of a header ``P:`` in playing order (ABC 2.1 §3.1.12: letters, a count after a letter or a
    parenthesised group, dots, spaces and hyphens for readability), or why it cannot be read. At most
    ``MAX_PARTS_PLAYED`` parts."""
    text = re.sub(r"[\s.\-]", "", value.split("%", 1)[0])
    pos = 0

    def seq() -> list[str]:
        nonlocal pos
        out: list[str] = []
        while pos < len(text) and text[pos] != ")":
            c = text[pos]
            if c == "(":
                pos += 1
                inner = seq()
                if pos >= len(text) or text[pos] != ")":
                    raise ValueError("a '(' is not closed")
                pos += 1
                item = inner
            elif c.isalpha():
                pos += 1
                item = [c.upper()]
            else:
                raise ValueError(f"unexpected '{c}'")
            m = re.match(r"\d{1,2}", text[pos:])
            times = int(m.group()) if m else 1
            pos += len(m.group()) if m else 0
            out.extend(item * times)
            if len(out) > MAX_PARTS_PLAYED:
                raise ValueError(f"more than {MAX_PARTS_PLAYED} parts to play")
        return out

    try:
        order = seq()
        if pos < len(text):
            raise ValueError("a ')' without '('")
    except ValueError as e:
        return str(e)
    return order


def read_tune(text: str, limits: Limits | None = None) -> Tune:
    """Read one ABC tune (header + body). Never raises for bad music: problems become findings."""
    return _Reader(text, limits or Limits()).run()
