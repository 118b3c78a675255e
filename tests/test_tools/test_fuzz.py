"""Fuzzing the ABC checker: it always returns a verdict, quickly, whatever a model writes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from image2music.tools.music.abcparse import Limits
from image2music.tools.music.check import check_abc
from image2music.tools.music.convert import midi_bytes

LIMITS = Limits()
ABC_ALPHABET = "ABCDEFGabcdefgzZxy^_=,'/0123456789()[]{}<>|:.~-!+\"% \n&HTMKLVQX\\"
HEADER = "X:1\nT:fuzz\nM:{m}\nL:1/8\nK:{k}\n"


def _verdict_in_time(text: str) -> None:
    r = check_abc(text, LIMITS)
    assert isinstance(r.ok, bool)
    assert all(f.message for f in r.errors + r.warnings)
    if r.ok and r.tune is not None:
        midi_bytes(r.tune)  # anything declared valid must convert


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=ABC_ALPHABET, max_size=400),
    st.sampled_from(["4/4", "6/8", "3/4", "C|", "7/0", "x"]),
    st.sampled_from(["C", "Am", "F#dor", "Zmaj", "none", "Bb exp ^f"]),
)
def test_checker_on_random_abc_bodies(body: str, meter: str, key: str) -> None:
    _verdict_in_time(HEADER.format(m=meter, k=key) + body)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=600))
def test_checker_on_arbitrary_text(text: str) -> None:
    _verdict_in_time(text)
