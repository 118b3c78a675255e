"""ABC -> MIDI against abc2midi as the oracle, on material we did not write, and one test per bug it found."""

from __future__ import annotations

import shutil

import pytest

from image2music.tools.music import abc2midi
from image2music.tools.music.check import check_abc
from image2music.tools.music.convert import midi_bytes, midi_text
from image2music.tools.music.corpus import sample_corpus
from image2music.tools.music.differential import (
    abc2midi_notes,
    compare,
    debian_sample_tunes,
    midi_notes,
    oracle_input,
    shared_corpus_tunes,
    summarise,
)

SAMPLE, SEED = 300, 2026
needs_abc2midi = pytest.mark.skipif(not abc2midi.available(), reason="abc2midi not installed (Debian: abcmidi)")


def _tune(body: str, header: str = "M:4/4\nL:1/4\nK:C") -> str:
    return f"X:1\nT:t\n{header}\n{body}\n"


def _ours(abc: str) -> list[tuple[float, int]]:
    r = check_abc(abc, extract=False)
    assert r.ok, [e.render() for e in r.errors]
    n = midi_notes(midi_bytes(r.tune))  # type: ignore[arg-type]
    return sorted((t, p) for p, ts in n.onsets.items() for t in ts)


@pytest.mark.slow
@needs_abc2midi
def test_differential_sample_agrees_with_abc2midi() -> None:
    """A fixed-seed sample of music21's corpus plus every sample tune Debian's abcmidi and abcm2ps ship."""
    rows = [compare(t.source, t.abc) for t in sample_corpus(SAMPLE, seed=SEED)]
    rows += [compare(src, abc) for src, abc in debian_sample_tunes()]
    s = summarise(rows)
    print("differential:", s.render())
    assert s.exceptions == 0, [r for r in rows if r.error]
    assert s.acceptance >= 0.97
    corpus = summarise(rows[:SAMPLE])
    print("corpus sample:", corpus.render())
    assert corpus.identical_rate >= 0.97 and corpus.mean_overlap >= 0.99


PER_SOURCE = 300


@needs_abc2midi
@pytest.mark.skipif(
    not shared_corpus_tunes(), reason="the development corpora (../shared/corpora) are not in this checkout"
)
@pytest.mark.slow
def test_differential_sample_of_every_development_source() -> None:
    """A fixed-seed sample of each ../shared/corpora source, every figure per source (the benchmark runs all)."""
    import random

    for source, tunes in shared_corpus_tunes().items():
        sample = random.Random(SEED).sample(tunes, min(PER_SOURCE, len(tunes)))
        s = summarise(compare(name, abc) for name, abc in sample)
        print(f"{source}: {s.render()}")
        assert s.exceptions == 0, source
        if len(tunes) >= 50:  # the goals are for sources with 50 tunes or more; a sample gets a small margin
            assert s.acceptance >= 0.97 and s.identical_rate >= 0.93 and s.mean_overlap >= 0.98, source


@needs_abc2midi
def test_the_oracle_sees_what_we_play() -> None:
    abc = _tune("C D E F|]")
    theirs = abc2midi_notes(abc)
    assert theirs is not None and theirs.count == 4 and theirs.matched(midi_notes(midi_bytes(check_abc(abc).tune))) == 4  # type: ignore[arg-type]
    assert abc2midi_notes("not abc at all") is None or abc2midi_notes("not abc at all").count == 0  # type: ignore[union-attr]


def test_oracle_input_drops_trills_rolls_and_rhythm_lines_only() -> None:
    text = oracle_input('X:1\nR:hornpipe\nT:Trill\nK:C\n"Tune"T~C !trill!D !fermata!E [T:x] F|]\n')
    assert "R:" not in text and "T:Trill" in text and "propagate-accidentals" not in text
    assert '"Tune"C D !fermata!E [T:x] F|]' in text


def test_a_tie_to_another_pitch_ends_and_swallows_nothing() -> None:
    # before: the tie from F stayed open and merged the later F into it
    assert [p for _t, p in _ours(_tune("F-G A F|]"))] == [65, 67, 69, 65]
    chord = _ours(_tune("[F2A2]-[D2A2] F2|]"))
    assert (4.0, 65) in chord and (2.0, 69) not in chord and (0.0, 69) in chord


