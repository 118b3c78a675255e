"""image2music: turn a picture into music you can read, play and understand.

The public Python API is ``from image2music import compose``. The installed package holds the graph
(``image2music.graph``), the tools (``image2music.tools``), the prompt templates (``image2music.prompts``)
and the application around them (runner, run database, CLI, chat, report, evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["compose", "Result"]

# In a source checkout, Python started in the repository's root finds this folder first (before the installed
# link tree); its sibling folders graph/, tools/ and prompts/ are then this package's subpackages too.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "setup.py").is_file() and (_checkout / "graph" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # type: ignore[name-defined]  # noqa: F821 - a package's own __path__


def __getattr__(name: str) -> Any:  # lazy: importing the CLI must not load models or LangGraph eagerly
    if name in __all__:
        from image2music import api

        return getattr(api, name)
    raise AttributeError(name)
