"""The one ABC grammar of the project: what a compose or reflect answer may look like, written once.

An answer is optional prose, then one fenced tune (````abc``, an ``X:`` line, header fields, a ``K:`` line, a
body with at least one note), then optional commentary. The tune part is the subset of ABC that the checker
(:func:`image2music.tools.music.check.check_abc`) reads without an error: every value that the reader rejects
(an unknown key or meter, a zero length, a tuplet of 1, a broken rhythm that does not follow a note, an
unclosed chord, grace group, inline field or chord symbol, an accidental without its note) cannot be written;
what the reader only warns about (bar lengths, unclosed slurs, voices of different lengths) still can, and the
parse-check loop and reflect deal with it as before.

The grammar is data (:data:`RULES`, small combinators) from which everything else is made, so that the
dialects cannot drift apart:

- :func:`gbnf` — GBNF, the dialect of llama.cpp's server (``grammar``), of SGLang (``ebnf``) and of vLLM's
  ``structured_outputs: {"grammar": ...}`` (xgrammar), and what the local engine (llguidance) compiles;
- :func:`strategy` — a Hypothesis strategy that draws strings the grammar generates (the property test).

Lengths and counts are bounded where the reader's guards would trip otherwise (note lengths, octave marks,
voices), and prose is bounded so that a model cannot spend its budget before the tune.
"""

from __future__ import annotations

import functools
import json
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis import strategies as st


# --- the combinators ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Chars:
    """One character: of ``chars`` or, with ``negate``, any printable one that is not in ``chars``."""

    chars: str
    negate: bool = False


@dataclass(frozen=True)
class Seq:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Alt:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Rep:
    item: Expr
    lo: int = 0
    hi: int | None = None


@dataclass(frozen=True)
class Ref:
    name: str


Expr = Lit | Chars | Seq | Alt | Rep | Ref


def seq(*items: Expr | str) -> Seq:
    return Seq(tuple(Lit(i) if isinstance(i, str) else i for i in items))


def alt(*items: Expr | str) -> Alt:
    return Alt(tuple(Lit(i) if isinstance(i, str) else i for i in items))


def opt(item: Expr | str) -> Rep:
    return Rep(Lit(item) if isinstance(item, str) else item, 0, 1)


def many(item: Expr | str, lo: int = 0, hi: int | None = None) -> Rep:
    return Rep(Lit(item) if isinstance(item, str) else item, lo, hi)


R = Ref


# --- the values the reader accepts -------------------------------------------------------------------------


def _keys() -> Expr:
    """Every key the reader knows (``K:G``, ``K: Ador``, ``K:E Dorian``, ``K:Bbm``), checked against the
    reader's own key function so that no key with more than seven sharps or flats can be written."""
    from image2music.tools.music.abcheader import key_signature

    glued = ["", "m", "maj", "min", "dor", "mix", "lyd", "phr", "loc", "aeo", "ion", "major", "minor", "dorian"]
    words = ["Major", "Minor", "Dorian", "Mixolydian", "Lydian", "Phrygian", "Locrian", "Aeolian", "Ionian"]
    words += [w.lower() for w in words]
    tonics = []
    for letter in "ABCDEFGabcdefg":
        for acc in ("", "#", "b"):
            modes = [m for m in glued if not isinstance(key_signature(f"{letter}{acc}{m}"), str)]
            modes += [f" {w}" for w in words if not isinstance(key_signature(f"{letter}{acc} {w}"), str)]
            rest = sorted(set(modes) - {""}, key=lambda m: (-len(m), m))
            tonics.append(seq(f"{letter}{acc}", opt(alt(*rest)) if "" in modes else alt(*rest)))
    return Alt(tuple(tonics))


DIGIT1 = Chars("123456789")
DIGIT = Chars("0123456789")
SP = Chars(" \t")
CONTROL = "".join(chr(c) for c in [*range(32), *range(127, 160)] if chr(c) not in "\t\n")
"""Control characters: never written (they are not music, and on a terminal they are commands)."""
TEXT = Chars("\n`\\" + CONTROL, negate=True)
"""A character of a field's text: anything on the line but a backtick (the fence), a backslash (it would
join the next line to this field) or a control character."""

