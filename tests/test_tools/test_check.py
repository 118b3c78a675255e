"""The checker on model-style outputs: one small fixture file per case."""

from __future__ import annotations

from fractions import Fraction

import pytest
from conftest import ABC_DIR

from image2music.tools.music.abcparse import Limits
from image2music.tools.music.check import check_abc


def check_file(name: str):  # noqa: ANN201
    return check_abc((ABC_DIR / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("fenced_abc.txt", "Harbour Dawn"),
        ("plain_fence.txt", "Plain Fence"),
        ("unfenced_prose.txt", "Forest Waltz"),
        ("several_tunes.txt", "Final Version"),
        ("think.txt", "After Thinking"),
        ("no_x.txt", "No Number"),
        ("markdown.txt", "Night Sky"),
        ("tuplets_ok.abc", "Tuplets"),
        ("broken_rhythm_ok.abc", "Broken Rhythm"),
        ("chords_grace_ties_ok.abc", "Chords Grace Ties"),
        ("inline_meter_ok.abc", "Meter Changes"),
        ("pickup_ok.abc", "Pickup and Repeats"),
    ],
)
def test_valid_outputs_have_no_findings(name: str, title: str) -> None:
    r = check_file(name)
    assert r.extracted and r.ok, r.to_dict()
    assert r.title == title
    assert r.warnings == [], [w.render() for w in r.warnings]


def test_commentary_is_the_prose_around_the_tune() -> None:
    r = check_file("fenced_abc.txt")
    assert "gentle piece" in r.commentary and "rocking of the boats" in r.commentary
    assert "X:1" not in r.commentary
    u = check_file("unfenced_prose.txt")
    assert u.commentary.startswith("I imagined") and "E minor" in u.commentary


def test_think_section_is_ignored() -> None:
    r = check_file("think.txt")
    assert "Thinking Draft" not in r.abc and "think" not in r.commentary.lower()


def test_refusal_is_a_clear_error() -> None:
    r = check_file("refusal.txt")
    assert not r.extracted and not r.ok
    assert "no ABC tune found" in r.errors[0].message


@pytest.mark.parametrize(
    ("name", "needle", "line", "column"),
    [
        ("unclosed_chord.abc", "unclosed chord", 6, 1),
        ("zero_length.abc", "impossible note length", 6, 4),
        ("unknown_key.abc", "unknown key", 5, 3),
        ("hostile_long_note.abc", "out of range", 6, 1),
    ],
)
def test_errors_are_located(name: str, needle: str, line: int, column: int) -> None:
    r = check_file(name)
    assert not r.ok
    hit = [e for e in r.errors if needle in e.message]
    assert hit, [e.render() for e in r.errors]
    assert (hit[0].line, hit[0].column) == (line, column)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("unclosed_slur.abc", "unclosed slur"),
        ("unclosed_tuplet.abc", "tuplet"),
        ("missing_headers.abc", "no L: field"),
        ("missing_headers.abc", "no M: field"),
    ],
)
def test_warnings_keep_the_tune_valid(name: str, needle: str) -> None:
    r = check_file(name)
    assert r.ok
    assert any(needle in w.message for w in r.warnings), [w.render() for w in r.warnings]


def test_missing_l_uses_the_abc21_default_from_the_meter() -> None:
    r = check_abc("X:1\nT:t\nM:2/4\nK:C\nCDEF GABc|c4|]\n", extract=False)
    assert r.tune is not None and str(r.tune.unit) == "1/16"
    r = check_abc("X:1\nT:t\nM:4/4\nK:C\nCDEF GABc|c8|]\n", extract=False)
    assert r.tune is not None and str(r.tune.unit) == "1/8"


def test_fig2_bar_lengths_are_flagged_with_beats() -> None:
    r = check_file("fig2_bars.abc")
    assert r.ok
    msgs = [w.message for w in r.warnings]
    assert "bar 2 has 1.5 beats, M:6/4 needs 6" in msgs
    assert len([m for m in msgs if "needs 6" in m]) >= 8
    w = next(w for w in r.warnings if w.bar == 2)
    assert (w.line, w.column) == (8, 13)


def test_voices_are_checked_separately_and_against_each_other() -> None:
    r = check_file("voices_mismatch.abc")
    assert r.ok and r.parts == 2
    assert any(w.voice == "LH" and w.bar == 3 and "3 beats" in w.message for w in r.warnings)
    assert any("voice LH lasts" in w.message for w in r.warnings)
    assert r.tune is not None
    assert r.tune.voices["LH"].program == 32 and r.tune.voices["RH"].name == "Right hand"