def test_double_bar_is_not_a_repeat_start() -> None:
    notes = [p for _t, p in _ours(_tune("C D E F||G A B c:|"))]
    assert notes == [60, 62, 64, 65, 67, 69, 71, 72] * 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # parts A (repeated), B (written out, ended by |]), C (repeated): C is played twice, not B and C
        ("|:C D|E F:|G A|]B c|d e:|", "C D E F C D E F G A B c d e B c d e"),
        ("C D:|G A||B c|d e:|", "C D C D G A B c d e B c d e"),
        ("C D:|E F|]G A|]B c:|", "C D C D E F G A B c B c"),
    ],
)
def test_after_a_repeated_part_a_double_bar_starts_the_next_repeat(body: str, expected: str) -> None:
    """Before: a `:|` with no `|:` went back to the end of the previous repeated part, so a tune of parts
    `A :| B |] C :|` played B twice (13 of 804 development Irish tunes, e.g. Gravel Walk); abc2midi and the
    tunes' writers repeat from the double bar."""
    pitch = {60: "C", 62: "D", 64: "E", 65: "F", 67: "G", 69: "A", 71: "B", 72: "c", 74: "d", 76: "e"}
    abc = _tune(body, "M:2/4\nL:1/4\nK:C")
    assert " ".join(pitch[p] for _t, p in _ours(abc)) == expected
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None and theirs.matched(midi_notes(midi_bytes(check_abc(abc).tune))) == len(
            expected.split()
        )  # type: ignore[arg-type]


def test_a_second_key_before_the_music_is_the_key_it_starts_in() -> None:
    """Before: `K: Dmaj` then `K: Dmix` (a development tune, Spike Island Lasses) played in D major: a K: after
    the header's, before any voice had begun, was lost. abc2midi plays C natural, as its writer means."""
    abc = "X:1\nM:2/4\nL:1/4\nK: Dmaj\nK: Dmix\nc d|c2|]\n"
    assert [p for _t, p in _ours(abc)] == [72, 74, 72]
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None and theirs.matched(midi_notes(midi_bytes(check_abc(abc).tune))) == 3  # type: ignore[arg-type]


def test_numbered_endings_with_several_passes() -> None:
    notes = [p for _t, p in _ours(_tune("|:C D E F|[1,3 G4:|[2 A4:|[4 B4|]"))]
    assert notes == [60, 62, 64, 65, 67, 60, 62, 64, 65, 69, 60, 62, 64, 65, 67, 60, 62, 64, 65, 71]


def test_octave_clause_in_key_and_voice() -> None:
    assert [p for _t, p in _ours(_tune("C D|]", "M:2/4\nL:1/4\nK:C octave=-1"))] == [48, 50]
    assert [p for _t, p in _ours(_tune("V:1\nC D|]", "M:2/4\nL:1/4\nV:1 octave=1\nK:C"))] == [72, 74]


@pytest.mark.parametrize(
    "header",
    [
        'M:4/4\nL:1/4\nQ:"Slowly"\nK:C',
        "M:4/4\nL:1/4\nQ:Fast\nK:C",
        "M:4/4\nL:1/4\nQ:1/4=ca. 100\nK:C",
        "M:4/4\nL:1/4\nK:C bass",
        "M:4/4\nL:1/4\nK:clef=alto",
        "M:4/4\nL:1/4\nK:D middle=d transpose=0",
    ],
)
def test_cosmetic_headers_are_accepted(header: str) -> None:
    r = check_abc(_tune("C D E F|[K:treble] G A B c|[K:alto] c B A G|]", header), extract=False)
    assert r.ok, [e.render() for e in r.errors]
    assert all(w.code in ("tempo", "cosmetic") for w in r.warnings), [w.render() for w in r.warnings]


def test_non_breaking_and_odd_spaces_in_the_music() -> None:
    r = check_abc(_tune("C\u00a0D\u2009E\u3000F|]"), extract=False)
    assert r.ok and r.tune is not None and r.tune.n_notes == 4