RULES: dict[str, Expr] = {
    "root": seq(R("prose"), "```abc\n", R("tune"), "```", opt(seq("\n", R("tail")))),
    # prose: a few lines of words; no backticks (no second fence), no '<' (no <think> that hides the rest),
    # no line that starts like a header field ("K:...") or a list marker, which the extractor would read as music
    # (at most three lines of 100 characters: a model cannot spend its budget before the tune)
    "prose": many(R("prose-line"), 0, 3),
    "prose-line": seq(opt(R("words")), "\n"),
    # the commentary after the tune, in one rule: a last line needs no newline (the engine reads a rule made of
    # characters only as one lexeme, so "lines, then a last line" must not be two rules that overlap)
    "tail": seq(many(seq(opt(R("words")), "\n"), 0, 3), opt(R("words"))),
    "words": seq(
        alt(
            seq(Chars(string.ascii_letters), Chars(":`<\n" + CONTROL, negate=True)),
            Chars(string.ascii_letters + string.digits + " \t`<\n-*+•>" + CONTROL, negate=True),
        ),
        many(Chars("`<\n" + CONTROL, negate=True), 0, 100),
    ),
    "tune": seq(R("header"), R("body")),
    "header": seq(
        "X:", opt(" "), DIGIT1, many(DIGIT, 0, 3), "\n", many(R("header-line"), 0, 16), "K:", opt(" "), R("key"), "\n"
    ),
    "header-line": seq(
        alt(
            seq("T:", R("field-text")),
            seq("M:", opt(" "), R("meter")),
            seq("L:", opt(" "), R("unit")),
            seq("Q:", opt(" "), R("tempo")),
            seq("V:", R("voice-id"), opt(seq(" ", R("field-text")))),
            seq(Chars("ABCDFGHNOPRSZ"), ":", R("field-text")),
            R("i-field"),
            R("comment"),
        ),
        "\n",
    ),
    # at most 16 beats: a whole-bar rest (Z) stays within the reader's longest note
    # I: (instruction) and %% lines: never I:begin / %%begin..., which makes the reader skip the rest as text
    "i-field": seq("I:", opt(seq(Chars(" \tbe\n`\\" + CONTROL, negate=True), R("field-text")))),
    # a field's text: no " K:" (or any of X T M L K Q C V and a colon after a space) inside it, which the extractor
    # would split into a field of its own (a tune written as space-separated tokens)
    "field-text": seq(many(R("field-token")), opt(seq(many(SP, 1), opt(Chars("XTMLKQCV"))))),
    "field-token": alt(
        Chars(" \t\n`\\" + CONTROL, negate=True),
        seq(many(SP, 1), Chars("XTMLKQCV \t\n`\\" + CONTROL, negate=True)),
        seq(many(SP, 1), Chars("XTMLKQCV"), Chars(": \t\n`\\" + CONTROL, negate=True)),
    ),
    "meter": alt("C|", "C", seq(alt(seq("1", Chars("0123456")), DIGIT1), "/", alt("16", "2", "4", "8"))),
    "unit": seq("1/", alt("16", "4", "8")),
    "tempo": alt(seq("1/", alt("2", "4", "8"), "=", R("bpm")), seq("3/8=", R("bpm"))),
    "bpm": alt(seq(Chars("6789"), DIGIT), seq("1", DIGIT, DIGIT), seq("2", Chars("01234"), DIGIT)),
    "key": R("key-name"),
    "key-name": _keys(),
    "voice-id": alt(
        seq(DIGIT1, opt(DIGIT)), seq(Chars(string.ascii_uppercase), opt(Chars(string.ascii_letters + string.digits)))
    ),
    # a comment or directive line: `% words`, `%%MIDI program 40`, `%%score ...`; a %%MIDI program out of range
    # is the only directive the reader refuses; a %%MIDI transpose could play notes past MIDI's range, so
    # %%MIDI lines other than program and transpose are any text
    "comment": alt(
        seq("%", opt(seq(Chars("%\n`\\" + CONTROL, negate=True), many(TEXT)))),
        # any %% directive but %%begin... (the extractor and the reader skip a %%begintext block to its %%end)
        seq("%%", Chars(string.ascii_lowercase.replace("b", "")), many(TEXT)),
        seq("%%b", Chars(string.ascii_lowercase.replace("e", "")), many(TEXT)),
        seq("%%be", Chars(string.ascii_lowercase.replace("g", "")), many(TEXT)),
        seq("%%MIDI program ", R("program")),
        seq("%%MIDI ", Chars("abcdefghijklmnoqrsuvwxyz"), many(TEXT, 0, 80)),  # not program, not transpose
    ),
    "program": alt(seq("1", alt(seq("2", Chars("01234567")), seq(Chars("01"), DIGIT))), seq(DIGIT1, opt(DIGIT)), "0"),
    # the body: lines of fields, comments and music; the first music line holds a note (no tune of rests only)
    "body": seq(many(R("quiet-line")), R("first-music-line"), many(R("body-line"))),
    "quiet-line": seq(alt(R("body-field"), R("comment")), "\n"),
    "body-line": seq(opt(alt(R("body-field"), R("comment"), R("music"))), "\n"),
    "body-field": alt(
        seq("K:", opt(" "), R("key")),
        seq("M:", opt(" "), R("meter")),
        seq("L:", opt(" "), R("unit")),
        seq("Q:", opt(" "), R("tempo")),
        seq("V:", R("voice-id"), opt(seq(" ", R("field-text")))),
        seq("P:", R("field-text")),
        seq(Chars("ABCDFGHNORSTWZrsw"), ":", R("field-text")),
        R("i-field"),
    ),
    # A music line never starts with a lone letter and a colon ("A:|", "z:|", "Z:|"): the reader takes that for a
    # header field. So a line starts with a "safe lead" (anything but a lone letter), or with a lone note or
    # rest letter that a safe item follows (one that does not start with ':').
    # (the reader strips a line before it looks for a field: leading spaces do not make "A:|" music)
    "music": seq(
        many(SP),
        alt(
            seq(R("safe-lead"), many(R("item")), R("line-end")),
            seq(R("lone"), opt(seq(R("safe-item"), many(R("item")))), R("line-end")),
        ),
    ),
    "lone": Chars("ABCDEFGabcdefgzx"),
    "safe-lead": alt(
        R("safe-mark"),
        seq(alt(R("dressed-note-el"), R("dressed-rest-el")), many(R("broken-step"))),
        seq(R("lone"), many(R("broken-step"), 1)),
    ),
    "safe-item": alt(R("beam"), R("safe-quiet"), "Z", "y"),
    # the first music line has a note before anything but quiet items and rests (no tune of rests only)
    "first-music-line": seq(
        many(SP),
        alt(
            seq(
                alt(
                    seq(R("first-quiet-lead"), many(alt(R("quiet-item"), R("rest-beam"))), R("note-beam")),
                    seq(Chars("zx"), R("note-beam")),
                    seq(R("dressed-note-el"), many(R("broken-step"))),
                    seq(Chars("ABCDEFGabcdefg"), many(R("broken-step"), 1)),
                ),
                many(R("item")),
            ),
            seq(Chars("ABCDEFGabcdefg"), opt(seq(R("safe-item"), many(R("item"))))),
        ),
        R("line-end"),
        "\n",
    ),
    "first-quiet-lead": alt(
        R("safe-mark"),
        seq(R("dressed-rest-el"), many(R("broken-step"))),
        seq(Chars("zx"), many(R("broken-step"), 1)),
        seq(Chars("zx"), alt(R("safe-quiet"), "Z", "y", R("rest-beam"))),
    ),
    "line-end": seq(opt("!"), many(SP), opt(alt("\\", seq("%", many(TEXT, 0, 80))))),
    "item": alt(R("beam"), R("quiet-item")),
    "quiet-item": alt(R("safe-quiet"), R("colon-bar"), "Z", "y"),
    # what makes no note and does not start with ':' or a lone letter: spaces, bar lines, endings, multi-bar rests,
    # inline fields, slurs' ends, ties, staccato dots, chord symbols, decorations, grace notes, overlays, spacers
    "safe-quiet": alt(many(SP, 1), R("safe-mark")),
    "safe-mark": alt(
        R("pipe-bar"),
        seq("[", DIGIT1, opt(seq(Chars(",-"), DIGIT1))),
        seq("Z", Chars("1234")),
        R("inline-field"),
        ")",
        "-",
        ".",
        R("annotation"),
        R("decoration"),
        R("grace"),
        "&",
        seq("y", DIGIT1),
        "$",
    ),
    "pipe-bar": seq(alt("|", "||", "[|", "|]", ".|"), R("bar-tail")),
    "colon-bar": seq(many(":", 1, 2), alt("|", "||", "|]"), R("bar-tail")),
    "bar-tail": seq(many(":", 0, 2), opt(seq(DIGIT1, opt(DIGIT), opt(seq(Chars(",-"), DIGIT1))))),
    "inline-field": seq(
        "[",
        alt(
            seq("K:", opt(" "), R("key")),
            seq("M:", opt(" "), R("meter")),
            seq("L:", opt(" "), R("unit")),
            seq("Q:", opt(" "), R("tempo")),
            seq("P:", Chars(string.ascii_uppercase)),
            seq("V:", R("voice-id")),
        ),
        opt(" "),
        "]",
    ),
    # notes, chords and rests joined by broken rhythms (`A>B`): a '>' always has an event before and after it
    "beam": seq(R("element"), many(R("broken-step"))),
    "note-beam": seq(R("note-el"), many(R("broken-step"))),
    "rest-beam": seq(R("rest-el"), many(R("broken-step"))),
    "broken-step": seq(many(SP), alt(">", "<", ">>", "<<"), many(SP), R("element")),
    "element": alt(R("note-el"), R("rest-el")),
    "note-el": seq(many(R("prefix"), 0, 6), alt(R("note"), R("chord")), R("suffix")),
    "rest-el": seq(many(R("prefix"), 0, 6), R("rest"), R("suffix")),
    "suffix": seq(opt(")"), opt("-")),
    # an element that is more than a lone letter (a prefix, an accidental, an octave mark, a length or a suffix)
    "dressed-note-el": alt(
        seq(many(R("prefix"), 1, 6), alt(R("note"), R("chord")), R("suffix")),
        seq(alt(R("dressed-note"), R("chord")), R("suffix")),
        seq(Chars("ABCDEFGabcdefg"), alt(")", "-", ")-")),
    ),
    "dressed-note": alt(
        seq(R("accidental"), many(R("decoration")), R("pitch"), opt(R("length"))),
        seq(Chars("ABCDEFGabcdefg"), many(Chars(",'"), 1, 2), opt(R("length"))),
        seq(Chars("ABCDEFGabcdefg"), R("length")),
    ),
    "dressed-rest-el": alt(
        seq(many(R("prefix"), 1, 6), R("rest"), R("suffix")),
        seq(Chars("zx"), R("length"), R("suffix")),
        seq(Chars("zx"), alt(")", "-", ")-")),
    ),
    # (no '%' inside: the reader cuts a field's comment before it reads the line)
    "annotation": seq('"', many(Chars('"%\n`\\' + CONTROL, negate=True)), '"'),
    # a decoration's name: letters, digits and the signs of !p!, !D.C.!, !<(!, !>)!, !+!; nothing that would end a
    # grace group, a chord or a field for the reader
    "decoration": seq("!", many(Chars(string.ascii_letters + string.digits + ".()<>+-"), 1, 20), "!"),
    "prefix": alt(
        R("annotation"),
        R("decoration"),
        "~",
        ".",
        "(",
        seq("(", Chars("23456789"), opt(seq(":", opt(DIGIT1), opt(seq(":", opt(DIGIT1)))))),
        R("grace"),
        Chars("HOSTuv"),
    ),
    "grace": seq("{", opt("/"), many(seq(many(R("decoration"), 0, 2), R("grace-note")), 1, 4), "}"),
    "grace-note": seq(opt(R("accidental")), R("pitch"), opt(R("length"))),
    # `=!2!c`: a fingering between an accidental and its note (the reader warns and reads it as `=c`)
    "note": seq(opt(seq(R("accidental"), many(R("decoration")))), R("pitch"), opt(R("length"))),
    "accidental": alt("^", "^^", "_", "__", "="),
    "pitch": seq(Chars("ABCDEFGabcdefg"), many(Chars(",'"), 0, 2)),
    # at most 8 units (with L:1/4, two whole notes): the reader's guards on long notes and pieces stay far away
    "length": alt(
        seq(Chars("12345678"), opt(seq("/", opt(Chars("248"))))),
        seq("/", opt(Chars("248"))),
        "//",
    ),
    "chord": alt(
        seq("[", many(seq(opt(R("accidental")), R("pitch")), 1, 4), "]", opt(R("length"))),
        seq("[", many(seq(opt(R("accidental")), R("pitch"), opt(R("length"))), 1, 4), "]"),
    ),
    "rest": seq(Chars("zx"), opt(R("length"))),
}
"""The grammar: rule name -> expression; ``root`` is an answer, ``tune`` the tune inside the fence."""


