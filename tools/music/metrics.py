"""The paper's eight MusPy metrics, plus what the checker knows, with a one-line meaning for each.

MusPy's own ABC reader is broken with music21 10, so the route is ABC -> our MIDI -> ``muspy.read_midi``.
Values that are not available (an empty tune, a NaN from MusPy) are ``None``, never NaN.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image2music.tools.music.abcheader import is_minor_key
from image2music.tools.music.abcparse import Tune


@dataclass(frozen=True)
class Metric:
    """One measure of a tune: what it means and, for the paper's eight, how a run targets it."""

    name: str
    meaning: str
    label: str = ""
    """A short column label (``i2m eval``'s tables); the name where empty."""
    target: tuple[float, float, float] | None = None
    """For the eight targeted metrics: (the least half-width of a band, lowest, highest possible value)."""
    fallback: tuple[float, float] | None = None
    """The band when nothing was retrieved (only what holds for almost any tonal piece)."""


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("pitch_range", "distance in semitones between the lowest and the highest note",
               target=(5, 0.0, 127.0), fallback=(5, 36)),
        Metric("n_pitches_used", "how many different pitches occur", target=(4, 1.0, 128.0)),
        Metric("n_pitch_classes_used", "how many of the 12 pitch classes (C, C#, ... B) occur",
               target=(2, 1.0, 12.0), fallback=(4, 12)),
        Metric("polyphony", "average number of notes sounding together when anything sounds (1 = one line)",
               target=(0.5, 1.0, 16.0)),
        Metric("scale_consistency", "share of notes that fit the best-matching major or minor scale (1 = all)",
               label="Scale consistency", target=(0.08, 0.0, 1.0), fallback=(0.75, 1.0)),
        Metric("pitch_entropy", "how evenly the pitches are used, in bits (low = a few pitches dominate)",
               target=(0.5, 0.0, 7.0)),
        Metric("pitch_class_entropy", "how evenly the 12 pitch classes are used, in bits (max 3.58 = atonal "
               "equality)", label="PCE", target=(0.4, 0.0, 3.585)),
        Metric("empty_beat_rate", "share of beats in which no note sounds (silence)", label="EBR",
               target=(0.1, 0.0, 1.0), fallback=(0.0, 0.35)),
        Metric("bar_consistency", "share of bars whose length matches the meter", label="Bar consistency"),
        Metric("duration_seconds", "length of the music in seconds, repeats played", label="Duration (s)"),
        Metric("key", "declared key (K:)"),
        Metric("meter", "declared meter (M:)"),
        Metric("tempo_qpm", "tempo in quarter notes per minute (Q:)"),
        Metric("voices", "number of voices (parts)"),
    )
}  # fmt: skip
"""Every metric a version gets, in display order: the one table that targets, feedback, the terminal, CSV, the
report and ``i2m eval`` read (a new metric is a row here)."""

MUSPY_METRICS = tuple(name for name, m in METRICS.items() if m.target is not None)
"""The paper's eight MusPy metrics: the targeted ones."""
METRIC_MEANINGS: dict[str, str] = {name: m.meaning for name, m in METRICS.items()}


def _clean(x: Any) -> float | int | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    return int(f) if isinstance(x, int) or (float(f).is_integer() and not isinstance(x, float)) else round(f, 4)


def scratch_caches() -> None:
    """muspy imports matplotlib, which writes a font cache under ~/.cache: keep it in the system temp dir."""
    if "MPLCONFIGDIR" not in os.environ:
        d = Path(tempfile.gettempdir()) / f"i2m-matplotlib-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        d.mkdir(parents=True, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = str(d)


def muspy_metrics(midi_path: Path) -> dict[str, float | int | None]:
    """The 8 MusPy metrics of a MIDI file; ``None`` where MusPy has no value (e.g. an empty song)."""
    scratch_caches()
    import muspy

    return _metrics_of(muspy.read_midi(str(midi_path)))


