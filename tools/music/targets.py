"""Measurable targets for one image, and feedback as data: what misses its target, by how much.

Targets come from the retrieved references (the range of each metric across the hits, widened by a margin)
and from the description (tempo words give a ``Q:`` band, mood words a mode). The same word rules decide the
text-ABC agreement of ``i2m eval`` (one implementation). A version's feedback is a list of items
``{code, metric, value, target, message}``; its score is derived from them (1.0 = every target met).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from image2music.tools.music.abcheader import is_minor_key
from image2music.tools.music.metrics import METRICS, MUSPY_METRICS

TARGET_METRICS = MUSPY_METRICS
"""The eight MusPy metrics, targeted from the references."""

MIN_HALF_WIDTH: dict[str, float] = {n: m.target[0] for n, m in METRICS.items() if m.target is not None}
"""Each band reaches at least this far beyond the references' range (one reference is a point, not a target)."""
BOUNDS: dict[str, tuple[float, float]] = {n: m.target[1:] for n, m in METRICS.items() if m.target is not None}
FALLBACK_BANDS: dict[str, tuple[float, float]] = {n: m.fallback for n, m in METRICS.items() if m.fallback}
"""Bands when nothing was retrieved: only what holds for almost any tonal piece."""

SLOW_WORDS = (
    "slow", "calm", "gentle", "peaceful", "serene", "tranquil", "adagio", "largo", "andante", "lullaby", "quiet",
    "still",
)  # fmt: skip
FAST_WORDS = ("fast", "lively", "energetic", "upbeat", "allegro", "presto", "vivace", "brisk", "dance", "busy")
MINOR_WORDS = ("minor", "melanchol", "sad", "dark", "somber", "sombre", "mournful", "gloomy", "tragic", "lonely")
MAJOR_WORDS = ("major", "bright", "happy", "joyful", "cheerful", "sunny", "playful", "triumphant")
SLOW_MAX_QPM = 90.0
FAST_MIN_QPM = 110.0


def _has(text: str, words: Iterable[str]) -> bool:
    t = text.lower()
    return any(re.search(r"\b" + re.escape(w), t) for w in words)


def tempo_words(text: str) -> str | None:
    """``slow`` or ``fast`` when the text says so (and not both), else None."""
    slow, fast = _has(text, SLOW_WORDS), _has(text, FAST_WORDS)
    return None if slow == fast else "slow" if slow else "fast"


def mood_mode(text: str) -> str | None:
    """``minor`` or ``major`` when the text's mood words say so (and not both), else None."""
    minor, major = _has(text, MINOR_WORDS), _has(text, MAJOR_WORDS)
    return None if minor == major else "minor" if minor else "major"


def tempo_agreement(text: str, qpm: float | None) -> float | None:
    """1 when the words and Q: agree (slow words: Q < 90; fast words: Q >= 110), 0 when not, None if no word."""
    words = tempo_words(text)
    if qpm is None or words is None:
        return None
    return float(qpm < SLOW_MAX_QPM) if words == "slow" else float(qpm >= FAST_MIN_QPM)


def mode_agreement(text: str, key: str | None) -> float | None:
    """1 when minor/dark words meet a minor-like mode, or major/bright words a major-like one; 0 when they
    contradict; None if the text names neither or there is no key."""
    mood, minor = mood_mode(text), is_minor_key(key)
    if mood is None or minor is None:
        return None
    return float(minor) if mood == "minor" else float(not minor)


@dataclass(frozen=True)
class Band:
    """A target range for one metric, and where it comes from."""

    low: float
    high: float
    source: str
    """``references`` (n hits), ``fallback`` or ``description``."""

    def to_dict(self) -> dict[str, Any]:
        return {"low": round(self.low, 4), "high": round(self.high, 4), "source": self.source}