def test_pickup_and_closing_bar_must_make_one_bar() -> None:
    r = check_abc("X:1\nT:t\nM:6/8\nL:1/8\nK:G\n|:EF|G2ccBc|d2BG2A|B2cd2e|c3c2:|\n", extract=False)
    assert r.ok and [w.code for w in r.warnings] == ["pickup-mismatch"]
    fine = check_abc("X:1\nT:t\nM:6/8\nL:1/8\nK:G\n|:E|G2ccBc|d2BG2A|B2cd2e|c3c2:|\n", extract=False)
    assert fine.ok and not fine.warnings


def test_an_answer_cut_off_mid_bar_looks_truncated() -> None:
    cut = check_abc("Here it is:\n```abc\nX:1\nT:t\nM:4/4\nL:1/4\nK:C\nC D E F|G A B c|d e")
    assert not cut.ok and cut.errors[0].code == "truncated" and "looks truncated" in cut.errors[0].message
    closed = check_abc("```abc\nX:1\nT:t\nM:4/4\nL:1/4\nK:C\nC D E F|G A B c|d e\n```")
    assert closed.ok and [w.code for w in closed.warnings] == ["truncated"]


def test_text_blocks_do_not_end_the_tune() -> None:
    text = (
        "```abc\nX:1\nT:t\nM:4/4\nL:1/4\nK:C\nC D E F|\n"
        "%%begintext\nWords about it.\n\nMore words.\n%%endtext\nG A B c|]\n```"
    )
    r = check_abc(text)
    assert r.ok and r.tune is not None and r.tune.n_notes == 8


def test_old_line_break_before_a_colon_is_not_an_error() -> None:
    r = check_abc(_tune("C D E F|!:G A B c:|"), extract=False)
    assert r.ok, [e.render() for e in r.errors]


def test_titles_outside_latin1_never_break_midi() -> None:
    abc = _tune("C D E F|]").replace("T:t", "T:The Fisherman\u2019s Dawn \u2014 \u591c\u660e\u3051")
    r = check_abc(abc, extract=False)
    assert r.ok and midi_bytes(r.tune)[:4] == b"MThd"  # type: ignore[arg-type]
    assert midi_text("The Fisherman\u2019s Dawn \u2014 \u591c\u660e\u3051") == "The Fisherman's Dawn"
    assert midi_text("Caf\u00e9 \u0175") == "Caf\u00e9 w"


def test_malformed_ending_numbers_are_read_not_crashed_on() -> None:
    from image2music.tools.music.abcheader import ending_passes

    assert ending_passes("1-3") == (1, 2, 3) and ending_passes("1,3") == (1, 3)
    assert ending_passes("5-5-3") == (5,)  # a fuzz find: this raised ValueError
    r = check_abc(_tune("C D E F|[5-5-3 G4:|]"), extract=False)
    assert r.tune is not None


def test_tempos_midi_cannot_hold_are_refused_or_clamped() -> None:
    r = check_abc(_tune("C D E F|]", "M:4/4\nL:1/4\nQ:1/4=3\nK:C"), extract=False)
    assert not r.ok and r.errors[0].code == "tempo"  # a fuzz find: 3 quarter notes a minute crashed the MIDI writer
    slow = check_abc(_tune("C D E F|]", "M:4/4\nL:1/4\nQ:1/4=4\nK:C"), extract=False)
    assert slow.ok and midi_bytes(slow.tune)[:4] == b"MThd"  # type: ignore[arg-type]


# --- ties inside chords, as abc2midi plays them (issue N): each case against our reader and the oracle ---
CHORD_TIES = {
    # case: (body, expected (onset in quarters, pitch) note-ons)
    "tie on one chord note into a single note": ("[C-E]C E2|]", [(0.0, 60), (0.0, 64), (2.0, 64)]),
    "every chord note tied into the next chord": ("[C-E-][CE]2 z|]", [(0.0, 60), (0.0, 64)]),
    "low chord ties, one new note": ("[E,-B,,-][B,E,B,,] z2|]", [(0.0, 47), (0.0, 52), (1.0, 59)]),
    "mixed tied and untied notes": ("[C-EG-][CEG] z2|]", [(0.0, 60), (0.0, 64), (0.0, 67), (1.0, 64)]),
    "chord tie across the bar line": ("z2 [C-E-]2|[CE]2 z2|]", [(2.0, 60), (2.0, 64)]),
    "tie after the chord ties every note": ("[CE]-[CE] z2|]", [(0.0, 60), (0.0, 64)]),
    "tie inside a chord with lengths": ("[C2-E2]C2|]", [(0.0, 60), (0.0, 64)]),
}


