"""MIDI -> ABC for the knowledge base: the whole piece, every track a voice, on a grid chosen per file.

The notes are read with symusic (a compiled MIDI parser: ~0.1 ms for a typical Lakh file). Each pitched track
becomes one voice, or a few when its notes overlap without starting and ending together (a sustained bass under a
moving melody), named after the track and played with its ``%%MIDI program``; drums become their own voice on
channel 10. Up to ``max_voices`` voices (30: as many as abc2midi plays) are written, one MIDI channel per
track; when a file has more tracks, the last ones share a voice, and the ABC says so in an ``N:`` line.

The rhythm grid is chosen per file from the notes themselves: the coarsest of sixteenths, eighth-note triplets,
sixteenth-note triplets, thirty-seconds and the union of sixteenths and triplets that holds (nearly) every
onset; a file played without a grid (a performance) gets thirty-second notes, whose rounding (at most 1/16 of
a quarter note) stays inside the tolerance notes are matched with. The grid is stated in an ``N:`` line.
Tempo and meter (and their changes) come from the file; the key is found from the notes (Krumhansl-Kessler
profiles over a duration-weighted pitch-class histogram), and accidentals are spelled in that key and written
explicitly wherever the ABC 2.1 accidental rules of either kind (``%%propagate-accidentals pitch`` or
``octave``) could read them differently. Every bar of every voice has the meter's length, so the checker finds
no ``bar-length`` or ``voice-length`` problem.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from image2music.tools.music.abcheader import _STEP
from image2music.tools.music.abcparse import Limits
from image2music.tools.music.convert import TICKS_PER_QUARTER, PlayedTrack
from image2music.tools.music.metrics import stored_metrics

ROUTE = "symusic"
"""The one conversion route, recorded with every knowledge-base entry."""

DRUM_CHANNEL = 10

CHORD_MAX = 50
"""abc2midi plays at most 50 notes in a chord ("Too many notes in chord"): a bigger one is spread over voices."""

KB_LIMITS = Limits(max_chars=2_000_000, max_notes=100_000, max_voices=32, max_seconds=1800.0)
"""What the knowledge base's reader accepts: whole pieces of up to 32 voices and 30 minutes (the checker's
defaults are for model answers)."""


class MidiConversionError(ValueError):
    """A MIDI file could not be turned into ABC; the message is the reason, ``code`` its kind
    (``unreadable``, ``too-large``, ``no-notes``, ``drums-only``, ``bad-tempo``)."""

    def __init__(self, message: str, code: str = "unreadable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MidiLimits:
    """Bounds on what one MIDI file may hold before it is converted (a bad file is skipped, never stored)."""

    max_bytes: int = 8 * 1024 * 1024
    max_notes: int = 100_000
    max_tracks: int = 128
    max_minutes: float = 30.0
    min_qpm: float = 4.0
    max_qpm: float = 1000.0


@dataclass
class Conversion:
    """The ABC of one MIDI file and what the conversion did."""

    abc: str
    grid: str
    voices: int
    tracks: int
    drums: bool
    tempo_qpm: float
    meter: str
    key: str
    bars: int
    dropped: list[str] = field(default_factory=list)
    played: list[PlayedTrack] = field(default_factory=list)
    """The notes the ABC plays, as our reader plays them (``TICKS_PER_QUARTER``): metrics need no re-read."""

    def metrics(self) -> dict[str, Any]:
        """What a knowledge-base entry stores: equal to ``entry_metrics(read_tune(self.abc))`` (tested), without
        reading the ABC back."""
        return stored_metrics(
            self.played, tempo_qpm=float(round(self.tempo_qpm)), key=self.key, meter=self.meter, bars=self.bars
        )

    def summary(self) -> dict[str, Any]:
        return {
            "converter": ROUTE,
            "grid": self.grid,
            "voices": self.voices,
            "tracks": self.tracks,
            "drums": self.drums,
            "bars": self.bars,
            "dropped": "; ".join(self.dropped),
        }


# --- grids --------------------------------------------------------------------------------------------

BASE = 48
"""Times are integers in 1/48 of a quarter note: every grid below is a whole number of them."""
GRIDS: tuple[tuple[int, str], ...] = (
    (12, "sixteenth notes (straight)"),
    (16, "eighth-note triplets"),
    (8, "sixteenth-note triplets"),
    (6, "thirty-second notes (straight)"),
    (4, "sixteenths and eighth-note triplets"),
)
"""Candidate grids (in 1/48 quarter notes), coarsest first."""
PERFORMANCE_GRID = (6, "thirty-second notes (the file is not on a grid)")
GRID_FIT = 0.98
"""Share of onsets a grid must hold (within 1/64 of a quarter note) to be chosen."""


FINE_GRID = (3, "sixty-fourth notes (repeated notes faster than the grid the onsets suggest)")
COLLAPSE_LIMIT = 0.005
"""A grid on which more than this share of the notes would land on a note of the same pitch and track (a
tremolo, fast repeated notes) gives way to ``FINE_GRID``: a lost re-strike is a lost note."""


def _collapsed(tracks: list[tuple[str, int, bool, list[Note]]], tpq: int, step: int) -> int:
    """How many notes land on a note of the same pitch in the same track at the same grid point."""
    scale = BASE / (tpq * step)
    lost = 0
    for _name, _prog, drums, notes in tracks:
        if drums:
            continue
        seen: set[tuple[int, int]] = set()
        for s, _e, p in notes:
            key = (round(s * scale), p)
            lost += key in seen
            seen.add(key)
    return lost


def choose_grid(times_q: list[float]) -> tuple[int, str]:
    """The coarsest candidate grid that holds at least ``GRID_FIT`` of the onsets (in quarter notes)."""
    if not times_q:
        return GRIDS[0]
    eps = 1 / 64
    for step, name in GRIDS:
        g = step / BASE
        fit = sum(abs(t - round(t / g) * g) <= eps for t in times_q)
        if fit >= GRID_FIT * len(times_q):
            return step, name
    return PERFORMANCE_GRID


# --- keys and spelling -----------------------------------------------------------------------------------

_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
_FIFTHS_MAJOR = (0, -5, 2, -3, 4, -1, 6, 1, -4, 3, -2, 5)  # sharps (+) or flats (-) of each major tonic
_MAJOR_BY_FIFTHS = dict(zip(range(-6, 7), "Gb Db Ab Eb Bb F C G D A E B F#".split(), strict=True))
_MINOR_BY_FIFTHS = dict(zip(range(-6, 7), "Ebm Bbm Fm Cm Gm Dm Am Em Bm F#m C#m G#m D#m".split(), strict=True))
_NATURAL = _STEP  # each letter's semitone above C, in letter order
_SHARP_ORDER = "FCGDAEB"


def _correlation(xs: list[float], ys: tuple[float, ...]) -> float:
    mx, my = sum(xs) / 12, sum(ys) / 12
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5
    return num / den if den else 0.0


def find_key(histogram: list[float], hint_fifths: int | None = None, hint_minor: bool = False) -> tuple[str, int]:
    """(ABC key name, sharps or -flats) best fitting a 12-bin pitch-class histogram; the file's own key
    signature (``hint_*``) is kept when it fits nearly as well as the best key."""
    if not any(histogram):
        return "C", 0
    scores: list[tuple[float, str, int, bool]] = []
    for tonic in range(12):
        rotated = histogram[tonic:] + histogram[:tonic]
        major = _FIFTHS_MAJOR[tonic]
        scores.append((_correlation(rotated, _MAJOR), _MAJOR_BY_FIFTHS[major], major, False))
        minor = _FIFTHS_MAJOR[(tonic + 3) % 12]  # the relative major's signature
        scores.append((_correlation(rotated, _MINOR), _MINOR_BY_FIFTHS[minor], minor, True))
    best = max(scores)
    if hint_fifths is not None:
        for sc in scores:
            # the file's signature is kept when it fits nearly as well and writes no more accidentals (a file
            # marked A major whose music is in A minor would be written with naturals throughout)
            if sc[2] == hint_fifths and sc[3] == hint_minor and sc[0] >= best[0] - 0.05:
                if _outside(histogram, sc[2]) <= _outside(histogram, best[2]):
                    return sc[1], sc[2]
    return best[1], best[2]


def _outside(histogram: list[float], fifths: int) -> float:
    """How much of the music a key signature of ``fifths`` writes with accidentals."""
    scale = {(_NATURAL[letter] + a) % 12 for letter, a in key_alterations(fifths).items()}
    return sum(w for pc, w in enumerate(histogram) if pc not in scale)


def key_alterations(fifths: int) -> dict[str, int]:
    alter = dict.fromkeys(_NATURAL, 0)
    if fifths > 0:
        for letter in _SHARP_ORDER[:fifths]:
            alter[letter] = 1
    elif fifths < 0:
        for letter in _SHARP_ORDER[::-1][:-fifths]:
            alter[letter] = -1
    return alter


def spelling_table(fifths: int) -> list[tuple[str, int]]:
    """(letter, alteration) for each pitch class in a key: the key's own notes as the signature has them,
    the others as sharps in sharp keys (and C major), flats in flat keys."""
    alter = key_alterations(fifths)
    table: list[tuple[str, int]] = []
    for pc in range(12):
        options = [(L, a) for L in _NATURAL for a in (-1, 0, 1) if (_NATURAL[L] + a) % 12 == pc]
        diatonic = [o for o in options if o[1] == alter[o[0]]]
        if diatonic:
            table.append(diatonic[0])
            continue
        prefer = -1 if fifths < 0 else 1  # a natural letter first (=F in G major, not E#), then sharps or flats
        table.append(sorted(options, key=lambda o: (o[1] != 0, o[1] != prefer))[0])
    return table


def _note_name(letter: str, octave: int) -> str:
    if octave >= 5:
        return letter.lower() + "'" * (octave - 5)
    return letter + "," * (4 - octave)


class _Speller:
    """Writes pitches in a key, bar by bar, with accidentals wherever either accidental rule needs them, and on
    every note of the lowest octave (MIDI 0-11), where abc2midi 4.84 misreads the key: ``F,,,,,`` in G major plays
    F natural and ``G,,,,,`` G sharp, ``^C,,,,,D,,,,,`` plays D sharp; an explicit accidental plays right."""

    def __init__(self, fifths: int) -> None:
        self.table = spelling_table(fifths)
        self.alter = key_alterations(fifths)
        self.touched: set[str] = set()

    def new_bar(self) -> None:
        self.touched.clear()

    def write(self, pitch: int) -> str:
        letter, a = self.table[pitch % 12]
        octave = (pitch - _NATURAL[letter] - a) // 12 - 1
        name = _note_name(letter, octave)
        if a == self.alter[letter] and letter not in self.touched and octave >= 0:
            return name  # below MIDI 12 (C,,,,,) abc2midi applies the key and bar accidentals to the next letter up
        self.touched.add(letter)  # from here on in this bar, this letter is always written with its accidental
        return {-1: "_", 0: "=", 1: "^"}[a] + name


def length_text(units: Fraction) -> str:
    """A note length in units of ``L:``: ``""``, ``2``, ``/2``, ``3/2``, ``2/3``."""
    if units == 1:
        return ""
    if units.denominator == 1:
        return str(units.numerator)
    if units.numerator == 1:
        return "/" if units.denominator == 2 else f"/{units.denominator}"
    return f"{units.numerator}/{units.denominator}"


def _clean_text(text: str, limit: int = 60) -> str:
    """Text from the file (track names, titles) safe inside an ABC field or a quoted voice name."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = re.sub(r'["\\%\[\]]', "", text)
    return re.sub(r"\s+", " ", text).strip()[:limit]


