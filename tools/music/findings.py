"""Located findings reported by the ABC checker."""

from __future__ import annotations

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in ("line", "column", "bar", "voice", "message")}

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
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            message=str(d.get("message", "")),
            line=d.get("line"),
            column=d.get("column"),
            bar=d.get("bar"),
            voice=d.get("voice"),
        )
