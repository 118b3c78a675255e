"""Located findings reported by the ABC checker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One problem in an ABC tune.

    ``line`` and ``column`` are 1-based and counted inside the extracted tune; ``bar`` is the 1-based bar
    number within ``voice``. Any of them is ``None`` when unknown.
    """

    message: str
    line: int | None = None
    column: int | None = None
    bar: int | None = None
    voice: str | None = None
    code: str = "syntax"
    """Stable kind of finding that code reacts to (never the message text); see ``CODES``."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in ("line", "column", "bar", "voice", "code", "message")}

    def render(self) -> str:
        """One human/model readable line: ``line 3, col 5 (bar 2, voice RH): message``."""
        where = []
        if self.line is not None:
            where.append(f"line {self.line}" + (f", col {self.column}" if self.column is not None else ""))
        extra = []
        if self.bar is not None:
            extra.append(f"bar {self.bar}")
        if self.voice is not None:
            extra.append(f"voice {self.voice}")
        prefix = " ".join(where)
        if extra:
            prefix = f"{prefix} ({', '.join(extra)})" if prefix else ", ".join(extra)
        return f"{prefix}: {self.message}" if prefix else self.message

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(
            message=str(d.get("message", "")),
            line=d.get("line"),
            column=d.get("column"),
            bar=d.get("bar"),
            voice=d.get("voice"),
            code=str(d.get("code") or "syntax"),
        )


CODES = {
    "syntax": "the text is not readable ABC at this place",
    "no-abc": "no ABC tune was found in the answer",
    "no-notes": "the tune has no notes (or only rests)",
    "guard": "a size or time guard refused the tune (too long, too many notes, absurd lengths)",
    "unknown-key": "a K: field the reader does not know",
    "unknown-meter": "an M: field the reader does not know (read as free meter)",
    "bad-length": "an impossible L: unit or note length",
    "tempo": "a Q: field that cannot be read as a tempo (the default tempo is used)",
    "missing-header": "X:, M:, L: or K: is missing and a default is assumed",
    "bar-length": "a bar is longer or shorter than its meter",
    "pickup-mismatch": "the pickup and the closing bar of a section do not add up to one bar",
    "voice-length": "voices of different length",
    "truncated": "the answer looks cut off (unclosed fence, short last bar, open chord)",
    "unclosed": "an unclosed slur, tuplet or chord",
    "cosmetic": "something ABC readers tolerate (odd whitespace, stray ':', empty chord, unknown clause)",
    "internal": "a music tool failed on this tune",
    "special-token": "model tokens (</s>, <|im_end|>, [EOS] ...) were removed from the answer",
    "line-marker": "line numbers or list markers before music lines were removed",
    "spaced-length": "a note length written as its own token ('C 2') was joined to its note",
    "token-text": "header fields written on one line (a tune as space-separated tokens) were split",
}
"""Every finding code, with what it means."""
