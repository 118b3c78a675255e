"""Typed routers: where the run goes after the check and after the evaluation, and why.

Each decision is computed once, by a pure function of the state the node leaves (its update merged by the
state's own reducers) and the settings; the node records it (so a run's record explains every step) and the
router routes on exactly that record. ``decision_path_problems`` checks that every recorded decision's ``to`` is
the node that ran next.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Literal

from image2music.graph.config import Settings, load_settings
from image2music.graph.state import Decision, State
from image2music.graph.versions import refine_base
from image2music.tools.music.findings import Finding

EDGE_LABELS: dict[tuple[str, str], str] = {
    ("parse_check", "evaluate"): "ok",
    ("parse_check", "compose"): "errors",
    ("parse_check", "reflect"): "revision errors",
    ("parse_check", "__end__"): "retries spent",
    ("evaluate", "reflect"): "rounds left",
    ("evaluate", "explain"): "done",
}
"""What each conditional edge means (one source for the graph LangGraph serves, mermaid, ASCII and PNG)."""


def edge_map(source: str) -> dict[Hashable, str]:
    """label -> target of the conditional edges leaving ``source`` (LangGraph's ``path_map``)."""
    return {label: dst for (src, dst), label in EDGE_LABELS.items() if src == source}


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
    writer = "reflect" if latest["node"] == "reflect" else "compose"
    failures = int(state.get("parse_failures", 0))
    first = Finding.from_dict(latest["errors"][0]).render() if latest["errors"] else "no usable ABC"
    if failures > settings.max_parse_retries:  # the retry budget: decided here only
        return {
            "after": "parse_check",
            "to": "__end__",
            "because": [
                f"no valid ABC after {failures} attempt(s) (I2M_MAX_PARSE_RETRIES={settings.max_parse_retries})",
                f"last error: {first}",
            ],
        }
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


def _recorded(state: State, node: str) -> Decision | None:
    decisions = state.get("decisions") or []
    return decisions[-1] if decisions and decisions[-1].get("after") == node else None


def after_parse_check(state: State) -> Literal["ok", "errors", "revision errors", "retries spent"]:
    """Where parse_check's recorded decision says (valid -> evaluate; invalid -> the writer, until the retry
    budget is spent -> end). Routers read the state only: LangGraph's server also runs them outside a run (a
    client's ``update_state`` at a pause, Studio's state editor), where no run context exists."""
    d = _recorded(state, "parse_check") or decide_after_parse_check(state, load_settings())
    return EDGE_LABELS[("parse_check", d["to"])]  # type: ignore[return-value]


def after_evaluate(state: State) -> Literal["rounds left", "done"]:
    """Where evaluate's recorded decision says (see :func:`decide_after_evaluate`)."""
    d = _recorded(state, "evaluate") or decide_after_evaluate(state, load_settings())
    return EDGE_LABELS[("evaluate", d["to"])]  # type: ignore[return-value]


def decision_path_problems(path: list[str], decisions: list[Decision], finished: bool = True) -> list[str]:
    """Every recorded decision whose ``to`` is not the node that ran next (the k-th decision after a node
    belongs to that node's k-th run). A decision after the last node run is checked only when the run
    finished (``to`` must then be the end)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for d in decisions:
        after = str(d.get("after"))
        k = seen.get(after, 0)
        seen[after] = k + 1
        runs = [i for i, n in enumerate(path) if n == after]
        if k >= len(runs):
            problems.append(f"a decision after {after} run {k + 1}, which is not in the path")
            continue
        i = runs[k]
        nxt = path[i + 1] if i + 1 < len(path) else "__end__"
        if nxt == "__end__" and not finished:
            continue
        if d.get("to") != nxt:
            problems.append(f"after {after} run {k + 1} the decision says {d.get('to')}, the path {nxt}")
    return problems
