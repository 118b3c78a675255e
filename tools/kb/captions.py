"""Captions for the starter base: words from the music itself (tempo, key and mode, rhythm, collection)."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from image2music.tools.music.abcparse import Tune

_COLLECTION_NAMES = {
    "essenFolksong": "a folk song from the Essen collection",
    "oneills1850": "an Irish tune from O'Neill's Music of Ireland (1850)",
    "ryansMammoth": "a fiddle tune from Ryan's Mammoth Collection",
    "airdsAirs": "a Scottish air from Aird's Selection",
    "miscFolk": "a traditional folk tune",
    "josquin": "a Renaissance piece",
}

_MODE_WORDS = {
    "": "major",
    "m": "minor",
    "dor": "Dorian",
    "mix": "Mixolydian",
    "phr": "Phrygian",
    "lyd": "Lydian",
    "loc": "Locrian",
}


def tempo_word(qpm: float) -> str:
    if qpm < 66:
        return "slow"
    if qpm < 96:
        return "moderate"
    if qpm < 132:
        return "lively"
    return "fast"


def key_words(key: str) -> str:
    m = re.match(r"^([A-G][#b]?)(.*)$", key)
    if not m:
        return "no fixed key"
    tonic = m.group(1).replace("#", "♯").replace("b", "♭") if len(m.group(1)) > 1 else m.group(1)
    return f"{tonic} {_MODE_WORDS.get(m.group(2), m.group(2))}"


def rhythm_words(tune: Tune) -> str:
    durs = [e.dur for v in tune.voices.values() for e in v.events if e.pitches]
    if not durs:
        return "no clear rhythm"
    short = sum(1 for d in durs if d <= Fraction(1, 16)) / len(durs)
    dotted = sum(1 for d in durs if d.numerator == 3) / len(durs)
    longn = sum(1 for d in durs if d >= Fraction(1, 2)) / len(durs)
    words = []
    if short > 0.4:
        words.append("running sixteenth-note figures")
    if dotted > 0.2:
        words.append("dotted, lilting rhythms")
    if longn > 0.2:
        words.append("long held notes")
    if not words:
        words.append("steady even rhythm")
    return " and ".join(words)


def caption_for(tune: Tune, collection: str) -> str:
    """A MidiCaps-style caption written from the music itself."""
    pitches = [p for v in tune.voices.values() for e in v.events for p in e.pitches]
    span = (max(pitches) - min(pitches)) if pitches else 0
    range_words = "a narrow range" if span <= 9 else "a moderate range" if span <= 16 else "a wide range"
    meter = tune.meter_text or "free meter"
    kind = _COLLECTION_NAMES.get(collection, "a traditional tune")
    origin = (tune.headers.get("O") or [""])[0].strip()
    rtype = (tune.headers.get("R") or [""])[0].strip().rstrip("]").lower()
    parts = [
        f"{kind[0].upper()}{kind[1:]}" + (f" from {origin}" if origin else "") + (f" ({rtype})" if rtype else "") + "."
    ]
    if tune.headers.get("Q"):
        parts.append(
            f"It is in {key_words(tune.key)}, in {meter} time, at a {tempo_word(tune.tempo_qpm)} tempo "
            f"of about {round(tune.tempo_qpm)} beats per minute."
        )
    else:
        parts.append(f"It is in {key_words(tune.key)}, in {meter} time.")
    parts.append(f"The melody moves within {range_words} with {rhythm_words(tune)}.")
    mood = (
        "bright and cheerful"
        if key_words(tune.key).endswith("major") and tune.tempo_qpm >= 96
        else "gentle and warm"
        if key_words(tune.key).endswith("major")
        else "melancholic and introspective"
        if tune.tempo_qpm < 96
        else "dark but energetic"
    )
    parts.append(f"The mood is {mood}.")
    if tune.title:
        parts.append(f"Title: {tune.title.rstrip('.')}.")
    return " ".join(parts)


def tune_metadata(tune: Tune, collection: str) -> dict[str, Any]:
    return {
        "key": tune.key,
        "meter": tune.meter_text or "",
        "tempo": round(tune.tempo_qpm, 1),
        "genre": "folk" if collection != "josquin" else "renaissance",
        "title": tune.title or "",
        "collection": collection,
    }
