"""The run context: what every node of one run may use, and is not part of the checkpointed state."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from graph.config import Settings
from prompts import Prompt
from tools.vlm import VLM, GenerationSettings, VLMResult


@dataclass
class RunContext:
    """Settings, models, prompts and the run directory of one run (``Runtime[RunContext].context``)."""

    settings: Settings
    vlm: VLM
    prompts: dict[str, Prompt]
    run_dir: Path
    image: Image.Image
    retriever: Any = None
    """Callable (image, description) -> references; None runs without examples."""
    fallback_map: Any = None
    """Callable text -> attention grid for backends without attentions (CLIP occlusion); None when off."""
    results: dict[str, VLMResult] = field(default_factory=dict)
    """The latest raw VLM result per node in this process (attention rows for maps)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generation(self, node: str) -> GenerationSettings:
        """Generation settings of a node: the global ones, per-node token caps, then I2M_NODE_GENERATION."""
        s = self.settings
        max_new = {"describe": s.describe_max_new_tokens, "explain": s.explain_max_new_tokens}.get(
            node, s.max_new_tokens
        )
        base = {"max_new_tokens": max_new, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed}
        base.update(s.node_generation.get(node, {}))
        return GenerationSettings(
            max_new_tokens=int(base["max_new_tokens"]),
            temperature=float(base["temperature"]),
            top_p=float(base["top_p"]),
            seed=int(base["seed"]),
        )

    def ask(self, node: str, prompt: str, call_index: int, capture_attention: bool = False) -> VLMResult:
        """One VLM call, recorded in ``vlm_calls.jsonl`` (replayable)."""
        result = self.vlm.generate(
            node=node,
            prompt=prompt,
            image=self.image,
            call_index=call_index,
            settings=self.generation(node),
            capture_attention=capture_attention,
        )
        record = {"node": node, "text": result.text, "call": call_index, "prompt": prompt}
        with self._lock:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "vlm_calls.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
        self.results[node] = result
        return result
