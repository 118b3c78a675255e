"""The 8 MusPy metrics plus checker facts; never NaN."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ABC_DIR, GOOD_ABC

from image2music.tools.music.abcparse import read_tune
from image2music.tools.music.metrics import METRIC_MEANINGS, MUSPY_METRICS, describe_metrics, tune_metrics


def test_all_metrics_present_and_meaningful() -> None:
    m = tune_metrics(read_tune(GOOD_ABC))
    assert m is not None
    for name in MUSPY_METRICS:
        assert name in m and m[name] is not None, name
        assert name in METRIC_MEANINGS
    assert m["pitch_range"] == 79 - 59  # B, (59) .. g (79)
    assert m["n_pitch_classes_used"] == 7
    assert m["polyphony"] == 1.0
    assert m["scale_consistency"] == 1.0
    assert m["bar_consistency"] == 1.0
    assert m["voices"] == 1 and m["key"] == "G" and m["meter"] == "4/4" and m["tempo_qpm"] == 80.0
    assert m["duration_seconds"] == 21.0  # 7 bars of 4 beats at 80 bpm


def test_failed_tune_has_no_metrics() -> None:
    assert tune_metrics(read_tune("X:1\nT:t\nM:4/4\nL:1/8\nK:Zmaj\nC|\n")) is None


def test_bar_consistency_counts_flagged_bars() -> None:
    m = tune_metrics(read_tune((ABC_DIR / "fig2_bars.abc").read_text()))
    assert m is not None and 0 < m["bar_consistency"] < 0.5


def test_rest_only_metrics_are_none_not_nan(tmp_path: Path) -> None:
    import mido

    from image2music.tools.music.metrics import muspy_metrics

    mid = mido.MidiFile()
    mid.tracks.append(mido.MidiTrack())
    p = tmp_path / "empty.mid"
    mid.save(str(p))
    m = muspy_metrics(p)
    assert "NaN" not in json.dumps(m)
    # every metric is present: the ones MusPy cannot compute on silence are None, not missing and not NaN
    assert set(m) == set(MUSPY_METRICS) and m["polyphony"] is None and m["pitch_entropy"] is None


def test_describe_metrics_lines() -> None:
    text = describe_metrics({"pitch_range": 12, "polyphony": None})
    assert "pitch_range = 12: distance in semitones" in text
    assert "polyphony = not available" in text


def test_numpy_metrics_equal_muspys_own_functions() -> None:
    """played_metrics reimplements MusPy's 8 definitions for speed: equal to MusPy on corpus tunes (and on the
    real MIDI files of the development set, when present)."""

    from image2music.tools.music.convert import TICKS_PER_QUARTER, played_tracks
    from image2music.tools.music.corpus import sample_corpus
    from image2music.tools.music.differential import SHARED_CORPORA
    from image2music.tools.music.metrics import _metrics_of, muspy_music, played_metrics
    from image2music.tools.music.midi2abc import KB_LIMITS, MidiConversionError, midi_to_abc

    tunes = [read_tune(t.abc) for t in sample_corpus(60, seed=11)]
    dev = SHARED_CORPORA / "midi"
    for f in sorted(dev.glob("*.mid"))[::6] if dev.is_dir() else []:
        try:
            tunes.append(read_tune(midi_to_abc(f).abc, KB_LIMITS))
        except MidiConversionError:
            pass
    tunes.append(read_tune("X:1\nT:t\nM:4/4\nL:1/4\nK:C\nV:1\nC [CE]2 z|z4|\nV:2\n%%MIDI channel 10\nC,4|C,4|]\n"))
    compared = 0
    for tune in tunes:
        if not tune.ok:
            continue
        played = played_tracks(tune)
        assert played_metrics(played, TICKS_PER_QUARTER) == _metrics_of(muspy_music(played, TICKS_PER_QUARTER))
        compared += 1
    assert compared >= 50


def test_one_table_of_metrics() -> None:
    """A version's metrics are exactly the table's rows, and the targets, bounds and fallback bands are read
    from it (before: four tables, and a metric missing from one was a KeyError at run time)."""
    from image2music.tools.music.metrics import METRICS
    from image2music.tools.music.targets import BOUNDS, FALLBACK_BANDS, MIN_HALF_WIDTH, TARGET_METRICS

    m = tune_metrics(read_tune(GOOD_ABC))
    assert m is not None and list(m) == list(METRICS)
    assert set(TARGET_METRICS) == set(MIN_HALF_WIDTH) == set(BOUNDS) == set(MUSPY_METRICS)
    assert set(FALLBACK_BANDS) <= set(MUSPY_METRICS) and len(MUSPY_METRICS) == 8
