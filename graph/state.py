"""The graph's state: what each node reads and the partial updates it returns."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


def upsert_versions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions keyed by ``index``: a new index appends, a known index replaces (evaluate adds metrics)."""
    out = list(old or [])
    for v in new or []:
        i = int(v["index"])
        if i < len(out):
            out[i] = v
        else:
            out.append(v)
    return out


def add_counts(old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """Per-node VLM call counters: added, so the k-th call of a node is known from the state."""
    out = dict(old or {})
    for k, v in (new or {}).items():
        out[k] = out.get(k, 0) + v
    return out


def merge_dicts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {**(old or {}), **(new or {})}


class InputState(TypedDict, total=False):
    """What a run starts from."""

    image: str
    """Path of the input image."""
    user_feedback: str
    """A person's words for the next reflect round (interactive refine)."""


class State(InputState, total=False):
    """Everything a run knows. Nodes return partial updates; reducers say how lists and counters merge."""

    description: str
    """The VLM's description of the image (describe)."""
    references: list[dict[str, Any]]
    """Retrieved music: {id, caption, abc, score, via, metadata}."""
    draft: dict[str, Any]
    """The latest answer of compose or reflect, not yet checked: {node, text}."""
    versions: Annotated[list[dict[str, Any]], upsert_versions]
    """Every checked version: {index, node, abc, ok, errors, warnings, metrics, commentary, title}."""
    parse_failures: int
    """Failed checks in a row for the current writer (compose or a reflect round)."""
    refine_round: int
    """Reflect rounds started."""
    calls: Annotated[dict[str, int], add_counts]
    """VLM calls made so far per node."""
    attention: Annotated[dict[str, Any], merge_dicts]
    """Attention maps: name -> {grid, shape, method}."""
    motivation: str
    """The explain node's text."""
    status: str
    """ok | failed, once known."""
    reason: str | None
    """Why the run failed (None when ok)."""
    path: Annotated[list[str], operator.add]
    """Node ids in the order they ran."""
    timings: Annotated[list[float], operator.add]
    """Seconds per entry of ``path``."""
