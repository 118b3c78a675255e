"""Real music nobody here wrote: tunes sampled from music21's bundled ABC corpus."""

from __future__ import annotations

from image2music.tools.music.check import check_abc
from image2music.tools.music.convert import midi_bytes
from image2music.tools.music.corpus import sample_corpus, split_tunes

SAMPLE = 250
SEED = 2026


def test_corpus_sample_extracts_checks_and_converts() -> None:
    tunes = sample_corpus(SAMPLE, seed=SEED)
    assert len(tunes) == SAMPLE
    failed = []
    for t in tunes:
        r = check_abc(t.abc)
        if not r.ok or r.tune is None:
            failed.append((t.source, [e.render() for e in r.errors][:2]))
            continue
        data = midi_bytes(r.tune)
        assert data[:4] == b"MThd"
    rate = 1 - len(failed) / SAMPLE
    print(f"corpus: {SAMPLE - len(failed)}/{SAMPLE} = {rate:.1%} extract+check+convert")
    assert rate >= 0.99, failed


def test_split_tunes_keeps_file_header() -> None:
    header, tunes = split_tunes("%%abc-charset utf-8\nC:Trad\n\nX:1\nT:a\nK:C\nC|\n\nX:2\nT:b\nK:C\nD|\n")
    assert header == "%%abc-charset utf-8\nC:Trad"
    assert len(tunes) == 2 and tunes[1].startswith("X:2")


def test_bar_warnings_agree_with_abc2midi() -> None:
    import pytest

    from image2music.tools.music import abc2midi

    if not abc2midi.available():
        pytest.skip("abc2midi not installed (Debian: abcmidi)")
    agree = total = 0
    for t in sample_corpus(SAMPLE, seed=SEED):
        r = check_abc(t.abc)
        if not r.ok:
            continue
        total += 1
        ours = any(w.code == "bar-length" for w in r.warnings)
        theirs = any(f.is_bar_length for f in abc2midi.run_abc2midi(r.abc))
        agree += ours == theirs
    print(f"bar-length verdicts agree with abc2midi on {agree}/{total} tunes ({agree / total:.1%})")
    # where they differ, abc2midi counts a pickup and the short bar before a repeat as one bar
    assert agree / total >= 0.95
