"""Drawing the graph: mermaid, ASCII, PNG (graphviz, offline), and the path a run actually took."""

from __future__ import annotations

import shutil
import subprocess

from image2music.graph.builder import build_graph
from image2music.graph.routing import EDGE_LABELS, render_decision
from image2music.graph.state import NODE_IDS
from image2music.graph.versions import steps
from image2music.record import RunRecord


class VizError(RuntimeError):
    """A drawing could not be made (e.g. graphviz missing)."""


def _edges() -> list[tuple[str, str, str]]:
    """(source, target, label) of every edge of the compiled graph; conditional edges carry their meaning."""
    g = build_graph().get_graph()
    return [(e.source, e.target, EDGE_LABELS.get((e.source, e.target), "")) for e in g.edges]


_ORDER = ["__start__", *NODE_IDS, "__end__"]
_ROUTERS = {src for src, _dst in EDGE_LABELS}
"""The nodes whose decisions choose the next step (their conditional edges are labelled)."""


def mermaid() -> str:
    """A mermaid flowchart with labelled loops (paste into any mermaid viewer)."""
    lines = ["graph TD;", "  __start__([start]):::first", "  __end__([end]):::last"]
    lines += [f"  {n}({n})" for n in NODE_IDS]
    for src, dst, label in _edges():
        arrow = f"-. {label} .->" if label else "-->"
        lines.append(f"  {src} {arrow} {dst}")
    lines += ["  classDef first fill-opacity:0", "  classDef last fill:#bfb6fc"]
    return "\n".join(lines) + "\n"


def ascii_art() -> str:
    """The graph as a vertical list: each node, then where it goes (and why); loops back are marked."""
    out: list[str] = []
    edges = _edges()
    for node in _ORDER[:-1]:
        out.append("start" if node == "__start__" else node)
        outgoing = sorted(((d, lbl) for s, d, lbl in edges if s == node), key=lambda e: _ORDER.index(e[0]))
        for k, (dst, label) in enumerate(outgoing):
            branch = "└" if k == len(outgoing) - 1 else "├"
            name = "end" if dst == "__end__" else dst
            back = "  (loops back)" if _ORDER.index(dst) <= _ORDER.index(node) else ""
            out.append(f"  {branch}─{(' ' + label + ' ') if label else ''}─▶ {name}{back}")
    out.append("end")
    return "\n".join(out) + "\n"


def dot() -> str:
    """Graphviz source with labelled conditional edges (dashed)."""
    lines = ["digraph i2m {", '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f2f0ff"];']
    lines.append('  "__start__" [label="start", shape=oval, fillcolor=white];')
    lines.append('  "__end__" [label="end", shape=oval, fillcolor="#bfb6fc"];')
    for src, dst, label in _edges():
        attrs = f' [style=dashed, label="{label}"]' if label else ""
        lines.append(f'  "{src}" -> "{dst}"{attrs};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _step_notes(record: RunRecord) -> list[str]:
    """Per step of the path, what went wrong in it (an invalid version at a check), else ''."""
    versions = iter(record.get("versions") or [])
    notes = []
    for node in record.get("path", []):
        note = ""
        if node == "parse_check":
            v = next(versions, None)
            if v is not None and not v.get("ok"):
                note = f"✗ invalid: {len(v.get('errors') or [])} error(s)"
        notes.append(note)
    return notes


def run_path_mermaid(record: RunRecord) -> str:
    """The path of a run: each step numbered, with its seconds, retries and refine rounds visible."""
    path, timings = record.get("path", []), record.get("timings", [])
    lines = ["graph TD;", "  __start__([start]):::first"]
    seen: set[str] = set()
    for node in path:
        if node not in seen:
            lines.append(f"  {node}({node})")
            seen.add(node)
    prev = "__start__"
    notes = _step_notes(record)
    for i, (node, secs) in enumerate(zip(path, timings, strict=False), start=1):
        mark = " ✗" if notes[i - 1] else ""
        lines.append(f"  {prev} -->|{i}: {secs:.2f}s{mark}| {node}")
        prev = node
    status = record.get("status", "?")
    lines.append(f"  {prev} --> __end__([{status}]):::{'failed' if status != 'ok' else 'ok'}")
    lines += ["  classDef first fill-opacity:0", "  classDef failed fill:#f8b4b4", "  classDef ok fill:#b6f2c0"]
    return "\n".join(lines) + "\n"


def run_path_ascii(record: RunRecord) -> str:
    """One line per step: seconds, and whether it was a retry or a refine round."""
    out = []
    decisions = iter(record.get("decisions") or [])
    failed = _step_notes(record)
    for step in steps(record.get("path", []), record.get("timings", [])):
        note = f"  ({step.label})" if step.label else ""
        bad = f"  {failed[step.number - 1]}" if failed[step.number - 1] else ""
        out.append(f"{step.number:>3}. {step.node:<12} {step.seconds:8.2f}s{note}{bad}")
        if step.node in _ROUTERS:
            d = next(decisions, None)
            if d is not None and (step.node == "evaluate" or d["to"] != "evaluate"):
                out.append(f"       -> {render_decision(d)}")
    reason = f": {record['reason']}" if record.get("reason") else ""
    out.append(f"     -> {record.get('status')}{reason}")
    return "\n".join(out) + "\n"


def run_path_dot(record: RunRecord) -> str:
    lines = ["digraph run {", '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f2f0ff"];']
    prev = "start"
    lines.append('  "start" [shape=oval, fillcolor=white];')
    notes = _step_notes(record)
    for i, (node, secs) in enumerate(zip(record.get("path", []), record.get("timings", []), strict=False), start=1):
        colour = ', color="#c0392b", fontcolor="#c0392b"' if notes[i - 1] else ""
        mark = " ✗" if notes[i - 1] else ""
        lines.append(f'  "{prev}" -> "{node}" [label="{i}: {secs:.2f}s{mark}"{colour}];')
        prev = node
    status = str(record.get("status", "end"))
    fill = "#b6f2c0" if status == "ok" else "#f8b4b4"
    lines.append(f'  "{status}" [shape=oval, fillcolor="{fill}"];')
    lines.append(f'  "{prev}" -> "{status}";')
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