@pytest.mark.parametrize("case", sorted(CHORD_TIES))
def test_ties_inside_chords(case: str) -> None:
    body, expected = CHORD_TIES[case]
    assert _ours(_tune(body)) == sorted(expected)


@needs_abc2midi
@pytest.mark.parametrize("case", sorted(CHORD_TIES))
def test_ties_inside_chords_match_abc2midi(case: str) -> None:
    body, expected = CHORD_TIES[case]
    theirs = abc2midi_notes(_tune(body))
    assert theirs is not None
    assert sorted((round(t * 48) / 48, p) for p, ts in theirs.onsets.items() for t in ts) == sorted(expected)


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("", [78, 66, 66]),
        ("%%propagate-accidentals octave\n", [78, 65, 65]),
        ("%%propagate-accidentals not\n", [78, 65, 65]),
    ],
)
def test_accidentals_propagate_as_abc_2_1_says(directive: str, expected: list[int]) -> None:
    # ABC 2.1 §11.3: by default an accidental holds for the letter in every octave to the end of the bar
    abc = f"X:1\nT:t\nM:4/4\nL:1/4\n{directive}K:C\n^f F F z|]\n"
    assert [p for _t, p in _ours(abc)] == expected
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None and sorted((t, p) for p, ts in theirs.onsets.items() for t in ts)[0][1] == 78
        assert sorted(p for p, ts in theirs.onsets.items() for _t in ts) == sorted(expected)


# --- causes found by the per-source differential (issue O), each against abc2midi where it agrees ---
CAUSES = {
    # an ending stops at a section line that opens the next line (`|2 ... |` then `|: ...`)
    "ending stops at a repeat start on the next line": (
        "|: C D E F |1 G A B c :|2 c B A G |\n|: e f g a | e f g a :|\n",
        [60, 62, 64, 65, 67, 69, 71, 72, 60, 62, 64, 65, 72, 71, 69, 67] + [76, 77, 79, 81] * 4,
    ),
    # bar lines alone before a continued line (`|:\`) are music: the tune goes on
    "a continued line of bar lines": (
        "|:\\\nC D E F | G A B c |\\\nc B A G :|\n",
        [60, 62, 64, 65, 67, 69, 71, 72, 72, 71, 69, 67] * 2,
    ),
    # abc2midi ignores stray marks and plays on: so do we, with a warning
    "a stray octave mark after a length": ("D4, E4|]\n", [62, 64]),
    "a stray length after a decoration": ("!3!3(fe!1!d) z5|]\n", [77, 76, 74]),
    "a stray slash": ("A/ /B z3 z4|]\n", [69, 71]),
}


@pytest.mark.parametrize("case", sorted(CAUSES))
def test_causes_found_by_the_differential(case: str) -> None:
    body, expected = CAUSES[case]
    header = "M:4/4\nL:1/4\nK:C" if "ending" in case or "continued" in case else "M:4/4\nL:1/8\nK:C"
    abc = _tune(body.rstrip("\n"), header)
    assert [p for _t, p in _ours(abc)] == expected
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None
        assert [p for _t, p in sorted((t, p) for p, ts in theirs.onsets.items() for t in ts)] == expected


def test_an_accidental_before_a_fingering_is_the_notes() -> None:
    abc = _tune("^!1!d2 e2 z4|]", "M:4/4\nL:1/8\nK:C")
    r = check_abc(abc, extract=False)
    assert r.ok and [p for _t, p in _ours(abc)] == [75, 76]
    assert any("before a decoration" in w.message for w in r.warnings)


