"""Reducers: how node updates merge into the state."""

from __future__ import annotations

from image2music.graph.builder import build_graph
from image2music.graph.state import NODE_IDS, add_counts, merge_dicts, upsert_versions


def test_upsert_versions_appends_new_and_replaces_known_indexes() -> None:
    old = [{"index": 0, "ok": True, "metrics": None}]
    out = upsert_versions(old, [{"index": 0, "ok": True, "metrics": {"x": 1.0}}, {"index": 1, "ok": False}])  # type: ignore[list-item]
    assert [v["index"] for v in out] == [0, 1] and out[0]["metrics"] == {"x": 1.0}
    assert old[0]["metrics"] is None  # the old list is not mutated


def test_counts_add_and_dicts_merge() -> None:
    assert add_counts({"compose": 1}, {"compose": 1, "reflect": 1}) == {"compose": 2, "reflect": 1}
    assert merge_dicts({"a": 1}, {"b": 2, "a": 3}) == {"a": 3, "b": 2}
    assert add_counts(None, None) == {}  # type: ignore[arg-type]


def test_node_ids_are_the_graphs_nodes() -> None:
    nodes = set(build_graph().get_graph().nodes) - {"__start__", "__end__"}
    assert nodes == set(NODE_IDS)
