"""image2music: turn a picture into music you can read, play and understand.

The public Python API is ``from image2music import compose``. The installed package holds the graph
(``image2music.graph``), the tools (``image2music.tools``), the prompt templates (``image2music.prompts``)
and the application around them (runner, run database, CLI, chat, report, evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["compose", "Result"]

LINKS = ("graph", "tools", "prompts")
"""In a checkout these are relative links to the repository's top-level folders; in a wheel, folders."""
_lost = [name for name in LINKS if not (Path(__file__).parent / name).is_dir()]
if _lost:  # a checkout made without symbolic links (git's core.symlinks off, e.g. Windows without Developer Mode)
    raise ImportError(
        f"image2music/{_lost[0]} is not a link to ../{_lost[0]} in this checkout: run "
        "`git config core.symlinks true && git checkout -- image2music` (Windows: enable Developer Mode first)"
    )


def __getattr__(name: str) -> Any:  # lazy: importing the CLI must not load models or LangGraph eagerly
    if name in __all__:
        from image2music import api

        return getattr(api, name)
    raise AttributeError(name)