@needs_abc2midi
@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("^!1!d2 e2 z4|]", "accidental-before-decoration"),
        ("f<a2 f z4|]", "broken-rhythm-unequal"),
        ("|: C D E F |1 G A B c :|2 c B A G :|\n|: e f g a | e f g a :|", "last-ending-repeat"),
        ("|: C D E F |1 G A B c :|2 c B A G |]\nE F G A | B c d e :|", "repeat-after-endings"),
        ("(7:8:8(3A/A/A/ A/A/A/A/A/|C4|]", "nested-tuplets"),
    ],
)
def test_deliberate_differences_are_counted_apart(body: str, why: str) -> None:
    c = compare("t", _tune(body, "M:4/4\nL:1/8\nK:C" if "<" in body or "!" in body else "M:4/4\nL:1/4\nK:C"))
    assert c.accepted and not c.identical and c.deliberate == why
    assert summarise([c]).deliberate == {why: 1} and summarise([c]).both == 0


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("AABB", ["A", "A", "B", "B"]),
        ("A-B.A", ["A", "B", "A"]),
        ("(AB)2C", ["A", "B", "A", "B", "C"]),
        ("A3", ["A"] * 3),
    ],
)
def test_part_orders_are_read(order: str, expected: list[str]) -> None:
    from image2music.tools.music.abcparse import part_order

    assert part_order(order) == expected
    assert isinstance(part_order("(AB"), str)


def test_the_header_part_order_is_played_like_abc2midi() -> None:
    # ABC 2.1 §3.1.12: a P: in the header gives the order of the parts; before, the parts were played as written
    abc = "X:1\nT:t\nP:BA2\nM:4/4\nL:1/4\nK:C\nP:A\n|: C D E F :|\nP:B\nG A B c |]\n"
    assert [p for _t, p in _ours(abc)] == [67, 69, 71, 72] + [60, 62, 64, 65] * 4
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None and theirs.matched(midi_notes(midi_bytes(check_abc(abc).tune))) == 20  # type: ignore[arg-type]


MORE_CAUSES = {
    # K:HP plays the Highland pipes' F and C sharp (it only prints no signature)
    "highland pipes key": ("M:4/4\nL:1/4\nK:HP", "c f g z|]", [73, 78, 79]),
    # a clef with -8 / +8 sounds an octave lower / higher (ABC 2.1 §4.6, as abc2midi plays it)
    "clef an octave down": ("M:4/4\nL:1/4\nK:C treble-8", "C D E z|]", [48, 50, 52]),
    "clef= an octave up": ("M:4/4\nL:1/4\nK:C clef=treble+8", "C D E z|]", [72, 74, 76]),
    # microtonal accidentals are played on the written letter (abc2midi bends that note)
    "microtones on the letter": ("M:4/4\nL:1/4\nK:C", "^/c _/e ^3/4c z|]", [72, 76, 72]),
    # %%MIDI ratio sets the broken-rhythm ratio
    "broken rhythm ratio": (
        "M:4/4\nL:1/8\n%%MIDI ratio 2 1\nK:C",
        "C>D E>F G>A B>c|]",
        [60, 62, 64, 65, 67, 69, 71, 72],
    ),
    # a directive between header lines does not end the header at extraction
    "directive inside the header": ("M:C\nL:1/4\n%%measurenb 1\nK:C", "CDEF|GABc|]", [60, 62, 64, 65, 67, 69, 71, 72]),
}


@pytest.mark.parametrize("case", sorted(MORE_CAUSES))
def test_more_causes_found_by_the_differential(case: str) -> None:
    header, body, expected = MORE_CAUSES[case]
    abc = f"X:1\nT:t\n{header}\n{body}\n"
    r = check_abc(abc)  # with extraction, as model output and the differential are read
    assert r.ok, [e.render() for e in r.errors]
    ours = sorted((t, p) for p, ts in midi_notes(midi_bytes(r.tune)).onsets.items() for t in ts)  # type: ignore[arg-type]
    assert [p for _t, p in ours] == expected
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None and theirs.matched(midi_notes(midi_bytes(r.tune))) == len(expected)  # type: ignore[arg-type]


def test_a_loose_repeat_sign_inside_an_open_section_starts_nothing() -> None:
    # `| :` (a space inside the repeat sign) is read as abc2midi reads it: the repeat goes back to the open `|:`
    abc = _tune("|: a | :a^ga A2a | a^ga A2g :|", "M:6/8\nL:1/8\nK:Am")
    assert [p for _t, p in _ours(abc)] == [81, 81, 80, 81, 69, 81, 81, 80, 81, 69, 80] * 2
    if abc2midi.available():
        theirs = abc2midi_notes(abc)
        assert theirs is not None and theirs.matched(midi_notes(midi_bytes(check_abc(abc).tune))) == 22  # type: ignore[arg-type]


