"""Typed routers: where the run goes after the check and after the evaluation, and why.

The decisions are pure functions of the state and the settings. The nodes record them in the state (so a
run's record explains every step); the routers compute the same decision to route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from image2music.graph.config import Settings
from image2music.graph.context import RunContext, context_of
from image2music.graph.state import Decision, State
from image2music.graph.versions import refine_base
from image2music.tools.music.findings import Finding
from langgraph.runtime import Runtime

EDGE_LABELS: dict[tuple[str, str], str] = {
    ("parse_check", "evaluate"): "ok",
    ("parse_check", "compose"): "errors",
    ("parse_check", "reflect"): "errors",
    ("parse_check", "__end__"): "retries spent",
    ("evaluate", "reflect"): "rounds left",
    ("evaluate", "explain"): "done",
}
"""What each conditional edge means, for drawings (one source for mermaid, ASCII and PNG)."""


def render_decision(d: Decision) -> str:
    """One line a person reads: ``reflect because: tempo 140 but the description says calm (30-90); ...``."""
    to = {"__end__": "end"}.get(d["to"], d["to"])
    return f"{to} because: " + "; ".join(d.get("because") or [])


def decide_after_parse_check(state: Mapping[str, Any], settings: Settings) -> Decision:
    """Valid -> evaluate; invalid -> back to the writer with the errors, until the retry budget is spent."""
    latest = state["versions"][-1]
    if latest["ok"]:
        return {
            "after": "parse_check",
            "to": "evaluate",
            "because": [f"valid ABC, {len(latest['warnings'])} warning(s)"],
        }
    if state.get("status") == "failed":
        return {"after": "parse_check", "to": "__end__", "because": [str(state.get("reason") or "retries spent")]}
    writer = "reflect" if latest["node"] == "reflect" else "compose"
    failures = int(state.get("parse_failures", 0))
    first = Finding.from_dict(latest["errors"][0]).render() if latest["errors"] else "no usable ABC"
    return {
        "after": "parse_check",
        "to": writer,
        "because": [
            f"{len(latest['errors'])} error(s), e.g. {first}",
            f"retry {failures} of {settings.max_parse_retries} (I2M_MAX_PARSE_RETRIES)",
        ],
    }


def decide_after_evaluate(state: Mapping[str, Any], settings: Settings) -> Decision:
    """The fixed policy reflects exactly I2M_REFINE_ROUNDS times (the paper); the feedback policy reflects
    while the music misses measurable targets and rounds are left."""
    rounds, cap = int(state.get("refine_round", 0)), settings.refine_rounds
    if settings.refine_policy == "fixed":
        if rounds < cap:
            return {"after": "evaluate", "to": "reflect", "because": [f"fixed policy: round {rounds + 1} of {cap}"]}
        return {"after": "evaluate", "to": "explain", "because": [f"fixed policy: {cap} round(s) done"]}
    latest = state["versions"][-1]
    items = [str(it["message"]) for it in latest.get("feedback") or []]
    if not items:
        return {"after": "evaluate", "to": "explain", "because": [f"version {latest['index'] + 1} meets every target"]}
    if rounds >= cap:
        return {
            "after": "evaluate",
            "to": "explain",
            "because": [f"round cap reached (I2M_REFINE_ROUNDS={cap}); still missing: " + "; ".join(items[:3])],
        }
    because = list(items)
    base = refine_base(state["versions"], settings.refine_policy)
    if base is not None and base["index"] != latest["index"]:
        because.append(
            f"version {latest['index'] + 1} scores {latest.get('score')}, worse than version {base['index'] + 1} "
            f"({base.get('score')}): round {rounds + 1} starts again from version {base['index'] + 1}"
        )
    return {"after": "evaluate", "to": "reflect", "because": because}


def after_parse_check(
    state: State, runtime: Runtime[RunContext]
) -> Literal["evaluate", "compose", "reflect", "__end__"]:
    """Valid -> evaluate; invalid -> back to the writer with the errors, until the retry budget is spent."""
    return decide_after_parse_check(state, context_of(state, runtime).settings)["to"]  # type: ignore[return-value]


def after_evaluate(state: State, runtime: Runtime[RunContext]) -> Literal["reflect", "explain"]:
    """Reflect while the policy says so (see :func:`decide_after_evaluate`), then explain."""
    return decide_after_evaluate(state, context_of(state, runtime).settings)["to"]  # type: ignore[return-value]