def test_hostile_input_is_rejected_by_a_guard() -> None:
    # guards are counts, not seconds: the verdict comes before anything is allocated (speed: bench/abc_check.py)
    r = check_file("hostile_long_note.abc")
    assert not r.ok and r.errors[0].code == "guard"
    many = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n" + "CDEFGABc|" * 5000
    r = check_abc(many, Limits(max_notes=1000), extract=False)
    assert not r.ok and "more than 1000 notes" in r.errors[0].message
    assert r.tune is not None and r.tune.n_notes <= 1001  # reading stopped at the guard
    huge = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n" + "C" * 200_000
    r = check_abc(huge, extract=False)
    assert not r.ok and "characters" in r.errors[0].message
    long_piece = "X:1\nT:t\nM:4/4\nL:1\nQ:1/4=30\nK:C\n" + "C16|" * 40
    r = check_abc(long_piece, Limits(max_seconds=600), extract=False)
    assert not r.ok and "lasts more than 600 s" in r.errors[0].message


def test_to_dict_shape() -> None:
    d = check_file("voices_mismatch.abc").to_dict()
    assert set(d) == {"extracted", "title", "ok", "errors", "warnings", "parts"}
    assert set(d["warnings"][0]) == {"line", "column", "bar", "voice", "code", "message"}


def test_unreadable_meter_is_free_meter_with_a_coded_warning() -> None:
    r = check_file("unknown_meter.abc")
    assert r.ok
    (w,) = [w for w in r.warnings if w.code == "unknown-meter"]
    assert (w.line, w.column) == (3, 3) and "free meter" in w.message


# --- model artefacts (issue O): each cleaned with a warning code, the music read as the model meant it ---
def _notes(answer: str) -> list[int]:
    from image2music.tools.music.check import check_abc as _check

    r = _check(answer)
    assert r.ok, [e.render() for e in r.errors]
    return [p for v in r.tune.voices.values() for ev in v.events for p in ev.pitches]  # type: ignore[union-attr]


def _codes(answer: str) -> set[str]:
    from image2music.tools.music.check import check_abc as _check

    return {w.code for w in _check(answer).warnings}


HEAD = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n"


@pytest.mark.parametrize("token", ["</s>", "<s>", "<|endoftext|>", "<|im_end|>", "[EOS]", "<eos>", "<end_of_turn>"])
def test_special_tokens_are_removed(token: str) -> None:
    answer = HEAD + f"C2 D2 E2 F2|G8|]{token}\n"
    assert _notes(answer) == [60, 62, 64, 65, 67] and "special-token" in _codes(answer)


def test_a_length_written_apart_from_its_note_is_joined() -> None:
    answer = HEAD + "C 2 D 2 E 2 F 2|G 4 [CE] 4|]\n"
    from image2music.tools.music.check import check_abc as _check

    r = _check(answer)
    assert r.ok and "spaced-length" in _codes(answer)
    assert [ev.dur for ev in r.tune.voices[next(iter(r.tune.voices))].events][:2] == [Fraction(1, 4)] * 2  # type: ignore[union-attr]


def test_a_tune_as_space_separated_tokens_is_split_into_fields() -> None:
    answer = "X:1 T:t M:4/4 L:1/8 K:C\nC2 D2 E2 F2|G8|]\n"
    assert _notes(answer) == [60, 62, 64, 65, 67] and "token-text" in _codes(answer)


@pytest.mark.parametrize("marker", ["1. ", "12) ", "- ", "* "])
def test_line_numbers_and_list_markers_before_music_lines(marker: str) -> None:
    answer = f"X:1\nT:t\nM:4/4\nL:1/8\nK:C\n{marker}C2 D2 E2 F2|\n{marker}G8|]\n"
    assert _notes(answer) == [60, 62, 64, 65, 67] and "line-marker" in _codes(answer)


def test_clean_music_has_no_artefact_warnings() -> None:
    assert not _codes(HEAD + "C2 D2 E2 F2|G8|]\n") & {"special-token", "line-marker", "spaced-length", "token-text"}


def test_a_postscript_block_with_words_is_not_a_false_rejection() -> None:
    # before: the PostScript words ended the tune at extraction, and it was rejected as "the tune has no notes"
    answer = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n%%beginps\n/hd { moveto show } def\n%%endps\nC2 D2 E2 F2|G8|]\n"
    assert _notes(answer) == [60, 62, 64, 65, 67]
