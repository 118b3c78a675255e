"""The image-to-music graph: describe -> retrieve -> compose -> parse_check -> evaluate -> reflect -> explain."""

from __future__ import annotations

import functools
from typing import Any

from langgraph.graph import END, START, StateGraph

from image2music.graph import nodes
from image2music.graph.context import RunContext
from image2music.graph.routing import after_evaluate, after_parse_check, edge_map
from image2music.graph.state import NODE_IDS, InputState, OutputState, State


def build_graph(checkpointer: Any = None) -> Any:
    """The compiled graph; pass a checkpointer to make runs durable and resumable. A person's pause before a
    refine round is inside the graph (reflect's ``interrupt()``, I2M_HUMAN_PAUSE), the same for the chat, Studio
    and the SDK. Compiled once per process for each set of node functions; a run with its own checkpointer gets a
    copy that holds it (as LangGraph's ``with_config`` copies a graph), not a second compilation."""
    graph = _compiled(tuple(getattr(nodes, name) for name in NODE_IDS))
    return graph if checkpointer is None else graph.copy({"checkpointer": checkpointer})


@functools.lru_cache(maxsize=8)
def _compiled(functions: tuple[Any, ...]) -> Any:
    """Keyed by the node functions too: a node replaced (a test's patch, a plug-in) compiles a new graph."""
    g = StateGraph(State, context_schema=RunContext, input_schema=InputState, output_schema=OutputState)
    for name, function in zip(NODE_IDS, functions, strict=True):
        g.add_node(name, function)
    g.add_edge(START, "describe")
    g.add_edge("describe", "retrieve")
    g.add_edge("retrieve", "compose")
    g.add_edge("compose", "parse_check")
    # the routers answer with the edge's label, which names its meaning in every drawing (Studio's too)
    g.add_conditional_edges("parse_check", after_parse_check, edge_map("parse_check"))
    g.add_conditional_edges("evaluate", after_evaluate, edge_map("evaluate"))
    g.add_edge("reflect", "parse_check")
    g.add_edge("explain", END)
    return g.compile()


graph = build_graph()
"""Module-level compiled graph (no checkpointer) for ``langgraph dev`` / Studio via langgraph.json."""
