"""The lowest langgraph we support (pyproject: ``langgraph>=1.0.2,<2``; 1.0.2 brought ``Overwrite``) runs the
tests that drive the graph too: langgraph 1.0.2 and what pip resolves with it are installed into a folder put
before the environment's packages, and the graph's, the CLI's, the chat's (interrupts, Command, resume) and
the reliability tests run there in a child process. The rest of the suite runs the newest langgraph pip
resolves for the project (today 1.2.24). Needs the package index; skipped without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

LOWEST = "1.0.2"


@pytest.mark.slow
def test_the_graph_tests_pass_with_the_lowest_langgraph(tmp_path: Path) -> None:
    site = tmp_path / "site"
    try:
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--timeout", "30",
             "--retries", "2", "--target", str(site), f"langgraph=={LOWEST}", "langgraph-checkpoint-sqlite>=2.0"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing langgraph {LOWEST} took longer than 10 minutes (a slow package index?)")
    if pip.returncode != 0:
        pytest.skip(f"langgraph {LOWEST} could not be installed (no package index?): {pip.stderr.strip()[-300:]}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    version = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('langgraph'))"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert version.stdout.strip() == LOWEST, version.stderr
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_graph",
         "tests/test_app/test_cli.py", "tests/test_app/test_chat.py", "tests/test_app/test_reliability.py",
         "-k", "not langgraph_versions and not langgraph_server"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout and int(run.stdout.rsplit(" passed", 1)[0].split()[-1]) >= 50