def muspy_music(played: list[Any], resolution: int) -> Any:
    """A ``muspy.Music`` of played tracks (what ``muspy.read_midi`` makes of the written file)."""
    scratch_caches()
    import muspy

    tracks = []
    for t in played:
        notes = [muspy.Note(time=on, pitch=p, duration=off - on, velocity=80) for on, off, p in sorted(t.notes)]
        tracks.append(muspy.Track(program=t.program or 0, is_drum=t.channel == 9, name=t.name, notes=notes))
    return muspy.Music(resolution=resolution, tracks=tracks)


def played_metrics(played: list[Any], resolution: int) -> dict[str, float | int | None]:
    """MusPy's 8 metrics, computed with numpy exactly as ``muspy.metrics`` defines them (pianoroll polyphony
    as merged intervals, beats as a difference array), 10-100x faster on long pieces; equal to MusPy's own
    functions (``tests/test_tools/test_metrics.py`` compares them on corpus tunes and real MIDI files)."""
    import numpy as np

    pitched = [(on, off, p) for t in played if t.channel != 9 for on, off, p in t.notes]
    every = [(on, off) for t in played for on, off, _p in t.notes]
    out: dict[str, float | int | None] = dict.fromkeys(MUSPY_METRICS)
    if not every:
        out.update(pitch_range=0, n_pitches_used=0, n_pitch_classes_used=0)
        return out
    pitches = np.array([p for _on, _off, p in pitched], dtype=np.int64)
    out["pitch_range"] = int(pitches.max() if len(pitches) else 0) - int(pitches.min() if len(pitches) else 127)
    out["n_pitches_used"] = int(len(np.unique(pitches)))
    out["n_pitch_classes_used"] = int(len(np.unique(pitches % 12)))
    if len(pitches):
        counts = np.bincount(pitches, minlength=128).astype(float)
        pc_counts = np.bincount(pitches % 12, minlength=12).astype(float)
        out["pitch_entropy"] = _clean(_entropy(counts / counts.sum()))
        out["pitch_class_entropy"] = _clean(_entropy(pc_counts / pc_counts.sum()))
        major = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)
        minor = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)
        best = 0.0
        for scale in (major, minor):
            for root in range(12):
                rate = float(pc_counts[np.roll(scale, root)].sum()) / len(pitches)
                best = max(best, rate)
        out["scale_consistency"] = _clean(best)
        covered_by_pitch = 0
        spans: list[tuple[int, int]] = []
        by_pitch: dict[int, list[tuple[int, int]]] = {}
        for on, off, p in pitched:
            if off > on:
                by_pitch.setdefault(p, []).append((on, off))
        for ivs in by_pitch.values():
            merged = _merge(ivs)
            covered_by_pitch += sum(b - a for a, b in merged)
            spans.extend(merged)
        union = sum(b - a for a, b in _merge(spans))
        out["polyphony"] = _clean(covered_by_pitch / union) if union >= 1 else None
    length = max(off for _on, off in every)
    if length >= 1:
        n_beats = length // resolution + 1
        diff = np.zeros(n_beats + 1, dtype=np.int64)
        ons = np.array([on // resolution for on, _off in every])
        offs = np.array([off // resolution for _on, off in every])
        np.add.at(diff, ons, 1)
        np.add.at(diff, offs + 1, -1)
        count = int(np.count_nonzero(np.cumsum(diff)[:n_beats] > 0))
        out["empty_beat_rate"] = _clean(1 - (count / n_beats))
    return out


def _merge(ivs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ivs):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _entropy(prob: Any) -> float:
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.nansum(prob * np.log2(prob)))


def _metrics_of(music: Any) -> dict[str, float | int | None]:
    import muspy

    out: dict[str, float | int | None] = {}
    for name in MUSPY_METRICS:
        fn = getattr(muspy, name)
        try:
            out[name] = _clean(fn(music))
        except (ValueError, ZeroDivisionError, IndexError):
            out[name] = None
    return out


def bar_consistency(tune: Tune) -> float | None:
    """Share of bars (all voices) whose length matches the meter; ``None`` in free meter."""
    total = sum(1 for v in tune.voices.values() for b in v.bars if b.length > 0 and b.expected is not None)
    flagged = sum(1 for w in tune.warnings if w.bar is not None and w.code == "bar-length")
    if total == 0:
        return None
    # pickups and closing bars are not wrong: count as consistent all bars the checker did not flag
    return round((total - flagged) / total, 4)


def played_seconds(played: list[Any], tempo_qpm: float) -> float:
    """Length in seconds of played tracks (``PlayedTrack``s: repeats played) at ``tempo_qpm``."""
    from image2music.tools.music.convert import TICKS_PER_QUARTER

    end = max((off for t in played for _on, off, _p in t.notes), default=0)
    return round(end / TICKS_PER_QUARTER * 60 / tempo_qpm, 3)


Metrics = dict[str, float | int | str | None]
"""A tune's measured values by name: the 8 MusPy metrics, bar consistency, duration (floats; None: not
measurable), key, meter (text), tempo and voices."""


def tune_metrics(tune: Tune) -> Metrics | None:
    """All metrics of a valid tune, or ``None`` when the tune has errors (not available)."""
    if not tune.ok:
        return None
    from image2music.tools.music.convert import TICKS_PER_QUARTER, played_tracks

    # MusPy's 8 metrics on the notes the MIDI writer writes (no file, no MIDI parse)
    played = played_tracks(tune)
    m: Metrics = dict(played_metrics(played, TICKS_PER_QUARTER))
    m["bar_consistency"] = bar_consistency(tune)
    m["duration_seconds"] = played_seconds(played, tune.tempo_qpm)
    m["key"] = tune.key
    m["meter"] = tune.meter_text
    m["tempo_qpm"] = round(tune.tempo_qpm, 2)
    m["voices"] = len(tune.voices)
    return m


def describe_metrics(metrics: Metrics) -> str:
    """Metric values with their meanings, one per line, for prompts."""
    lines = []
    for name, value in metrics.items():
        meaning = METRIC_MEANINGS.get(name, "")
        shown = "not available" if value is None else value
        lines.append(f"- {name} = {shown}: {meaning}")
    return "\n".join(lines)


def entry_metrics(tune: Tune) -> dict[str, float | int | str]:
    """What a knowledge-base entry stores about its music (for targets): the 8 MusPy metrics, tempo, meter,
    key and mode, length. Chroma metadata holds no None: missing values are left out."""
    from image2music.tools.music.convert import played_tracks

    bars = max((len(v.bars) for v in tune.voices.values()), default=0)
    if not tune.ok:
        return stored_metrics(None, tempo_qpm=None, key=tune.key or "", meter=tune.meter_text or "", bars=bars)
    return stored_metrics(
        played_tracks(tune),
        tempo_qpm=round(tune.tempo_qpm, 2),
        key=tune.key or "",
        meter=tune.meter_text or "",
        bars=bars,
    )


def stored_metrics(
    played: list[Any] | None, *, tempo_qpm: float | None, key: str, meter: str, bars: int
) -> dict[str, float | int | str]:
    """An entry's stored values from the notes it plays (``PlayedTrack``s at ``TICKS_PER_QUARTER``) and its
    header; ``played`` None: only the header values (a tune with errors)."""
    from image2music.tools.music.convert import TICKS_PER_QUARTER

    out: dict[str, float | int | str] = {}
    if played is not None and tempo_qpm:
        m: dict[str, Any] = dict(played_metrics(played, TICKS_PER_QUARTER))
        m["duration_seconds"] = played_seconds(played, tempo_qpm)
        m["tempo_qpm"] = tempo_qpm
        m["voices"] = len(played)
        out = {k: v for k in (*MUSPY_METRICS, "duration_seconds", "tempo_qpm", "voices") if (v := m.get(k)) is not None}
    out["key"] = key
    out["meter"] = meter
    minor = is_minor_key(key)
    out["mode"] = "" if minor is None else "minor" if minor else "major"
    out["bars"] = bars
    return out
