"""image2music's graph, runner, CLI and Python API (``from graph import compose``)."""

from __future__ import annotations

from typing import Any

__all__ = ["compose", "Result"]


def __getattr__(name: str) -> Any:  # lazy: importing graph.cli must not load models or LangGraph eagerly
    if name in __all__:
        from graph import api

        return getattr(api, name)
    raise AttributeError(name)
