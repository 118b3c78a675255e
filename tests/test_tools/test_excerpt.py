"""Excerpts of stored tunes for prompts: bar-aligned, within the budget, valid, closing their ties and numbering
their voices in order."""

from __future__ import annotations

import pytest

from image2music.tools.music import abc2midi
from image2music.tools.music.check import check_abc
from image2music.tools.music.differential import abc2midi_run
from image2music.tools.music.excerpt import excerpt

needs_abc2midi = pytest.mark.skipif(not abc2midi.available(), reason="abc2midi not installed (Debian: abcmidi)")

HEAD = "X:1\nT:t\nM:4/4\nL:1/4\nK:C\n"


def test_an_excerpt_never_ends_on_a_tie_into_a_bar_left_out() -> None:
    """Before: 19 of 61 cut excerpts of the development MIDI ended on a tie to nothing (`c4-|`)."""
    first = "C D E F | G A B c4- |"
    body = "\n".join([first, "c4 | d e f g |"] * 6)
    ex = excerpt(HEAD + body + "\n", len(HEAD + first) + 2)  # room for two bars, not three
    assert not ex.whole and ex.bars == 2
    last = [ln for ln in ex.abc.splitlines() if ln.strip()][-1]
    assert "-" not in last.rstrip(" |"), ex.abc
    assert check_abc(ex.abc, extract=False).ok


def test_a_tie_inside_the_last_chord_is_closed_too() -> None:
    first = "[C-E-] D E F | [G-c-]4 |"
    body = "\n".join([first, "[Gc]4 | d e f g |"] * 6)
    ex = excerpt(HEAD + body + "\n", len(HEAD + first) + 2)
    last = [ln for ln in ex.abc.splitlines() if ln.strip()][-1]
    assert "-" not in last[last.rfind("[") :], ex.abc


@needs_abc2midi
def test_voices_left_out_leave_no_gap_in_the_numbers() -> None:
    """Before: an excerpt that left out a voice resting in its bars kept V:1, V:3, and abc2midi merged them
    ("V:3 out of sequence, treating as V:2"); the voices kept are numbered 1..k in order."""
    head = "X:1\nT:t\nM:4/4\nL:1/4\nK:C\nV:1\nV:2\nV:3\n"
    voice = {1: "C D E F | G A B c |", 2: "z4 | z4 |", 3: "c d e f | g a b c' |"}
    body = "".join(f"V:{v}\n{voice[v]}\n" for _ in range(8) for v in (1, 2, 3))
    ex = excerpt(head + body, 200)
    assert not ex.whole and ex.voices == 2
    declared = [ln for ln in ex.abc.splitlines() if ln.startswith("V:")]
    assert declared[:2] == ["V:1", "V:2"] and "V:3" not in ex.abc
    _, said = abc2midi_run(ex.abc)
    assert "out of sequence" not in said
