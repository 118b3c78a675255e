"""The interface every VLM backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from image2music.tools.errors import RunError

if TYPE_CHECKING:  # numpy and PIL only annotate here; light commands (i2m abc check) import this module
    import threading
    from collections.abc import Callable

    import numpy as np
    from PIL import Image

VLM_NODES = ("describe", "compose", "reflect", "explain", "judge")
"""The places that call a VLM: the graph's writing nodes and the evaluation's judge (one list)."""


class VLMError(RunError):
    """A model could not be loaded or could not answer; the message says what to do. ``retries``: what a served
    model's call retried before it failed (``"compose call 1: HTTP 503: retry 1 in 1.0 s"``)."""

    retries: list[str] = []


@dataclass
class GenerationSettings:
    """Per-call generation settings (from config, per node)."""

    max_new_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    grammar: bool = False
    """Constrain the answer to the ABC answer grammar (compose and reflect, ``I2M_GRAMMAR=on``)."""


@dataclass
class VLMResult:
    """One answer. ``token_attention`` holds, per generated token, its attention to the image grid
    (averaged over layers and heads), when the backend could capture it; ``grid`` is (rows, cols)."""

    text: str
    token_attention: np.ndarray | None = None  # [n_tokens, rows*cols]
    grid: tuple[int, int] | None = None
    token_offsets: list[int] = field(default_factory=list)  # char offset in text where each token ends
    meta: dict[str, Any] = field(default_factory=dict)

    def attention_map(self, start_char: int = 0, end_char: int | None = None) -> np.ndarray | None:
        """Mean attention over the tokens that produced ``text[start_char:end_char]`` (paper eq. 2)."""
        if self.token_attention is None or self.grid is None or len(self.token_attention) == 0:
            return None
        rows = self.token_attention
        if self.token_offsets and (start_char > 0 or end_char is not None):
            end = end_char if end_char is not None else len(self.text)
            offs = self.token_offsets[: len(rows)]
            # the tokens whose text overlaps [start_char, end): token i spans offs[i - 1] to offs[i]
            idx = [i for i, off in enumerate(offs) if off > start_char and (offs[i - 1] if i else 0) < end]
            if not idx:
                return None
            rows = rows[idx]
        return rows.mean(axis=0).reshape(self.grid)


class VLM(Protocol):
    """A vision-language model that answers a text prompt about one image. ``on_text``, when given, receives
    the answer as it is written, piece by piece (for display only: the result's ``text`` is the answer).
    ``stop``, when set, ends the call early (at the next token or read): the caller drops what it returns."""

    name: str

    def generate(
        self,
        *,
        node: str,
        prompt: str,
        image: Image.Image,
        call_index: int,
        settings: GenerationSettings,
        capture_attention: bool = False,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> VLMResult: ...
