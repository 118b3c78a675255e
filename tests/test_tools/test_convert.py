"""MIDI, MusicXML, WAV and SVG from checked tunes."""

from __future__ import annotations

import shutil
from pathlib import Path

import mido
import muspy
import pytest
from conftest import ABC_DIR, GOOD_ABC

from image2music.tools.music.abcparse import read_tune
from image2music.tools.music.convert import (
    ConversionError,
    play_order,
    write_midi,
    write_musicxml,
    write_svg,
    write_wav,
)


def _midi(tmp_path: Path, abc: str) -> mido.MidiFile:
    p = write_midi(read_tune(abc), tmp_path / "t.mid")
    return mido.MidiFile(str(p))


def _tempo(mid: mido.MidiFile) -> float:
    for msg in mid.tracks[0]:
        if msg.type == "set_tempo":
            return float(mido.tempo2bpm(msg.tempo))
    raise AssertionError("no tempo")


@pytest.mark.parametrize(("q", "bpm"), [("Q:1/4=96", 96), ("Q:96", 48), ("Q:3/8=60", 90), ('Q:"Allegro" 1/2=60', 120)])
def test_tempo_from_q_in_both_forms(tmp_path: Path, q: str, bpm: float) -> None:
    # legacy Q:96 counts unit notes (L:1/8) per minute: 96 eighths = 48 quarters
    abc = f"X:1\nT:t\nM:4/4\nL:1/8\n{q}\nK:C\nCDEF GABc|\n"
    assert _tempo(_midi(tmp_path, abc)) == pytest.approx(bpm, abs=0.01)


def test_one_track_per_voice_with_programs(tmp_path: Path) -> None:
    mid = _midi(tmp_path, (ABC_DIR / "voices_mismatch.abc").read_text())
    assert len(mid.tracks) == 3  # tempo track + two voices
    programs = [m.program for t in mid.tracks for m in t if m.type == "program_change"]
    assert programs == [0, 32]
    names = [m.name for t in mid.tracks[1:] for m in t if m.type == "track_name"]
    assert names == ["Right hand", "Left hand"]


def test_midi_reads_back_with_muspy(tmp_path: Path) -> None:
    p = write_midi(read_tune(GOOD_ABC), tmp_path / "good.mid")
    music = muspy.read_midi(str(p))
    notes = [n for t in music.tracks for n in t.notes]
    assert len(notes) == 23
    assert notes[0].pitch == 67  # G above middle C


def test_repeats_and_endings_are_played(tmp_path: Path) -> None:
    tune = read_tune("X:1\nT:t\nM:2/4\nL:1/4\nK:C\n|: C D | E F |1 G A :|2 c2 |]\n")
    bars = tune.voices[next(iter(tune.voices))].bars
    assert play_order(bars) == [0, 1, 2, 0, 1, 3]
    mid = _midi(tmp_path, "X:1\nT:t\nM:2/4\nL:1/4\nK:C\n|: C D | E F |1 G A :|2 c2 |]\n")
    pitches = [m.note for m in mid.tracks[1] if m.type == "note_on" and m.velocity > 0]
    assert pitches == [60, 62, 64, 65, 67, 69, 60, 62, 64, 65, 72]


def test_ties_merge_into_one_note(tmp_path: Path) -> None:
    mid = _midi(tmp_path, "X:1\nT:t\nM:4/4\nL:1/4\nK:C\nC4- | C2 D2 |]\n")
    ons = [m for m in mid.tracks[1] if m.type == "note_on" and m.velocity > 0]
    assert [m.note for m in ons] == [60, 62]


def test_key_signature_and_bar_accidentals(tmp_path: Path) -> None:
    mid = _midi(tmp_path, "X:1\nT:t\nM:4/4\nL:1/4\nK:D\nF ^G G =F | F4 |]\n")
    pitches = [m.note for m in mid.tracks[1] if m.type == "note_on" and m.velocity > 0]
    assert pitches == [66, 68, 68, 65, 66]


def test_invalid_tune_is_not_converted(tmp_path: Path) -> None:
    with pytest.raises(ConversionError):
        write_midi(read_tune("X:1\nT:t\nM:4/4\nL:1/8\nK:Zmaj\nC|\n"), tmp_path / "x.mid")


