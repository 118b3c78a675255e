"""One-line errors and the scrubbing of secrets, in whole texts and in streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image2music.tools.errors import ScrubbedStream, redact

KEY = "sk-SECRET-1234"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet="ab sk-SECRET1234", max_size=60), st.lists(st.integers(0, 80), max_size=8))
def test_a_stream_shows_what_redact_shows_however_it_is_cut(text: str, cuts: list[int]) -> None:
    whole = f"{text}{KEY}{text}"
    bounds = sorted({min(c, len(whole)) for c in cuts} | {0, len(whole)})
    shown: list[str] = []
    stream = ScrubbedStream(shown.append, [KEY])
    for a, b in zip(bounds, bounds[1:], strict=False):
        stream(whole[a:b])
        assert all(KEY not in "".join(shown[: k + 1]) for k in range(len(shown)))
    stream.close()
    assert "".join(shown) == redact(whole, [KEY], headers=False)


@pytest.mark.parametrize("cut", range(1, len(KEY)))
def test_no_part_of_a_key_split_over_two_pieces_is_shown(cut: int) -> None:
    shown: list[str] = []
    stream = ScrubbedStream(shown.append, [KEY])
    stream("the key is " + KEY[:cut])
    assert "".join(shown) == "the key is "  # the possible start of the key waits
    stream(KEY[cut:] + " ok")
    stream.close()
    assert "".join(shown) == "the key is [redacted] ok"


def test_without_secrets_pieces_pass_as_they_are() -> None:
    shown: list[str] = []
    stream = ScrubbedStream(shown.append, [])
    for piece in ("a", "b", ""):
        stream(piece)
    stream.close()
    assert shown == ["a", "b"]
