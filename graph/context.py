"""The run context: plain data that every node of one run may read (not part of the checkpointed state).

Models, the image, prompts and the retriever are not in it: nodes get them from the cached factories in
:mod:`image2music.graph.services`, keyed by this data, as the LangGraph templates load their model from the
context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from image2music.graph.config import Settings, load_settings
from image2music.graph.state import State
from image2music.tools.errors import InputError
from image2music.tools.files import safe_name
from image2music.tools.vlm import GenerationSettings
from langgraph.runtime import Runtime


@dataclass(frozen=True)
class RunContext:
    """Settings, identity and files of one run (``Runtime[RunContext].context``)."""

    settings: Settings
    run_id: str
    image_path: Path
    """The input image (its copy in the run dir is what the report shows)."""
    run_dir: Path
    prompt_paths: dict[str, Path] = field(default_factory=dict)
    """Per-node prompt file overrides; nodes without one use the built-in template."""

    def generation(self, node: str) -> GenerationSettings:
        """Generation settings of a node: the global ones, per-node token caps, then I2M_NODE_GENERATION."""
        return self.settings.generation(node)


def context_of(state: State, runtime: Runtime[RunContext]) -> RunContext:
    """The run context; when the graph runs without one (``langgraph dev`` / Studio), one is made from the
    environment's settings, the state's image and the thread id (so a thread keeps one run dir)."""
    if runtime.context is not None:
        return runtime.context
    image = state.get("image")
    if not image:
        raise InputError("the input needs an 'image' path")
    from langgraph.config import get_config

    thread = str(get_config().get("configurable", {}).get("thread_id") or "default")
    settings = load_settings()
    run_id = f"studio-{safe_name(thread, default='thread')}"
    return RunContext(settings=settings, run_id=run_id, image_path=Path(image), run_dir=settings.runs_dir / run_id)
