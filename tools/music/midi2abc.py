"""MIDI -> ABC, once, at ingest: midi2abc (Debian ``abcmidi``) when installed, else a pure-Python writer.

The pure-Python writer reads notes with mido, quantises them to sixteenth notes, keeps the busiest tracks
as voices (chords where notes start together) and writes bars in the file's meter. It is made for retrieval
examples a model learns from, not for engraving: long songs are cut to ``max_bars``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import mido
from image2music.tools.music.abcparse import read_tune


class MidiConversionError(ValueError):
    """A MIDI file could not be turned into ABC; the message is the reason."""


_NAMES = ["C", "^C", "D", "^D", "E", "F", "^F", "G", "^G", "A", "^A", "B"]


def abc_pitch(midi: int) -> str:
    """ABC spelling with explicit accidentals: 60 -> C, 61 -> ^C, 72 -> c, 48 -> C,"""
    name = _NAMES[midi % 12]
    octave = midi // 12 - 1  # MIDI 60 = C4
    acc, letter = (name[:-1], name[-1])
    if octave >= 5:
        return acc + letter.lower() + "'" * (octave - 5)
    return acc + letter + "," * (4 - octave)


def _length(units: int) -> str:
    """A length in sixteenths with L:1/16."""
    return "" if units == 1 else str(units)


def _read_notes(path: Path) -> tuple[dict[int, list[tuple[int, int, int]]], int, tuple[int, int], float]:
    """Notes per track as (start tick, end tick, pitch), ticks per beat, meter, tempo (qpm)."""
    try:
        mid = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise MidiConversionError(f"unreadable MIDI ({type(e).__name__}: {e})") from e
    tpb = mid.ticks_per_beat or 480
    meter = (4, 4)
    tempo = 120.0
    tracks: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    meter_seen = tempo_seen = False
    for ti, track in enumerate(mid.tracks):
        now = 0
        open_notes: dict[tuple[int, int], int] = {}
        for msg in track:
            now += msg.time
            if msg.type == "time_signature" and not meter_seen:
                meter = (msg.numerator, msg.denominator)
                meter_seen = True
            elif msg.type == "set_tempo" and not tempo_seen:
                tempo = float(mido.tempo2bpm(msg.tempo))
                tempo_seen = True
            elif msg.type == "note_on" and msg.velocity > 0:
                if msg.channel == 9:
                    continue  # drums have no pitch
                open_notes[(msg.channel, msg.note)] = now
            elif msg.type in ("note_off", "note_on"):
                key = (msg.channel, msg.note)
                if key in open_notes:
                    start = open_notes.pop(key)
                    if now > start:
                        tracks[ti].append((start, now, msg.note))
    return tracks, tpb, meter, tempo


def python_midi_to_abc(path: Path, title: str = "", max_bars: int = 64, max_voices: int = 3) -> str:
    """The pure-Python route (no external program)."""
    tracks, tpb, meter, tempo = _read_notes(path)
    if not tracks:
        raise MidiConversionError("no pitched notes")
    q = max(1, tpb // 4)  # one sixteenth in ticks
    bar_units = int(Fraction(meter[0], meter[1]) * 16)
    if bar_units <= 0:
        raise MidiConversionError(f"unusable time signature {meter[0]}/{meter[1]}")
    busiest = sorted(tracks, key=lambda t: -len(tracks[t]))[:max_voices]
    limit = bar_units * max_bars
    lines = ["X:1", f"T:{title or path.stem}", f"M:{meter[0]}/{meter[1]}", "L:1/16", f"Q:1/4={round(tempo)}", "K:C"]
    voices = 0
    for vi, t in enumerate(sorted(busiest), start=1):
        onsets: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for start, end, pitch in tracks[t]:
            s = round(start / q)
            e = max(s + 1, round(end / q))
            if s < limit:
                onsets[s].append((min(e, limit), pitch))
        if not onsets:
            continue
        times = sorted(onsets)
        events: list[tuple[int, int, list[int]]] = []  # start, length, pitches (empty = rest)
        cursor = 0
        for i, s in enumerate(times):
            nxt = times[i + 1] if i + 1 < len(times) else limit
            if s > cursor:
                events.append((cursor, s - cursor, []))
            end = min(max(e for e, _ in onsets[s]), nxt)
            events.append((s, max(1, end - s), sorted({p for _, p in onsets[s]})))
            cursor = s + max(1, end - s)
        last_bar_end = -(-cursor // bar_units) * bar_units
        if cursor < last_bar_end:
            events.append((cursor, last_bar_end - cursor, []))
        body: list[str] = []
        bar_pos = 0
        bar_tokens: list[str] = []
        for _start, length, pitches in events:
            remaining = length
            while remaining > 0:
                take = min(remaining, bar_units - bar_pos)
                tie = "-" if pitches and remaining > take else ""
                if pitches:
                    notes = [abc_pitch(p) for p in pitches]
                    tok = notes[0] if len(notes) == 1 else "[" + "".join(notes) + "]"
                    bar_tokens.append(tok + _length(take) + tie)
                else:
                    bar_tokens.append("z" + _length(take))
                bar_pos += take
                remaining -= take
                if bar_pos == bar_units:
                    body.append(" ".join(bar_tokens) + " |")
                    bar_tokens = []
                    bar_pos = 0
        if bar_tokens:
            body.append(" ".join(bar_tokens) + " |")
        lines.append(f"V:{vi}")
        for k in range(0, len(body), 4):
            lines.append(" ".join(body[k : k + 4]))
        voices += 1
    if not voices:
        raise MidiConversionError("no notes in the first bars")
    return "\n".join(lines) + "\n"


def exe_midi_to_abc(path: Path, max_bars: int = 64, timeout_s: float = 30.0) -> str:
    exe = shutil.which("midi2abc")
    if exe is None:
        raise MidiConversionError("midi2abc is not installed")
    with tempfile.TemporaryDirectory(prefix="i2m-midi2abc-") as d:
        out = Path(d) / "t.abc"
        try:
            proc = subprocess.run(
                [exe, "-f", str(path), "-o", str(out), "-b", str(max_bars), "-gk", "-ga"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=d,
            )
        except subprocess.TimeoutExpired as e:
            raise MidiConversionError(f"midi2abc took longer than {timeout_s:g} s") from e
        if not out.exists() or out.stat().st_size == 0:
            raise MidiConversionError(f"midi2abc wrote nothing: {(proc.stdout + proc.stderr).strip()[:200]}")
        return out.read_text(encoding="utf-8", errors="replace")


def midi_to_abc(path: Path, title: str = "", max_bars: int = 64, prefer_exe: bool = True) -> tuple[str, str]:
    """(ABC, route) for a MIDI file; the ABC passes our checker or MidiConversionError is raised."""
    errors = []
    routes = (["midi2abc"] if prefer_exe and shutil.which("midi2abc") else []) + ["python"]
    for route in routes:
        try:
            abc = exe_midi_to_abc(path, max_bars) if route == "midi2abc" else python_midi_to_abc(path, title, max_bars)
        except MidiConversionError as e:
            errors.append(f"{route}: {e}")
            continue
        tune = read_tune(abc)
        if tune.ok:
            if title and route == "midi2abc":
                abc = abc.replace("\nT:", f"\nT:{title}\nT:", 1) if "\nT:" in abc else abc
            return abc, route
        errors.append(f"{route}: checker errors: {tune.errors[0].render()}")
    raise MidiConversionError("; ".join(errors))
