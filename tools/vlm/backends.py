"""The VLM backends and what each can do: one table every caller asks, instead of comparing names.

A new backend is a row here and a case in ``make_vlm``; ``graph.config.Settings.vlm_backend`` lists the same
names (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from image2music.tools.vlm.base import VLMError


@dataclass(frozen=True)
class Backend:
    """What a backend can do."""

    name: str
    local: bool
    """Loads a model's weights in this process (a download, memory, the CPU cost said before loading)."""
    served: bool
    """Asks a server at a base URL (retries, a server's grammar dialect, a resume may name another server)."""
    recorded: bool
    """Answers come from a file of recorded answers (no model: nothing to load, no map to make)."""
    attention: bool
    """Can return where the model looked (attention maps); otherwise a CLIP occlusion map stands in."""
    streaming: bool
    """Hands its answer over as it is written."""
    grammar: str
    """How the ABC grammar constrains its answers: ``local`` (a logits processor), ``server`` (per
    ``I2M_VLM_SERVER``) or ``none``."""
    no_map: str
    """Why a run of this backend may have no attention map (the report says it)."""

    def label(self, model: str, replay_file: Path | str | None = None, base_url: str | None = None) -> str:
        """What answers: ``replay:calls.jsonl``, ``transformers:Qwen/...`` or ``openai:name@url``."""
        if self.recorded:
            return f"{self.name}:{Path(str(replay_file)).name}"
        if self.served:
            return f"{self.name}:{model}@{base_url}"
        return f"{self.name}:{model}"


BACKENDS: dict[str, Backend] = {
    "transformers": Backend(
        name="transformers", local=True, served=False, recorded=False, attention=True, streaming=True,
        grammar="local",
        no_map="No attention map: the model's image-token layout is not known, it reads the image by "
        "cross-attention, or the capture was turned off.",
    ),
    "openai": Backend(
        name="openai", local=False, served=True, recorded=False, attention=False, streaming=True,
        grammar="server",
        no_map="No attention map: the served model exposes no attentions and the CLIP fallback was not available.",
    ),
    "replay": Backend(
        name="replay", local=False, served=False, recorded=True, attention=False, streaming=True, grammar="none",
        no_map="No attention map: recorded answers (the replay backend) carry no attentions.",
    ),
}  # fmt: skip


def backend(name: str) -> Backend:
    """The backend called ``name``; VLMError naming the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise VLMError(f"unknown VLM backend '{name}': use one of {', '.join(BACKENDS)}") from None