def test_a_tie_into_numbered_endings_holds_in_each_and_is_counted_apart() -> None:
    """`F-|1 F2 :|2 F2`: the tie reaches whichever ending is played; abc2midi holds it into the first ending only
    and strikes F again in the second, silently (3 development tunes were unexplained misses)."""
    abc = _tune("|:C D|E F-|1 F2:|2 F2|]", "M:2/4\nL:1/4\nK:C")
    assert [p for _t, p in _ours(abc)] == [60, 62, 64, 65, 60, 62, 64, 65]
    if abc2midi.available():
        assert compare("t", abc).deliberate == "malformed-tie"


def test_a_tie_written_inside_the_first_ending_ties_into_that_ending_only() -> None:
    """`d6 |1 -d4 d2 :|2 d6`: the tie is the first ending's (written inside it): pass 1 holds d into it, pass 2
    strikes d again (before: the tie was put on the note before the endings and held into both; a development
    tune, Si Bheag Si Mhor). abc2midi strikes d twice at once on the second pass: counted apart, verified."""
    abc = _tune("|: c2 d2 e2 | d6 |1 -d4 d2 :|2 d6 |]", "M:3/4\nL:1/8\nK:D")
    got = sorted((round(t, 2), p) for p, ts in midi_notes(midi_bytes(check_abc(abc).tune)).onsets.items() for t in ts)  # type: ignore[arg-type]
    assert [t for t, p in got if p == 74] == [1.0, 3.0, 8.0, 10.0, 12.0, 15.0]  # pass 2's ending strikes at 15
    if abc2midi.available():
        assert compare("t", abc).deliberate == "malformed-tie"


def test_a_unison_in_a_chord_is_played_once_and_counted_apart() -> None:
    abc = _tune("[cc] [^g_a] z2|]")
    assert [p for _t, p in _ours(abc)] == [72, 80]
    if abc2midi.available():
        assert compare("t", abc).deliberate == "chord-unison"


def test_nested_tuplets_apply_both_factors() -> None:
    # before: the inner (3 replaced the outer (7:8:8, and the bar held 3.5 beats
    abc = _tune("(7:8:8(3A/A/A/ A/A/A/A/A/|C4|]")
    onsets = [t for t, _p in _ours(abc)]
    assert onsets[-1] == 4.0 and onsets[3] == pytest.approx(3 * 4 / 21 * 2, abs=0.01)  # MIDI ticks round 1/21


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi (Debian abcmidi) is not installed")
@pytest.mark.parametrize(
    "body",
    [
        "_A4-|A4|A4|",  # a flat tied over the bar line: held (the next bar's A is natural again)
        "^F2 G2-|G2 ^c2-|c4|",  # a sharp tied into the next bar
        "[_A_E]4-|[AE]4|",  # a chord tied over the bar line
        "=B4-|B4|B4|",  # a natural against the key (K:F has B flat) tied over
    ],
)
def test_a_tie_over_the_bar_line_holds_its_accidental_as_abc2midi_plays_it(body: str) -> None:
    """Before: the tied-to note took the new bar's key signature (A natural after _A-), a re-struck wrong note."""
    from image2music.tools.music.differential import compare

    key = "F" if "=B" in body else "C"
    row = compare("tie", f"X:1\nT:tie\nM:4/4\nL:1/4\nK:{key}\n{body}\n")
    assert row.accepted and row.identical, row


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi (Debian abcmidi) is not installed")
@pytest.mark.parametrize("where", ["header", "body"])
def test_midi_transpose_is_played_as_abc2midi_plays_it(where: str) -> None:
    """Before: %%MIDI transpose was ignored (every note a few semitones off abc2midi's)."""
    from image2music.tools.music.differential import compare

    directive = "%%MIDI transpose -3\n"
    head, body = (directive, "") if where == "header" else ("", directive)
    row = compare("transpose", f"X:1\nT:t\nM:4/4\nL:1/4\n{head}K:G\n{body}GABc|d2B2|\n")
    assert row.accepted and row.identical, row