# --- the score --------------------------------------------------------------------------------------------

Note = tuple[int, int, int]
"""(start, end, pitch), in 1/48 quarter notes."""


@dataclass
class _Lane:
    """One voice's events: (start, end, pitches) on the grid, in order, never overlapping."""

    name: str
    program: int
    drums: bool
    events: list[tuple[int, int, list[int]]] = field(default_factory=list)
    track: int = 0

    @property
    def end(self) -> int:
        return self.events[-1][1] if self.events else 0


def _lanes_of(notes: list[Note], name: str, program: int, drums: bool, cap: int) -> list[_Lane]:
    """A track's notes as voices: notes that start and end together are one chord; a chord goes to the first
    voice that is free; when ``cap`` voices are busy it joins (or cuts short) the one that ends first. Notes keep
    their quantised lengths: a detached note is written with its rest (closing the gap made 0.83-beat notes
    whole beats, and note lengths agreed with the file for 0.861 of the notes)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for s, e, p in notes:
        groups.setdefault((s, e), []).append(p)
    layers: list[tuple[int, int, set[int]]] = []  # a pitch struck twice at once goes to a second voice
    for (s, e), ps in sorted(groups.items()):
        while ps:
            once = sorted(set(ps))
            for k in range(0, len(once), CHORD_MAX):  # abc2midi's limit: a bigger chord spreads over voices
                layers.append((s, e, set(once[k : k + CHORD_MAX])))
            for p in once:
                ps.remove(p)
    lanes: list[_Lane] = []
    for s, e, pitches in layers:
        free = next((ln for ln in lanes if ln.end <= s), None)
        if free is None and len(lanes) < cap:
            free = _Lane(name, program, drums)
            lanes.append(free)
        if free is None:
            # every voice is busy: join a chord struck at this instant that has room, else cut the voice that ends
            # first short (its onset kept, it ends where this starts)
            joinable = [
                ln
                for ln in lanes
                if ln.events[-1][0] == s
                and not set(ln.events[-1][2]) & pitches  # (joining a chord that has the key would lose a strike)
                and len(set(ln.events[-1][2]) | pitches) <= CHORD_MAX
            ]
            free = min(joinable or lanes, key=lambda ln: ln.end)
            ls, le, lp = free.events[-1]
            if ls == s:  # (with no room anywhere, what does not fit is not kept)
                free.events[-1] = (ls, max(le, e), sorted(set(lp) | set(sorted(pitches)[: CHORD_MAX - len(lp)])))
                continue
            free.events[-1] = (ls, s, lp)
        free.events.append((s, e, sorted(pitches)))
    for k, ln in enumerate(lanes[1:], start=2):
        ln.name = f"{name} ({k})"
    return lanes


Bar = tuple[int, int, tuple[int, int]]
"""(start, length, meter) of a bar, in 1/48 quarter notes."""


def _bars(meters: list[tuple[int, int, int]], end: int) -> list[Bar]:
    """Every bar up to ``end``; a meter change takes effect at the first bar line at or after it."""
    bars: list[Bar] = []
    meter = meters[0][1:] if meters else (4, 4)
    pending = list(meters[1:])
    t = 0
    while t < end or not bars:
        while pending and pending[0][0] <= t:
            meter = pending.pop(0)[1:]
        length = 4 * BASE * meter[0] // meter[1]
        bars.append((t, length, meter))
        t += length
    return bars


def _overlaps_itself(notes: list[Note]) -> bool:
    """Whether a key of the track sounds again before its note ended (a re-strike)."""
    ordered = sorted((p, s, e) for s, e, p in notes)
    return any(a[0] == b[0] and a[2] > b[1] for a, b in itertools.pairwise(ordered))


def strikes(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """Every note of a MIDI file as played, ``(onset, end, pitch, track, channel)`` in ticks, in the order struck:
    a key struck again while it sounds ends its note there (as a synthesizer retriggers it); a note still sounding
    at its track's end ends there. Raises ValueError when mido cannot read the file."""
    import io

    import mido

    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - mido's errors are of many kinds
        raise ValueError(f"unreadable MIDI ({e})") from e
    out: list[tuple[int, int, int, int, int]] = []
    for ti, track in enumerate(mid.tracks):
        t = 0
        sounding: dict[tuple[int, int], int] = {}  # (channel, key) -> index in out
        for msg in track:
            t += msg.time
            if msg.type not in ("note_on", "note_off"):
                continue
            key = (msg.channel, msg.note)
            if key in sounding:
                i = sounding.pop(key)
                out[i] = (out[i][0], t, *out[i][2:])
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[key] = len(out)
                out.append((t, t, msg.note, ti, msg.channel))
        for i in sounding.values():
            out[i] = (out[i][0], t, *out[i][2:])
    return out


