"""Check model output as ABC: extraction, then the reader's located errors and warnings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from image2music.tools.music.abcparse import Limits, Tune, read_tune
from image2music.tools.music.extract import NoABCError, extract_abc
from image2music.tools.music.findings import Finding


@dataclass
class CheckResult:
    """The checker's verdict on one model answer. ``ok`` means no errors (warnings allowed)."""

    extracted: bool
    abc: str
    commentary: str
    title: str | None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    parts: int = 0
    tune: Tune | None = None

    @property
    def ok(self) -> bool:
        return self.extracted and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "extracted": self.extracted,
            "title": self.title,
            "ok": self.ok,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "parts": self.parts,
        }


def check_abc(text: str, limits: Limits | None = None, *, extract: bool = True) -> CheckResult:
    """Extract the tune from ``text`` (unless ``extract`` is false) and check it."""
    limits = limits or Limits()
    if len(text) > limits.max_chars * 4:
        return CheckResult(
            False,
            "",
            "",
            None,
            errors=[
                Finding(f"the answer has {len(text)} characters, far more than a tune may have ({limits.max_chars})")
            ],
        )
    if extract:
        try:
            ex = extract_abc(text)
        except NoABCError as e:
            return CheckResult(False, "", text.strip(), None, errors=[Finding(str(e))])
        abc, commentary, unclosed = ex.abc, ex.commentary, ex.unclosed_fence
        cleaned = ex.cleaned
    else:
        abc, commentary, unclosed, cleaned = text, "", False, ()
    tune = read_tune(abc, limits)
    tune.warnings[:0] = [Finding(message, code=code) for code, message in cleaned]
    if unclosed:
        # an answer whose ```abc block never closes and whose last bar is short was cut off: write it again
        cut = [w for w in tune.warnings if w.code == "truncated"]
        if cut:
            tune.warnings = [w for w in tune.warnings if w.code != "truncated"]
            tune.errors.extend(
                dataclasses.replace(
                    w, message=f"the answer looks truncated: its ```abc block never closes and {w.message}"
                )
                for w in cut
            )
    return CheckResult(
        extracted=True,
        abc=abc,
        commentary=commentary,
        title=tune.title,
        errors=list(tune.errors),
        warnings=list(tune.warnings),
        parts=len(tune.voices),
        tune=tune,
    )
