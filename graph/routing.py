"""Typed routers: where the run goes after the check and after the evaluation."""

from __future__ import annotations

from typing import Literal

from image2music.graph.context import RunContext, context_of
from image2music.graph.state import State
from langgraph.runtime import Runtime


def after_parse_check(
    state: State, runtime: Runtime[RunContext]
) -> Literal["evaluate", "compose", "reflect", "__end__"]:
    """Valid -> evaluate; invalid -> back to the writer with the errors, until the retry budget is spent."""
    latest = state["versions"][-1]
    if latest["ok"]:
        return "evaluate"
    if state.get("status") == "failed":
        return "__end__"  # END: retries spent, the run finishes failed
    return "reflect" if latest["node"] == "reflect" else "compose"


def after_evaluate(state: State, runtime: Runtime[RunContext]) -> Literal["reflect", "explain"]:
    """Reflect while refine rounds remain (every round, as in the paper), then explain."""
    if int(state.get("refine_round", 0)) < context_of(state, runtime).settings.refine_rounds:
        return "reflect"
    return "explain"