def _restruck(data: bytes, tracks: list[list[Note]]) -> list[list[Note]]:
    """The tracks' notes with each key's strikes paired as played (``strikes``). symusic pairs a key's note-ons
    and note-offs first in, first out, so a re-strike ended at a later note-off and a strike without an off of its
    own was dropped (9 of 95 development files lost up to 2% of their notes). Only for files with a re-strike:
    each note goes to the symusic track holding its onset, one that symusic dropped to the track of the key's
    strike before it."""
    try:
        played = strikes(data)
    except ValueError:
        return tracks  # symusic read it; keep its reading
    owner: dict[tuple[int, int], list[int]] = {}  # (pitch, onset) -> symusic tracks holding such a note
    for k, notes in enumerate(tracks):
        for s, _e, p in notes:
            owner.setdefault((p, s), []).append(k)
    out: list[list[Note]] = [[] for _ in tracks]
    last: dict[tuple[int, int, int], int] = {}  # (track, channel, key) -> the symusic track of its latest strike
    for onset, end, pitch, ti, ch in played:
        holders = owner.get((pitch, onset))
        into = holders.pop() if holders else last.get((ti, ch, pitch))
        if into is not None:
            out[into].append((onset, end, pitch))
            last[(ti, ch, pitch)] = into
    return [sorted(notes) for notes in out]


