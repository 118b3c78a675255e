"""How a run looks in a terminal: the metrics table at any width, the live line, untrusted text."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from image2music.display import metrics_table, tail_line
from image2music.tools.music.metrics import METRIC_MEANINGS


def _version(i: int, ok: bool = True) -> Any:
    metrics = dict.fromkeys(METRIC_MEANINGS, 0.947)
    return {"node": "compose" if i == 0 else "reflect", "ok": ok, "metrics": metrics, "warnings": [], "errors": []}


@pytest.mark.parametrize("versions", [1, 4, 5, 9])
@pytest.mark.parametrize("width", [80, 120])
def test_every_metric_name_is_whole_with_any_number_of_versions(versions: int, width: int) -> None:
    """Before: at 80 columns 2 of 10 names were cut with 4 versions, 8 of 10 with 5."""
    console = Console(width=width, record=True)
    console.print(metrics_table([_version(i, ok=i != 2) for i in range(versions)], width), soft_wrap=False)
    text = console.export_text()
    assert all(len(line) <= width for line in text.splitlines())
    for name in METRIC_MEANINGS:
        assert f"│ {name} " in text, name
    assert "…" not in text  # no header or value cut either
    shown = sum(f"v{i + 1}" in text for i in range(versions))
    assert shown == versions or "not shown: too narrow" in text
    assert f"v{versions}" in text and "v1" in text  # the first and the latest are always there


def test_the_live_line_keeps_the_end_of_the_answer_within_the_width() -> None:
    from rich.cells import cell_len

    assert tail_line("abc\nG2 AB c2 BA | d4 e4 |", 10) == "…| d4 e4 |"  # the last line's end, one column for …
    assert tail_line("short\n", 40) == "short" and len(tail_line("y" * 500, 30)) == 30
    wide = tail_line("漢字" * 40, 21)
    assert wide.startswith("…") and cell_len(wide) == 21  # wide characters count as two cells
    assert tail_line("a\x1b]52;c;x\x07", 40) == "a\\x1b]52;c;x\\x07"  # shown, not obeyed


def test_every_node_of_the_graph_has_its_display_hint() -> None:
    """A node added to the graph needs one more thing outside graph/: its line in NODE_HINTS (what the spinner
    says after it, what its model writing is called, its ✓ line's detail); nothing else in the app names it."""
    from image2music.display import NODE_HINTS
    from image2music.graph.builder import build_graph

    nodes = {n for n in build_graph().get_graph().nodes if not n.startswith("__")}
    assert set(NODE_HINTS) == nodes, f"give each node a NodeHint in image2music/display.py: {nodes ^ set(NODE_HINTS)}"
    assert all(h.then for h in NODE_HINTS.values())
