"""How a run is shown in the terminal (``i2m runs show`` and ``i2m chat``)."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len, get_character_cell_size
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from image2music.graph.config import ABC_NODES
from image2music.graph.state import State, Version
from image2music.record import RunRecord
from image2music.tools.music.metrics import METRIC_MEANINGS


def safe(text: object) -> Text:
    """Untrusted text for the terminal, as rich Text (never markup, control characters shown)."""
    return Text(terminal_safe(str(text)))


def highlight_abc(abc: str) -> Text:
    """ABC with headers, comments, bar lines and accidentals coloured (control characters shown, not obeyed)."""
    out = Text()
    for line in terminal_safe(abc).rstrip("\n").split("\n"):
        s = line.strip()
        if s.startswith("%"):
            out.append(line + "\n", style="green")
        elif len(s) > 1 and s[1] == ":" and s[0].isalpha():
            out.append(line[:2], style="bold cyan")
            out.append(line[2:] + "\n", style="cyan")
        else:
            for ch in line:
                style = "bold magenta" if ch in "|:[]" else "yellow" if ch in "^_=" else None
                out.append(ch, style=style)
            out.append("\n")
    return out


def metrics_table(versions: list[Version], width: int | None = None) -> Table:
    """Metrics of every version side by side (before and after refinement). The metric names are never cut:
    when ``width`` (the terminal's) cannot hold every version, the first and the latest that fit are shown and
    the title says which are left out (``i2m runs show ID --json`` has them all)."""
    from rich.table import Column

    name_width = max(len(n) for n in [*METRIC_MEANINGS, "warnings", "errors"])
    cells = {i: _version_cells(v) for i, v in enumerate(versions)}
    col = {i: max(7, *(len(c) for c in cells[i])) for i in cells}  # "compose", "reflect" whole
    shown = list(cells)
    if width is not None:
        room = width - (name_width + 4)  # the name column, its padding and the borders
        while len(shown) > 1 and sum(col[i] + 3 for i in shown) > room:
            shown.pop(1 if len(shown) > 2 else 0)  # keep v1 and the latest; drop from the middle
    left_out = [i + 1 for i in cells if i not in shown]
    title = "versions" + (f" (v{', v'.join(map(str, left_out))} not shown: too narrow)" if left_out else "")
    t = Table(
        Column("metric", no_wrap=True, min_width=name_width),
        *[Column(_version_header(i, versions[i]), min_width=col[i]) for i in shown],
        title=title,
    )
    names = [*METRIC_MEANINGS, "warnings", "errors"]
    for row, name in enumerate(names):
        t.add_row(name, *[cells[i][row] for i in shown])
    return t


def _version_header(index: int, v: Version) -> str:
    return f"v{index + 1} {v['node']}" + ("" if v["ok"] else " invalid")


def _version_cells(v: Version) -> list[str]:
    metrics = v.get("metrics") or {}
    values = ["-" if (m := metrics.get(name)) is None else str(m) for name in METRIC_MEANINGS]
    return [*values, str(len(v.get("warnings") or [])), str(len(v.get("errors") or []))]


def show_record(console: Console, rec: RunRecord, run_dir: Path) -> None:
    """Description, references, metrics of every version, the final ABC, the motivation, the files."""
    colour = "green" if rec["status"] == "ok" else "red"
    image = escape(terminal_safe(str(rec["image"])))
    console.print(f"[bold]{rec['run_id']}[/bold]  [{colour}]{rec['status']}[/{colour}]  {image}")
    if rec.get("reason"):
        console.print(safe(f"reason: {rec['reason']}"))
    if description := rec.get("description"):
        console.print(Panel(safe(description), title="what the model sees"), soft_wrap=False)
    if rec.get("references"):
        t = Table("score", "via", "caption", title="references")
        for r in rec["references"]:
            t.add_row(f"{r['score']:.3f}", safe(r["via"]), safe(r["caption"]))
        console.print(t, soft_wrap=False)
    if rec.get("versions"):
        console.print(metrics_table(rec["versions"], console.width), soft_wrap=False)
    if final := rec.get("final"):
        console.print(
            Panel(highlight_abc(final["abc"]), title=f"the music (version {final['version']})"),
            soft_wrap=False,
        )
    if motivation := rec.get("motivation"):
        console.print(Panel(safe(motivation), title="why it sounds like this"), soft_wrap=False)
    decisions = [d for d in rec.get("decisions") or [] if d.get("after") == "evaluate"]
    if decisions:
        t = Table("after", "to", "because", title="decisions", show_lines=False)
        for d in decisions:
            t.add_row(safe(d["after"]), safe(d["to"]), safe("; ".join(d.get("because") or [])))
        console.print(t, soft_wrap=False)
    steps = zip(rec.get("path", []), rec.get("timings", []), strict=False)
    console.print(" -> ".join(f"{n} {t:.2f}s" for n, t in steps))
    if files := rec.get("files"):  # the folder once, then short names: no path is broken across lines
        console.print(safe(f"files in {run_dir}"))
        for key, fname in files.items():
            console.print(safe(f"  {key:<9} {fname}"))


def _parse_detail(u: State) -> str:
    versions = u.get("versions") or []
    if not versions:
        return "no version"
    v: Version = versions[-1]
    if v.get("ok"):
        return f"valid, {len(v.get('warnings') or [])} warning(s)"
    return f"[red]{len(v.get('errors') or [])} error(s)[/red]"


@dataclass(frozen=True)
class NodeHint:
    """How the terminal shows one node: the only place a new node needs besides the graph (a test checks that
    every node of the graph has one)."""

    then: str
    """What the spinner says once the node has ended, until the next node's line."""
    writing: str = ""
    """What the live line says while the node's model writes (``composing · 812 chars``); empty: no model."""
    detail: Callable[[State], str] = lambda u: ""
    """The end of the node's ✓ line, from its update."""


NODE_HINTS: dict[str, NodeHint] = {
    "describe": NodeHint(
        "retrieving references", "describing", lambda u: f"{len((u.get('description') or '').split())} words"
    ),
    "retrieve": NodeHint("composing", detail=lambda u: f"{len(u.get('references') or [])} reference(s)"),
    "compose": NodeHint("checking the ABC", "composing"),
    "parse_check": NodeHint("working", detail=_parse_detail),
    "evaluate": NodeHint("working", detail=lambda u: "metrics ready"),
    "reflect": NodeHint("checking the ABC", "refining"),
    "explain": NodeHint("writing files", "explaining"),
}
_NO_HINT = NodeHint("working")


def terminal_safe(text: str) -> str:
    """Untrusted text (a model's answer, a caption, a title, a file name) as it may go to a terminal: control
    characters and escape sequences are shown (``\\x1b``), never obeyed; newlines and tabs stay."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf") else _shown(ch) for ch in text)


def _shown(ch: str) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"


def tail_line(text: str, room: int) -> str:
    """The end of the last line of ``text`` that fits ``room`` terminal cells (a leading '…' when cut)."""
    last = terminal_safe(text.rstrip("\n").rsplit("\n", 1)[-1]).replace("\t", " ")
    if cell_len(last) <= room:
        return last
    out, used = [], 1
    for ch in reversed(last):
        used += get_character_cell_size(ch)
        if used > room:
            break
        out.append(ch)
    return "…" + "".join(reversed(out))


class NodeProgress:
    """Rich progress: one line per finished node with its time, a spinner while the run goes on, and while a
    model writes, the end of its answer so far on that one line (``composing · 812 chars · 41 s  |: G2 AB c2``),
    cut to the terminal's width; the node's own line replaces it when the node ends. Retries and refine rounds
    are labelled by :func:`image2music.graph.versions.steps`."""

    def __init__(self, console: Console, path: list[str] | None = None) -> None:
        self.console = console
        self.status = console.status("describing the image...")
        self.path: list[str] = list(path or [])
        self.writing: tuple[str, float, list[str]] | None = None  # (node, when it began, its pieces so far)

    def text(self, node: str, piece: str) -> None:
        """A piece of a model's answer, as it is written (the runner's ``on_text``)."""
        if self.writing is None or self.writing[0] != node:
            self.writing = (node, time.monotonic(), [])
        self.writing[2].append(piece)
        so_far = "".join(self.writing[2])
        doing = NODE_HINTS.get(node, _NO_HINT).writing or node
        label = f"{doing} · {len(so_far):,} chars · {time.monotonic() - self.writing[1]:.0f} s  "
        room = max(8, self.console.width - 3 - cell_len(label))  # the spinner and its space
        line = Text(label, style="dim", no_wrap=True, overflow="crop")
        line.append(tail_line(so_far, room))
        self.status.update(line)

    def __enter__(self) -> NodeProgress:
        self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.status.__exit__(None, None, None)

    def __call__(self, node: str, update: State) -> None:
        from image2music.graph.routing import render_decision
        from image2music.graph.versions import steps

        secs = (update.get("timings") or [0.0])[-1]
        self.writing = None
        self.path.append(node)
        step = steps(self.path)[-1]
        hint = NODE_HINTS.get(node, _NO_HINT)
        detail = hint.detail(update)
        if node in ABC_NODES and step.label:
            detail = f"[yellow]{step.label}[/yellow]" if step.retry else step.label
        self.status.update(hint.then + "...")  # first: the live line never outlives its node
        self.console.print(f"  [green]✓[/green] {node:<12} {secs:7.2f}s  {detail}")
        for d in update.get("decisions") or []:
            if d["after"] == "evaluate":  # the refine loop's decisions (parse_check's show in the ✓ line)
                self.console.print(f"    -> {escape(render_decision(d))}", highlight=False)