def midi_to_abc(
    path: Path,
    title: str = "",
    *,
    max_voices: int = 30,
    voices_per_track: int = 4,
    limits: MidiLimits | None = None,
) -> Conversion:
    """Convert one MIDI file; raises MidiConversionError with the reason when it cannot be used."""
    import symusic

    limits = limits or MidiLimits()
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MidiConversionError(f"cannot read the file ({e.strerror or e})") from e
    if size > limits.max_bytes:
        raise MidiConversionError(
            f"the file has {size:,} bytes, more than the limit of {limits.max_bytes:,}", "too-large"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MidiConversionError(f"cannot read the file ({e.strerror or e})") from e
    if data[:4] != b"MThd":
        raise MidiConversionError("not a MIDI file (no MThd header)")
    try:
        score: Any = symusic.Score.from_midi(data)  # symusic's stubs do not name the attributes
    except Exception as e:  # noqa: BLE001 - the parser's errors are of many kinds; each is a reason to skip
        raise MidiConversionError(f"unreadable MIDI ({e})") from e
    tpq = int(score.ticks_per_quarter)
    if tpq <= 0:
        raise MidiConversionError(f"unusable time division ({tpq} ticks per quarter note)")
    if len(score.tracks) > limits.max_tracks:
        raise MidiConversionError(
            f"{len(score.tracks)} tracks, more than the limit of {limits.max_tracks}", "too-large"
        )

    tracks: list[tuple[str, int, bool, list[tuple[int, int, int]]]] = []  # notes in ticks
    n_notes = 0
    read = [[(n.time, n.time + max(n.duration, 0), n.pitch) for n in tr.notes] for tr in score.tracks]
    if any(map(_overlaps_itself, read)):
        read = _restruck(data, read)
    for tr, notes in zip(score.tracks, read, strict=True):
        if not notes:
            continue
        n_notes += len(notes)
        if n_notes > limits.max_notes:
            raise MidiConversionError(f"more than {limits.max_notes:,} notes", "too-large")
        tracks.append((_clean_text(tr.name), int(tr.program), bool(tr.is_drum), notes))
    pitched = [t for t in tracks if not t[2]]
    if not pitched:
        raise MidiConversionError(
            "no pitched notes (drums only)" if tracks else "no notes", "drums-only" if tracks else "no-notes"
        )

    tempos = sorted((int(t.time), float(t.qpm)) for t in score.tempos)
    tempo = next((qpm for t, qpm in reversed(tempos) if t == 0), 120.0)  # the last tempo set at the start
    for _t, qpm in tempos:
        if not limits.min_qpm <= qpm <= limits.max_qpm:
            raise MidiConversionError(
                f"a tempo of {qpm:g} quarter notes a minute is outside {limits.min_qpm:g}-{limits.max_qpm:g}",
                "bad-tempo",
            )
    all_ticks = [n for t in tracks for n in t[3]]
    end_tick = max(e for _s, e, _p in all_ticks)
    seconds = end_tick / tpq * 60 / tempo
    if seconds > limits.max_minutes * 60:
        raise MidiConversionError(
            f"the music lasts {seconds / 60:.0f} minutes, more than {limits.max_minutes:g}", "too-large"
        )
    step, grid_name = choose_grid([s / tpq for s, _e, _p in all_ticks])
    if step > FINE_GRID[0] and _collapsed(tracks, tpq, step) > COLLAPSE_LIMIT * len(all_ticks):
        step, grid_name = FINE_GRID  # fast repeated notes would fall on one grid point and be lost
    scale = BASE / (tpq * step)

    def q(tick: int) -> int:
        return round(tick * scale) * step

    meters: list[tuple[int, int, int]] = []
    for ts in sorted(score.time_signatures, key=lambda x: x.time):
        num, den = int(ts.numerator), int(ts.denominator)
        if num <= 0 or den <= 0 or den & (den - 1) or num > 64 or den > 64:
            continue
        at = q(int(ts.time))
        if meters and meters[-1][0] == at:
            meters[-1] = (at, num, den)
        elif not meters or meters[-1][1:] != (num, den):
            meters.append((at, num, den))
    if meters and meters[0][0] > 0:
        meters.insert(0, (0, 4, 4))

    hist = [0.0] * 12  # the key from the pitched notes, weighted by duration
    for _name, _prog, _drums, notes in pitched:
        for on, off, p in notes:
            hist[p % 12] += max(off - on, tpq // 4) / tpq
    hint = next(iter(score.key_signatures), None)
    key_name, fifths = find_key(
        hist, None if hint is None else int(hint.key), bool(hint.tonality) if hint is not None else False
    )

    # voices: pitched tracks first (in file order), drums last; when they would be more than ``max_voices``,
    # fewer voices per track (overlapping notes become chords, cut short), then tracks beyond the cap dropped
    per_track = max(1, voices_per_track)
    lanes, dropped = _voices(pitched, tracks, q, step, per_track, max_voices)
    while dropped and per_track > 1:
        per_track -= 1
        lanes, dropped = _voices(pitched, tracks, q, step, per_track, max_voices)
    if dropped:  # more tracks than voices: the last ones share one voice (their notes kept, programs lost)
        keep = max(1, max_voices - (len(tracks) > len(pitched)) - 1)
        rest = pitched[keep:]
        merged = ("Other tracks", rest[0][1], False, sorted(n for t in rest for n in t[3]))
        lanes, dropped = _voices([*pitched[:keep], merged], tracks, q, step, 1, max_voices)
        dropped.insert(0, f"{len(rest)} tracks share the voice 'Other tracks' (played with program {rest[0][1]})")
    bars = _bars(meters, max(ln.end for ln in lanes))

    meter0 = bars[0][2]
    head = [
        "X:1",
        # chord notes at one instant, as in the file (abc2midi's default attack staggers them, and a piece of
        # short chords drifts out of time); obeyed after X:, ignored in a file header
        "%%MIDI chordattack 0",
        f"T:{_clean_text(title) or 'untitled'}",
        f"N:converted from MIDI: {len(tracks)} track(s), {len(lanes)} voice(s); rhythm on a grid of {grid_name}",
    ]
    head += [f"N:not kept: {d}" for d in dropped[:4]]
    head += [f"M:{meter0[0]}/{meter0[1]}", "L:1/16", f"Q:1/4={round(tempo)}", f"K:{key_name}"]
    for k, ln in enumerate(lanes, start=1):
        clef = "perc" if ln.drums else ("bass" if _median_pitch(ln) < 55 else "treble")
        head.append(f'V:{k} name="{ln.name}" clef={clef}')
    tempo_at = _tempo_changes([(q(t), qpm) for t, qpm in tempos], bars, tempo)
    body: list[str] = []
    # one MIDI channel per track (its voices share it), as many as MIDI has; abc2midi gives each voice a channel
    # of its own otherwise and stops at 16
    free = [c for c in range(1, 17) if c != DRUM_CHANNEL]
    channel_of: dict[int, int] = {}
    for ln in lanes:
        if not ln.drums and ln.track not in channel_of:
            channel_of[ln.track] = free[len(channel_of) % len(free)]
    for k, ln in enumerate(lanes, start=1):
        body.append(f"V:{k}")
        if ln.drums:
            body.append(f"%%MIDI channel {DRUM_CHANNEL}")
        else:
            body += [f"%%MIDI channel {channel_of[ln.track]}", f"%%MIDI program {ln.program}"]
        body.extend(_voice_lines(ln, bars, fifths, tempo_at if k == 1 else {}))
    scale = TICKS_PER_QUARTER // BASE
    played = [
        PlayedTrack(
            ln.name,
            DRUM_CHANNEL - 1 if ln.drums else channel_of[ln.track] - 1,
            None if ln.drums else ln.program,
            [(s * scale, e * scale, p) for s, e, ps in ln.events for p in ps],
        )
        for ln in lanes
    ]
    return Conversion(
        played=played,
        abc="\n".join(head + body) + "\n",
        grid=grid_name,
        voices=len(lanes),
        tracks=len(tracks),
        drums=any(ln.drums for ln in lanes),
        tempo_qpm=tempo,
        meter=f"{meter0[0]}/{meter0[1]}",
        key=key_name,
        bars=len(bars),
        dropped=dropped,
    )


def _voices(
    pitched: list[tuple[str, int, bool, list[tuple[int, int, int]]]],
    tracks: list[tuple[str, int, bool, list[tuple[int, int, int]]]],
    q: Any,
    step: int,
    voices_per_track: int,
    max_voices: int,
) -> tuple[list[_Lane], list[str]]:
    lanes: list[_Lane] = []
    dropped: list[str] = []
    has_drums = any(t[2] for t in tracks)
    for ti, (name, prog, drums, notes) in enumerate(pitched + [t for t in tracks if t[2]]):
        cap = max_voices - (1 if has_drums and not drums else 0)  # room is kept for the drums' voice
        qn: list[Note] = []
        for s, e, p in notes:
            qs = q(s)
            qn.append((qs, max(qs + step, q(e)), p))
        label = name or ("Drums" if drums else f"Track {len(lanes) + 1} (program {prog})")
        new = _lanes_of(qn, label, prog, drums, 1 if drums else voices_per_track)
        for ln in new:
            ln.track = ti
        room = cap - len(lanes)
        if len(new) > room:
            if room <= 0:
                dropped.append(f"track '{label}' ({len(notes)} notes): more than {max_voices} voices")
                continue
            lost = sum(len(ev[2]) for ln in new[room:] for ev in ln.events)
            dropped.append(
                f"{len(new) - room} voice(s) of track '{label}' ({lost} notes): more than {max_voices} voices"
            )
            new = new[:room]
        lanes.extend(new)
    return lanes, dropped


def _median_pitch(lane: _Lane) -> float:
    ps = sorted(p for ev in lane.events for p in ev[2])
    return ps[len(ps) // 2] if ps else 60


def _tempo_changes(tempos: list[tuple[int, float]], bars: list[Bar], first: float) -> dict[int, int]:
    """Bar index -> tempo (qpm, rounded) where the tempo changes by at least 1 bpm, at the bar it falls in."""
    import bisect

    at_bar: dict[int, int] = {}
    starts = [b[0] for b in bars]
    for at, qpm in tempos:
        if at > 0:
            at_bar[max(0, bisect.bisect_right(starts, at) - 1)] = round(qpm)
    result: dict[int, int] = {}
    current = round(first)
    for i in sorted(at_bar):
        if at_bar[i] != current:
            result[i] = current = at_bar[i]
    return result


def _is_triplet(x: int) -> bool:
    """Whether a time (1/48 quarter note) falls off the straight grids (a multiple of 1/3 of a 1/16 quarter)."""
    return x % 3 != 0


def _voice_lines(lane: _Lane, bars: list[Bar], fifths: int, tempo_at: dict[int, int], per_line: int = 4) -> list[str]:
    """The voice's music, bar by bar. A beat (quarter note) with a boundary off the straight grid is written as
    a tuplet ``(3:2:n``, its lengths in units of 2/3 of a sixteenth; notes are split (tied) at such beats."""
    speller = _Speller(fifths)
    events = lane.events
    ei = 0
    carry: tuple[int, list[int]] | None = None  # (end, pitches) of a chord tied over the bar line
    lines: list[str] = []
    line: list[str] = []
    prev_meter = bars[0][2]
    for bi, (bstart, blen, meter) in enumerate(bars):
        bend = bstart + blen
        segs: list[tuple[int, int, list[int], bool]] = []  # start, stop, pitches (empty: rest), tied on
        t = bstart
        if carry is not None:
            cend, cp = carry
            stop = min(cend, bend)
            segs.append((t, stop, cp, cend > bend))
            carry = (cend, cp) if cend > bend else None
            t = stop
        while carry is None and ei < len(events) and events[ei][0] < bend:
            s, e, pitches = events[ei]
            ei += 1
            s = max(s, t)
            if e <= s:
                continue
            if s > t:
                segs.append((t, s, [], False))
            stop = min(e, bend)
            segs.append((s, stop, pitches, e > bend))
            if e > bend:
                carry = (e, pitches)
            t = stop
        if t < bend:
            segs.append((t, bend, [], False))
        tokens: list[str] = []
        if meter != prev_meter:
            tokens.append(f"[M:{meter[0]}/{meter[1]}]")
            prev_meter = meter
        if bi in tempo_at:
            tokens.append(f"[Q:1/4={tempo_at[bi]}]")
        speller.new_bar()
        tokens.extend(_bar_tokens(segs, bstart, bend, speller))
        line.append(" ".join(tokens))
        if len(line) == per_line:
            lines.append(" | ".join(line) + " |")
            line = []
    if line:
        lines.append(" | ".join(line) + " |")
    if lines:
        lines[-1] = lines[-1][:-1] + "|]"
    return lines


def _bar_tokens(segs: list[tuple[int, int, list[int], bool]], bstart: int, bend: int, speller: _Speller) -> list[str]:
    triplet_beats = set()
    for s, e, _p, _t in segs:
        for x in (s, e):
            if _is_triplet(x - bstart):
                triplet_beats.add((x - bstart) // BASE)
    if triplet_beats:  # split every segment at the edges of tuplet beats
        edges = sorted(
            {bstart + b * BASE for b in triplet_beats} | {min(bend, bstart + (b + 1) * BASE) for b in triplet_beats}
        )
        split: list[tuple[int, int, list[int], bool]] = []
        for s, e, p, tie in segs:
            cuts = [x for x in edges if s < x < e]
            points = [s, *cuts, e]
            for k in range(len(points) - 1):
                last = k == len(points) - 2
                split.append((points[k], points[k + 1], p, tie if last else bool(p)))
        segs = split
    out: list[str] = []
    k = 0
    while k < len(segs):
        s = segs[k][0]
        beat = (s - bstart) // BASE
        if beat in triplet_beats:
            beat_end = min(bend, bstart + (beat + 1) * BASE)
            group = []
            while k < len(segs) and segs[k][0] < beat_end:
                group.append(segs[k])
                k += 1
            out.append(f"(3:2:{len(group)}" + "".join(_token(g, speller, True) for g in group))
            continue
        out.append(_token(segs[k], speller, False))
        k += 1
    return out


@functools.lru_cache(maxsize=4096)
def _length_of(span: int, in_tuplet: bool) -> str:
    """The length text of ``span`` (1/48 quarter notes) with L:1/16, inside a ``(3:2`` tuplet or not."""
    units = Fraction(span, BASE // 4)
    return length_text(units * Fraction(3, 2) if in_tuplet else units)


def _token(seg: tuple[int, int, list[int], bool], speller: _Speller, in_tuplet: bool) -> str:
    """One note, chord or rest; lengths in sixteenths (L:1/16), times 3/2 inside a ``(3:2`` tuplet."""
    s, e, pitches, tie = seg
    length = _length_of(e - s, in_tuplet)
    if not pitches:
        return "z" + length
    mark = "-" if tie else ""
    if len(pitches) == 1:
        return speller.write(pitches[0]) + length + mark
    return "[" + "".join(speller.write(p) + mark for p in pitches) + "]" + length