# --- GBNF ----------------------------------------------------------------------------------------------------


def _gbnf_class(c: Chars) -> str:
    """``[...]`` in the escapes every GBNF reader knows (``\\ \\[ \\] \\n \\t``): a ``-`` goes last and a ``^``
    not first, where they are plain characters; runs of three or more as ranges (``A-Z``)."""

    def esc(ch: str) -> str:
        if ch in "\n\t":
            return {"\n": "\\n", "\t": "\\t"}[ch]
        if ord(ch) < 32 or 127 <= ord(ch) < 160:
            return f"\\x{ord(ch):02X}"  # the code point (\\u is read differently by GBNF converters)
        return "\\" + ch if ch in "]\\[" else ch

    chars = "".join(ch for ch in c.chars if ch not in "-^")
    parts, i = [], 0
    while i < len(chars):
        j = i
        while j + 1 < len(chars) and ord(chars[j + 1]) == ord(chars[j]) + 1 and chars[j] not in " \t\n":
            j += 1
        parts.append(f"{esc(chars[i])}-{esc(chars[j])}" if j - i >= 2 else "".join(map(esc, chars[i : j + 1])))
        i = j + 1
    tail = ("^" if "^" in c.chars else "") + ("-" if "-" in c.chars else "")
    assert parts or tail != "^", "a class of '^' alone"
    return f"[{'^' if c.negate else ''}{''.join(parts)}{tail}]"