def metric_bands(
    references: Sequence[Mapping[str, Any]],
    margin: float = 0.25,
    fallback: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Band]:
    """Per metric: the references' range widened by ``margin`` × its width (at least ``MIN_HALF_WIDTH``), or
    the fallback band when no reference carries the metric."""
    bands: dict[str, Band] = {}
    for name in TARGET_METRICS:
        values = [float(v) for r in references if isinstance(v := (r.get("metadata") or {}).get(name), (int, float))]
        if values:
            lo, hi = min(values), max(values)
            pad = max(margin * (hi - lo), MIN_HALF_WIDTH[name])
            b_lo, b_hi = BOUNDS.get(name, (float("-inf"), float("inf")))
            bands[name] = Band(max(b_lo, lo - pad), min(b_hi, hi + pad), f"references ({len(values)})")
        elif fallback and name in fallback:
            bands[name] = Band(float(fallback[name][0]), float(fallback[name][1]), "fallback")
    return bands


def targets_for(
    references: Sequence[Mapping[str, Any]],
    description: str,
    margin: float = 0.25,
    fallback: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """All targets of a run: metric bands, a tempo band and a mode from the description (JSON-able)."""
    out: dict[str, Any] = {k: b.to_dict() for k, b in metric_bands(references, margin, fallback).items()}
    words = tempo_words(description or "")
    if words == "slow":
        out["tempo_qpm"] = Band(30, SLOW_MAX_QPM, "description: slow words").to_dict()
    elif words == "fast":
        out["tempo_qpm"] = Band(FAST_MIN_QPM, 240, "description: fast words").to_dict()
    mood = mood_mode(description or "")
    if mood is not None:
        out["mode"] = {"mode": mood, "source": f"description: {mood} words"}
    return out


def _fmt(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() or abs(x) >= 10 else f"{x:.2f}"


FINDING_CODES = ("bar-length", "pickup-mismatch", "voice-length", "truncated")
"""Checker findings that count as feedback (music that is measurably wrong)."""


def feedback_items(
    metrics: Mapping[str, Any] | None, warnings: Sequence[Mapping[str, Any]], targets: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """What misses its target: ``{code, metric, value, target, message}`` per item, findings first."""
    items: list[dict[str, Any]] = []
    for w in warnings:
        if w.get("code") in FINDING_CODES:
            items.append(
                {"code": w["code"], "metric": None, "value": None, "target": None, "message": str(w.get("message"))}
            )
    metrics = metrics or {}
    for name, t in targets.items():
        if name == "mode":
            minor = is_minor_key(metrics.get("key"))
            if minor is None or minor == (t["mode"] == "minor"):
                continue
            items.append(
                {
                    "code": "mode",
                    "metric": "key",
                    "value": metrics.get("key"),
                    "target": t["mode"],
                    "message": f"key {metrics.get('key')} is {'minor' if minor else 'major'}-like but the "
                    f"description is {t['mode']} in mood",
                }
            )
            continue
        value = metrics.get(name)
        if not isinstance(value, (int, float)) or t["low"] <= value <= t["high"]:
            continue
        where = "the references for this image span" if t["source"].startswith("references") else "target"
        if name == "tempo_qpm":
            words = "calm" if t["low"] < SLOW_MAX_QPM else "lively"
            msg = f"tempo {_fmt(value)} but the description says {words} ({_fmt(t['low'])}-{_fmt(t['high'])})"
        else:
            msg = f"{name} {_fmt(value)}; {where} {_fmt(t['low'])}-{_fmt(t['high'])}"
        items.append(
            {"code": "off-target", "metric": name, "value": value, "target": [t["low"], t["high"]], "message": msg}
        )
    return items


def score(items: Sequence[Mapping[str, Any]], targets: Mapping[str, Any]) -> float:
    """1.0 when every target is met; lower the more and the farther things miss (each finding counts 1, a
    metric its distance to the band in band widths, at least 0.25)."""
    miss = 0.0
    for it in items:
        t = targets.get(it.get("metric") or "") if it.get("code") == "off-target" else None
        if t is None:
            miss += 1.0
            continue
        width = max(float(t["high"]) - float(t["low"]), 1e-6)
        v = float(it["value"])
        dist = (float(t["low"]) - v) if v < float(t["low"]) else (v - float(t["high"]))
        miss += max(0.25, dist / width)
    return round(1.0 / (1.0 + miss), 4)
