"""The paper's eight MusPy metrics, plus what the checker knows, with a one-line meaning for each.

MusPy's own ABC reader is broken with music21 10, so the route is ABC -> our MIDI -> ``muspy.read_midi``.
Values that are not available (an empty tune, a NaN from MusPy) are ``None``, never NaN.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from image2music.tools.music.abcheader import is_minor_key
from image2music.tools.music.abcparse import Tune

MUSPY_METRICS = (
    "pitch_range",
    "n_pitches_used",
    "n_pitch_classes_used",
    "polyphony",
    "scale_consistency",
    "pitch_entropy",
    "pitch_class_entropy",
    "empty_beat_rate",
)

METRIC_MEANINGS: dict[str, str] = {
    "pitch_range": "distance in semitones between the lowest and the highest note",
    "n_pitches_used": "how many different pitches occur",
    "n_pitch_classes_used": "how many of the 12 pitch classes (C, C#, ... B) occur",
    "polyphony": "average number of notes sounding together when anything sounds (1 = one line)",
    "scale_consistency": "share of notes that fit the best-matching major or minor scale (1 = all)",
    "pitch_entropy": "how evenly the pitches are used, in bits (low = a few pitches dominate)",
    "pitch_class_entropy": "how evenly the 12 pitch classes are used, in bits (max 3.58 = atonal equality)",
    "empty_beat_rate": "share of beats in which no note sounds (silence)",
    "bar_consistency": "share of bars whose length matches the meter",
    "duration_seconds": "length of the music in seconds, repeats played",
    "key": "declared key (K:)",
    "meter": "declared meter (M:)",
    "tempo_qpm": "tempo in quarter notes per minute (Q:)",
    "voices": "number of voices (parts)",
}


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


def _scratch_caches() -> None:
    """muspy imports matplotlib, which writes a font cache under ~/.cache: keep it in the system temp dir."""
    if "MPLCONFIGDIR" not in os.environ:
        d = Path(tempfile.gettempdir()) / f"i2m-matplotlib-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        d.mkdir(parents=True, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = str(d)


def muspy_metrics(midi_path: Path) -> dict[str, float | int | None]:
    """The 8 MusPy metrics of a MIDI file; ``None`` where MusPy has no value (e.g. an empty song)."""
    _scratch_caches()
    import muspy

    return _metrics_of(muspy.read_midi(str(midi_path)))


def tune_muspy_metrics(tune: Tune, played: list[Any] | None = None) -> dict[str, float | int | None]:
    """The 8 MusPy metrics of the tune's MIDI, computed by MusPy on the notes the MIDI writer would write
    (no file, no MIDI parse: 10-30x faster than ``muspy_metrics`` on the written file, and equal to it)."""
    _scratch_caches()
    import muspy
    from image2music.tools.music.convert import TICKS_PER_QUARTER, played_tracks

    tracks = []
    for t in played if played is not None else played_tracks(tune):
        notes = [muspy.Note(time=on, pitch=p, duration=off - on, velocity=80) for on, off, p in sorted(t.notes)]
        tracks.append(muspy.Track(program=t.program or 0, is_drum=t.channel == 9, name=t.name, notes=notes))
    return _metrics_of(muspy.Music(resolution=TICKS_PER_QUARTER, tracks=tracks))


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


def duration_seconds(tune: Tune, played: list[Any] | None = None) -> float:
    """Length in seconds, repeats played, at the declared tempo."""
    from image2music.tools.music.convert import TICKS_PER_QUARTER, played_tracks

    end = max((off for t in played or played_tracks(tune) for _on, off, _p in t.notes), default=0)
    return round(end / (4 * TICKS_PER_QUARTER) * tune.seconds_per_whole, 3)


def tune_metrics(tune: Tune) -> dict[str, Any] | None:
    """All metrics of a valid tune, or ``None`` when the tune has errors (not available)."""
    if not tune.ok:
        return None
    from image2music.tools.music.convert import played_tracks

    played = played_tracks(tune)
    m: dict[str, Any] = dict(tune_muspy_metrics(tune, played))
    m["bar_consistency"] = bar_consistency(tune)
    m["duration_seconds"] = duration_seconds(tune, played)
    m["key"] = tune.key
    m["meter"] = tune.meter_text
    m["tempo_qpm"] = round(tune.tempo_qpm, 2)
    m["voices"] = len(tune.voices)
    return m


def describe_metrics(metrics: dict[str, Any]) -> str:
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
    m = tune_metrics(tune) or {}
    out: dict[str, float | int | str] = {
        k: v for k in (*MUSPY_METRICS, "duration_seconds", "tempo_qpm", "voices") if (v := m.get(k)) is not None
    }
    out["key"] = tune.key or ""
    out["meter"] = tune.meter_text or ""
    minor = is_minor_key(tune.key)
    out["mode"] = "" if minor is None else "minor" if minor else "major"
    out["bars"] = max((len(v.bars) for v in tune.voices.values()), default=0)
    return out
