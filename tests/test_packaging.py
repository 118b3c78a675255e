"""Packaging and structure: one namespace, no import cycles, layers that only look down, a wheel that works
when installed (not editable) into a fresh environment."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


LINKS = ("graph", "tools", "prompts")
"""image2music/<name> -> ../<name>: committed relative links, so every import name is a path."""


def _modules() -> dict[str, Path]:
    """Every module by import name, found by walking image2music/ through its links: the name is the path."""
    mods: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(ROOT / "image2music", followlinks=True):
        for f in files:
            if f.endswith(".py"):
                path = Path(dirpath) / f
                rel = path.relative_to(ROOT).with_suffix("")
                mods[".".join(p for p in rel.parts if p != "__init__")] = path
    return mods


def test_the_links_are_there() -> None:
    """A checkout without symbolic links (git's core.symlinks off) fails here with the fix."""
    fix = "run `git config core.symlinks true && git checkout -- image2music` (Windows: enable Developer Mode)"
    for name in LINKS:
        link = ROOT / "image2music" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", f"image2music/{name} is not a link: {fix}"


def test_import_names_are_paths() -> None:
    """Every project import names a file or folder that exists at that path (before: 353 of 439 did not), no
    package edits its ``__path__``, and only ``image2music`` is importable (no ``image2music.setup``)."""
    mods = _modules()
    named = 0
    users = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    for path in [*mods.values(), *users]:
        text = path.read_text(encoding="utf-8")
        assert path in users or "__path__" not in text, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("image2music"):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("image2music")]
            else:
                continue
            for name in names:
                as_path = ROOT.joinpath(*name.split("."))
                assert as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file(), (path, name)
                named += 1
    assert named > 400
    assert {"image2music.setup", "image2music.tests", "image2music.image2music"}.isdisjoint(mods)


def test_a_checkout_without_links_says_the_fix(tmp_path: Path) -> None:
    pkg = tmp_path / "image2music"
    pkg.mkdir()
    shutil.copy(ROOT / "image2music" / "__init__.py", pkg)
    (pkg / "graph").write_text("../graph")  # what git writes for a link when core.symlinks is off
    (pkg / "tools").mkdir()
    (pkg / "prompts").mkdir()
    r = subprocess.run([sys.executable, "-c", "import image2music"], cwd=tmp_path, capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "image2music/graph is not a link to ../graph" in last, r.stderr
    assert "git config core.symlinks true && git checkout -- image2music" in last


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every import of every module (function-level ones included: a lazy import still makes a cycle)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}".strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod and not mod.startswith(t + "."):
                    edges[mod].add(t)
    return edges


def test_no_import_cycles() -> None:
    edges = _imports(_modules())
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert len(edges) > 40  # the walk saw the whole tree


def test_layers_only_look_down() -> None:
    """tools import nothing from LangGraph, the graph or the application; the graph nothing from the app."""
    mods = _modules()
    edges = _imports(mods)
    app = {m for m in mods if not m.startswith(("image2music.graph", "image2music.tools", "image2music.prompts"))}
    for mod, targets in edges.items():
        if mod.startswith("image2music.tools"):
            assert not {t for t in targets if t.startswith("image2music.graph")} | (targets & app), mod
            assert "langgraph" not in mods[mod].read_text(encoding="utf-8"), mod
        if mod.startswith("image2music.graph"):
            assert not targets & app, (mod, targets & app)


@pytest.mark.slow
def test_wheel_installs_and_composes_offline(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree, install it (not editable) into a fresh venv that borrows only
    the third-party dependencies, and run ``i2m --help`` and an offline compose from an unrelated folder."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    for rel in files.stdout.splitlines():
        if (ROOT / rel).is_symlink():  # the links of image2music/ travel as links
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).symlink_to(os.readlink(ROOT / rel))
        elif (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("image2music-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    # the dependencies come from this environment's site-packages (a plain path: its .pth files, among them the
    # editable install of this project, are not processed)
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "graph.py").write_text("raise SystemExit('a user module named graph.py was imported')\n")
    (work / "tools.py").write_text("raise SystemExit('a user module named tools.py was imported')\n")
    env = {**os.environ, "I2M_HOME": str(tmp_path / "home")}
    i2m = venv / "bin" / "i2m"
    where = subprocess.run(
        [str(py), "-c", "import image2music.graph, sys; print(image2music.graph.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.returncode == 0 and str(venv) in where.stdout, where.stdout + where.stderr
    r = subprocess.run([str(i2m), "--help"], cwd=work, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "compose" in r.stdout, r.stderr
    r = subprocess.run(
        [
            str(i2m),
            "compose",
            str(ROOT / "examples" / "sunset_lighthouse.png"),
            "--replay",
            str(ROOT / "examples" / "replay_sunset.jsonl"),
            "--top-k",
            "0",
            "-o",
            str(tmp_path / "run"),
            "--json",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "run" / "music.mid").exists() and (tmp_path / "run" / "run.json").exists()
    assert not list(work.iterdir()) == [] and sorted(p.name for p in work.iterdir()) == ["graph.py", "tools.py"]