def _gbnf(e: Expr) -> str:
    if isinstance(e, Lit):
        return json.dumps(e.text, ensure_ascii=False)
    if isinstance(e, Chars):
        return _gbnf_class(e)
    if isinstance(e, Ref):
        return e.name
    if isinstance(e, Seq):
        return " ".join(_wrap(i, Alt) for i in e.items)
    if isinstance(e, Alt):
        return " | ".join(_wrap(i, ()) for i in e.items)
    inner = _wrap(e.item, (Seq, Alt))
    if (e.lo, e.hi) == (0, 1):
        return f"{inner}?"
    if e.hi is None:
        return f"{inner}*" if e.lo == 0 else f"{inner}+" if e.lo == 1 else f"{inner}{{{e.lo},}}"
    return f"{inner}{{{e.lo},{e.hi}}}"


def _wrap(e: Expr, kinds: type | tuple[type, ...]) -> str:
    text = _gbnf(e)
    return f"({text})" if isinstance(e, kinds) and not (isinstance(e, Seq | Alt) and len(e.items) == 1) else text


@functools.cache
def gbnf(start: str = "root") -> str:
    """The grammar as GBNF from rule ``start`` (``root``: a whole answer; ``tune``: the tune alone), with
    only the rules it reaches."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        order.append(name)
        for ref in _refs(RULES[name]):
            visit(ref)

    visit(start)
    lines = [f"{'root' if n == start else n} ::= {_gbnf(RULES[n])}" for n in order]
    return "\n".join(lines) + "\n"


def _refs(e: Expr) -> list[str]:
    if isinstance(e, Ref):
        return [e.name]
    if isinstance(e, Seq | Alt):
        return [r for i in e.items for r in _refs(i)]
    if isinstance(e, Rep):
        return _refs(e.item)
    return []


# --- Hypothesis ----------------------------------------------------------------------------------------------

_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " \t" + "éüß—’•"


def strategy(start: str = "tune", max_repeat: int = 4) -> st.SearchStrategy[str]:
    """Strings the grammar generates from rule ``start``; unbounded repetitions draw at most ``max_repeat``
    items (bounded ones at most that many more than their minimum)."""
    from hypothesis import strategies as st

    cache: dict[str, st.SearchStrategy[str]] = {}

    def build(e: Expr) -> st.SearchStrategy[str]:
        if isinstance(e, Lit):
            return st.just(e.text)
        if isinstance(e, Chars):
            pool = [c for c in _PRINTABLE if c not in e.chars] if e.negate else list(e.chars)
            return st.sampled_from(pool)
        if isinstance(e, Ref):
            if e.name not in cache:
                cache[e.name] = st.deferred(lambda: build(RULES[e.name]))
            return cache[e.name]
        if isinstance(e, Seq):
            return st.tuples(*(build(i) for i in e.items)).map("".join)
        if isinstance(e, Alt):
            return st.one_of(*(build(i) for i in e.items))
        hi = e.lo + max_repeat if e.hi is None else min(e.hi, e.lo + max_repeat)
        return st.lists(build(e.item), min_size=e.lo, max_size=hi).map("".join)

    return build(RULES[start])