def test_musicxml(tmp_path: Path) -> None:
    p = write_musicxml(GOOD_ABC, tmp_path / "m.musicxml")
    assert b"<score-partwise" in p.read_bytes()


@pytest.mark.skipif(shutil.which("abcm2ps") is None, reason="abcm2ps not installed (Debian: abcm2ps)")
def test_svg(tmp_path: Path) -> None:
    import tempfile

    p = write_svg(GOOD_ABC, tmp_path / "m.svg")
    assert p.read_bytes().lstrip().startswith(b"<?xml") or b"<svg" in p.read_bytes()[:500]
    text = p.read_text()
    assert tempfile.gettempdir() not in text and "i2m-abcm2ps" not in text  # no scratch path in its <title>


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_wav(tmp_path: Path) -> None:
    mid = write_midi(read_tune(GOOD_ABC), tmp_path / "m.mid")
    p = write_wav(mid, tmp_path / "m.wav")
    assert p.read_bytes()[:4] == b"RIFF" and p.stat().st_size > 10_000


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_wav_reads_only_the_samples_it_plays_and_sounds_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The render with dynamic sample loading is byte for byte the one with the whole bank in memory, and a
    FluidSynth that does not know the setting (older than 2.0) renders without it."""
    real = shutil.which("fluidsynth")
    mid = write_midi(read_tune(GOOD_ABC), tmp_path / "m.mid")
    lean = write_wav(mid, tmp_path / "lean.wav").read_bytes()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    old = bin_dir / "fluidsynth"  # as FluidSynth 1.x answers a setting it does not have
    old.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in *dynamic-sample-loading*) '
        "echo \"Setting parameter 'synth.dynamic-sample-loading' not found\" >&2; exit 255;; esac\n"
        f'exec "{real}" "$@"\n'
    )
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(str(real)).parent}")
    full = write_wav(mid, tmp_path / "full.wav").read_bytes()
    assert full == lean and len(full) > 10_000
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "dynamic-sample-loading" in calls[0] and "dynamic" not in calls[1]


def test_missing_tools_name_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConversionError, match="abcm2ps"):
        write_svg(GOOD_ABC, tmp_path / "m.svg")
    with pytest.raises(ConversionError, match="fluid-soundfont-gm"):
        write_wav(tmp_path / "m.mid", tmp_path / "m.wav")


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_a_wav_cut_short_is_known(tmp_path: Path) -> None:
    """What a full disk leaves of fluidsynth's output is recognised (it is never renamed to the final name)."""
    from image2music.tools.music.convert import wav_is_complete

    p = write_wav(write_midi(read_tune(GOOD_ABC), tmp_path / "m.mid"), tmp_path / "m.wav")
    data = p.read_bytes()
    assert wav_is_complete(p)
    for cut in (len(data) // 3, len(data) - 1, 40):
        (tmp_path / "cut.wav").write_bytes(data[:cut])
        assert not wav_is_complete(tmp_path / "cut.wav"), cut


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_a_whole_looking_wav_of_part_of_the_tune_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk can leave a WAV whose header agrees with its length but holds only the start of the tune
    (3 MB of 9.6: it plays as a whole 17 s piece instead of 55 s): it never takes the final name, and the reason
    names the folder that is full and its free space."""
    import os
    import wave

    from image2music.tools.music.convert import ConversionError, midi_seconds

    mid = write_midi(read_tune(GOOD_ABC), tmp_path / "m.mid")
    fake = tmp_path / "bin"
    fake.mkdir()
    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as w:  # one second: a finished header, a fraction of the tune
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(44100), w.writeframes(b"\0" * 44100 * 4)
    script = fake / "fluidsynth"
    # a fluidsynth that writes that file where -F says
    script.write_text(f'#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = "-F" ] && cp {short} "$2"; shift; done\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    assert midi_seconds(mid) > 2
    with pytest.raises(
        ConversionError, match=rf"wrote 1.0 s of a .* tune \(is the disk holding {out} full\? .* MB free"
    ):
        write_wav(mid, out / "music.wav")
    assert list(out.iterdir()) == []
