"""The ABC answer grammar: what it generates the checker accepts; what people write it mostly covers; every
dialect is one rendering of it; the engine that constrains local models reads it the same way."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings

from image2music.tools.music.check import check_abc
from image2music.tools.music.differential import shared_corpus_tunes
from image2music.tools.music.grammar import RULES, gbnf, strategy
from image2music.tools.vlm.constrain import SERVER_DIALECTS, grammar_accepts, server_fields

PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@PROPERTY
@given(strategy("root"))
def test_every_answer_the_grammar_generates_passes_the_checker(answer: str) -> None:
    result = check_abc(answer)
    assert result.ok, (answer, [e.render() for e in result.errors])


@settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(strategy("root"))
def test_the_engine_accepts_what_the_grammar_generates(answer: str) -> None:
    assert grammar_accepts(answer), answer


@pytest.mark.parametrize(
    "answer",
    [
        "```abc\nX:1\nT:t\nM:4/4\nL:1/8\nK:Zmaj\nCDEF|\n```",  # unknown key
        "```abc\nX:1\nK:C\nC0 D|\n```",  # zero length
        "```abc\nX:1\nK:C\n(1CDE|\n```",  # impossible tuplet
        "```abc\nX:1\nK:C\n[CE|G]\n```",  # chord open at the bar line
        "```abc\nX:1\nK:C\n>CD|\n```",  # broken rhythm before any note
        "```abc\nX:1\nK:C\nz4|z4|\n```",  # rests only
        "```abc\nX:1\nK:C\nC^|\n```",  # accidental without a note
        "```abc\nX:1\nK:C\nCDE|\n```\n```abc\nX:2\nK:C\nC|\n```",  # a second draft
        "<think>\n```abc\nX:1\nK:C\nC|\n```",  # a think block that would hide the tune
        "```abc\nX:1\nT:\x1b]52;c;aGk=\x07\nK:C\nC|\n```",  # a terminal escape in a title
        "```abc\nX:1\nK:C\nC|\n",  # never closed
    ],
)
def test_malformed_answers_are_outside_the_grammar(answer: str) -> None:
    assert not grammar_accepts(answer)


def test_typical_answers_are_inside_the_grammar() -> None:
    answer = (
        "Here is a calm piece for the harbour at dusk.\n\n```abc\nX:1\nT:Harbour Lights\nM:3/4\nL:1/8\nQ:1/4=72\n"
        'K:D major\n% [A] the theme\n|: "D"D2 F2 A2 | "G"B3 A G2 | (3FGA d2 c2 | d6 :|\n'
        "[K:Bm] B,>C D2- D2 | {g}f2 e2 !trill!d2 | [DFA]6 |]\n```\n\nThe waltz rocks like the boats."
    )
    assert grammar_accepts(answer)
    assert check_abc(answer).ok


def test_every_dialect_is_the_one_grammar() -> None:
    text = gbnf()
    names = [line.split(" ::= ")[0] for line in text.splitlines()]
    assert names[0] == "root" and len(names) == len(set(names))
    used = set(re.findall(r"(?<![\w\"-])([a-z][a-z-]*)(?![\w\"-])", re.sub(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]', "", text)))
    assert used <= set(names), used - set(names)  # every rule that is used is defined
    assert set(names) <= set(RULES) | {"root"}
    # only the escapes every GBNF reader (llama.cpp, xgrammar, llguidance) knows
    assert not re.search(r"\\[^\\\"\[\]ntx]", text)
    assert gbnf("tune").startswith("root ::= header body")
    assert server_fields("openai") == {}
    assert server_fields("vllm") == {"structured_outputs": {"grammar": text}}
    assert server_fields("sglang") == {"ebnf": text}
    assert server_fields("llamacpp") == {"grammar": text}
    assert set(SERVER_DIALECTS) == {"openai", "vllm", "sglang", "llamacpp"}


@pytest.mark.skipif(
    not shared_corpus_tunes(), reason="the development corpora (../shared/corpora) are not in this checkout"
)
def test_the_grammar_covers_the_human_tunes_the_checker_accepts() -> None:
    """At least 95% of the development corpus's human tunes that the checker accepts are in the grammar, in
    every tunebook; each source's figure is printed."""
    for source, tunes in shared_corpus_tunes().items():
        if not source.startswith("human"):
            continue
        accepted = [check_abc(text).abc for _name, text in tunes if check_abc(text).ok]
        inside = sum(grammar_accepts(abc, "tune") for abc in accepted)
        print(f"{source}: {inside}/{len(accepted)} in the grammar")
        assert inside >= 0.95 * len(accepted), source