def test_the_chord_attack_directive_goes_after_x() -> None:
    """Before: it went on line 2 whatever was there; before X: (a file header) abc2midi ignores it ("cannot
    handle this MIDI directive in file header") and staggers the chords."""
    lines = oracle_input("%abc-2.1\n%%titlefont Times\nX:1\nT:t\nK:C\n[CEG]2 [DFA]2|]\n").splitlines()
    assert lines[lines.index("X:1") + 1] == "%%MIDI chordattack 0" and lines.count("%%MIDI chordattack 0") == 1
    assert oracle_input("T:no X\nK:C\nC|]\n").splitlines()[1] == "%%MIDI chordattack 0"


def test_parts_named_with_words_are_played_as_written() -> None:
    """Before: `P:Intro, Bridge 1 (B1)` was taken as part I and `P: B1-S-B1-S(Solo)` as an order of letters, so
    the tune was played in a made-up order (overlap with abc2midi 0.035). A part label is one letter."""
    abc = "X:1\nT:t\nP:B1-S-B1-S\nM:3/4\nL:1/4\nK:C\nP:Intro, Bridge 1 (B1)\nC D E|\nP:Song (S)\nG A B|\n"
    r = check_abc(abc, extract=False)
    assert r.ok and [p for _t, p in _ours(abc)] == [60, 62, 64, 67, 69, 71]
    assert any("is not a part label" in w.message for w in r.warnings)
    assert [p for _t, p in _ours(abc.replace("Intro, Bridge 1 (B1)", "B").replace("Song (S)", "S"))] == (
        [60, 62, 64, 67, 69, 71] * 2
    )


@needs_abc2midi
def test_a_lowercase_key_tonic_is_verified_apart() -> None:
    c = compare("t", "X:1\nT:t\nM:4/4\nL:1/4\nK:Bmin\n[K: cmin] c e f g|]\n")
    assert c.deliberate == "lowercase-key-tonic" and c.unverified is None


@needs_abc2midi
def test_a_claimed_reason_that_does_not_explain_the_difference_is_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every label is verified by removing its cause: a remover that changes nothing relevant leaves a miss."""
    from image2music.tools.music import differential

    monkeypatch.setitem(differential.REMOVE_CAUSE, "lowercase-key-tonic", lambda abc: abc.replace("T:t", "T:u"))
    c = compare("t", "X:1\nT:t\nM:4/4\nL:1/4\nK:Bmin\n[K: cmin] c e f g|]\n")
    assert c.deliberate is None and c.unverified == "lowercase-key-tonic" and not c.identical
    assert summarise([c]).unverified == {"lowercase-key-tonic": 1} and summarise([c]).both == 1


@needs_abc2midi
def test_abc2midi_skips_a_first_ending_after_a_double_bar_repeat() -> None:
    """abc2midi's bug, named: `||:` after a section with endings makes it skip the next first ending; written
    `|:` it plays it. Ours plays it either way; the tune is counted apart, verified."""
    body = "|:C D|1 E F:|2 G A|\n||: c d |1 e f:|2 g a||"
    abc = f"X:1\nT:t\nM:2/4\nL:1/4\nK:C\n{body}\n"
    assert [p for _t, p in _ours(abc)] == [60, 62, 64, 65, 60, 62, 67, 69, 72, 74, 76, 77, 72, 74, 79, 81]
    c = compare("t", abc)
    assert c.deliberate == "oracle-double-bar-repeat"
    assert compare("t", abc.replace("||:", "|:")).identical


def test_a_new_part_ends_an_open_ending() -> None:
    """Before: `|2 ...` left open before `P:B` made every bar of part B a second-ending bar, and part B was not
    played (Calum Breugach: 194 of 338 notes)."""
    abc = "X:1\nT:t\nP:AB\nM:2/4\nL:1/4\nK:C\nP:A\n|:C D|1 E F:|2 G A|\nP:B\n|c d|e f|]\n"
    assert [p for _t, p in _ours(abc)] == [60, 62, 64, 65, 60, 62, 67, 69, 72, 74, 76, 77]
