"""image2music: turn a picture into music you can read, play and understand.

The public Python API is ``from image2music import compose``. The installed package holds the graph
(``image2music.graph``), the tools (``image2music.tools``), the prompt templates (``image2music.prompts``)
and the application around them (runner, run database, CLI, chat, report, evaluation).
"""

from __future__ import annotations

from typing import Any

__all__ = ["compose", "Result"]


def __getattr__(name: str) -> Any:  # lazy: importing the CLI must not load models or LangGraph eagerly
    if name in __all__:
        from image2music import api

        return getattr(api, name)
    raise AttributeError(name)
