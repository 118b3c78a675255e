"""Drawing the graph: mermaid, ASCII, PNG (graphviz, offline), and the path a run actually took."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from image2music.graph.builder import build_graph
from image2music.graph.versions import steps


class VizError(RuntimeError):
    """A drawing could not be made (e.g. graphviz missing)."""


def _edges() -> list[tuple[str, str, bool]]:
    g = build_graph().get_graph()
    return [(e.source, e.target, bool(e.conditional)) for e in g.edges]


def mermaid() -> str:
    return str(build_graph().get_graph().draw_mermaid())


def ascii_art() -> str:
    return str(build_graph().get_graph().draw_ascii())


def dot() -> str:
    lines = ["digraph i2m {", '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f2f0ff"];']
    for src, dst, cond in _edges():
        style = " [style=dashed]" if cond else ""
        lines.append(f'  "{src}" -> "{dst}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_path_mermaid(record: dict[str, Any]) -> str:
    """The path of a run: each step numbered, with its seconds, retries and refine rounds visible."""
    path, timings = record.get("path", []), record.get("timings", [])
    lines = ["graph TD;", "  __start__([start]):::first"]
    seen: set[str] = set()
    for node in path:
        if node not in seen:
            lines.append(f"  {node}({node})")
            seen.add(node)
    prev = "__start__"
    for i, (node, secs) in enumerate(zip(path, timings, strict=False), start=1):
        lines.append(f"  {prev} -->|{i}: {secs:.2f}s| {node}")
        prev = node
    status = record.get("status", "?")
    lines.append(f"  {prev} --> __end__([{status}])")
    lines.append("  classDef first fill-opacity:0")
    return "\n".join(lines) + "\n"


def run_path_ascii(record: dict[str, Any]) -> str:
    """One line per step: seconds, and whether it was a retry or a refine round."""
    out = []
    decisions = iter(record.get("decisions") or [])
    for step in steps(record.get("path", []), record.get("timings", [])):
        note = f"  ({step.label})" if step.label else ""
        out.append(f"{step.number:>3}. {step.node:<12} {step.seconds:8.2f}s{note}")
        if step.node in ("parse_check", "evaluate"):
            d = next(decisions, None)
            if d is not None and (step.node == "evaluate" or d["to"] != "evaluate"):
                out.append(f"       -> {d['to']} because: {'; '.join(d.get('because') or [])}")
    out.append(f"     -> {record.get('status')}")
    return "\n".join(out) + "\n"


def run_path_dot(record: dict[str, Any]) -> str:
    lines = ["digraph run {", '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f2f0ff"];']
    prev = "start"
    lines.append('  "start" [shape=oval, fillcolor=white];')
    for i, (node, secs) in enumerate(zip(record.get("path", []), record.get("timings", []), strict=False), start=1):
        lines.append(f'  "{prev}" -> "{node}" [label="{i}: {secs:.2f}s"];')
        prev = node
    lines.append(f'  "{prev}" -> "{record.get("status", "end")}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_png(dot_text: str, timeout_s: float = 30.0) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise VizError(
            "PNG needs graphviz's `dot`: install the Debian package 'graphviz' (macOS: brew install "
            "graphviz); or use --format mermaid / ascii"
        )
    proc = subprocess.run([exe, "-Tpng"], input=dot_text.encode(), capture_output=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise VizError(f"graphviz failed: {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout
