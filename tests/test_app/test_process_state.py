"""Process-wide mutable state is named in one place (image2music/process_state.py)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from image2music.process_state import PROCESS_STATE

ROOT = Path(__file__).resolve().parents[2]
_EMPTY_CALLS = {"set", "dict", "list", "defaultdict", "OrderedDict", "deque", "WeakValueDictionary", "WeakSet"}
_CACHES = {"cache", "lru_cache"}


def _frozen(cls: ast.ClassDef) -> bool:
    """A ``@dataclass(frozen=True)``: its instances are values, not state."""
    return any(
        isinstance(d, ast.Call) and any(k.arg == "frozen" and getattr(k.value, "value", False) for k in d.keywords)
        for d in cls.decorator_list
    )


def _module_state() -> dict[str, int]:
    """Every module-level empty container (a cache or registry filled at run time), instance of a class of the
    same module (an object that keeps state) and ``functools``-cached function of the production code, by import
    name -> line."""
    found: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(ROOT / "image2music", followlinks=True):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = Path(dirpath) / f
            module = ".".join(p for p in path.relative_to(ROOT).with_suffix("").parts if p != "__init__")
            body = ast.parse(path.read_text(encoding="utf-8")).body
            own_classes = {n.name for n in body if isinstance(n, ast.ClassDef) and not _frozen(n)}
            for node in body:
                if isinstance(node, ast.Assign | ast.AnnAssign):
                    value = node.value
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    empty = isinstance(value, ast.Dict | ast.Set | ast.List) and not (
                        getattr(value, "keys", None) or getattr(value, "elts", None)
                    )
                    if isinstance(value, ast.Call):
                        fn = value.func
                        name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                        empty = (name in _EMPTY_CALLS and not value.args) or name in own_classes
                    if empty:
                        for t in targets:
                            if isinstance(t, ast.Name):
                                found[f"{module}.{t.id}"] = node.lineno
                elif isinstance(node, ast.FunctionDef):
                    for d in node.decorator_list:
                        fn = d.func if isinstance(d, ast.Call) else d
                        if (fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")) in _CACHES:
                            found[f"{module}.{node.name}"] = node.lineno
    return found


def test_every_piece_of_process_state_is_named_in_one_place() -> None:
    found = _module_state()
    unnamed = sorted(set(found) - set(PROCESS_STATE))
    assert not unnamed, f"module-level state not in image2music/process_state.py: {unnamed}"
    stale = sorted(set(PROCESS_STATE) - set(found))
    assert not stale, f"image2music/process_state.py names what no longer exists: {stale}"
    assert all(why.strip() for why in PROCESS_STATE.values())


def test_the_walk_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The check itself: it sees the table's entries (so an added cache cannot hide from it)."""
    found = _module_state()
    assert "image2music.graph.services._IMAGES" in found and "image2music.graph.builder._compiled" in found
    assert "image2music.tools.kb.store._CALLERS" in found  # an object of its own module's class
    assert "image2music.tools.music.metrics.METRICS" not in found  # a constant table is not state
    assert "image2music.tools.music.grammar.DIGIT" not in found  # nor a frozen value
