"""Shared fixtures: an isolated home per test, no network, tiny models built once per session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent / "data"
ABC_DIR = DATA / "abc"
ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

_LOOPBACK = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or str(host) in _LOOPBACK or str(host).startswith("127."):
        return _real_connect(self, address)
    raise AssertionError(f"a test tried to open a network connection to {address!r}")


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Any:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own I2M_HOME and caches, and runs in an empty working directory."""
    home = tmp_path / "i2m-home"
    monkeypatch.setenv("I2M_HOME", str(home))
    monkeypatch.setenv("I2M_KB_AUTO_BUILD", "false")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in [v for v in os.environ if v.startswith("I2M_") and v not in ("I2M_HOME", "I2M_KB_AUTO_BUILD")]:
        monkeypatch.delenv(var, raising=False)
    # the product as shipped: the default settings (the feedback refine policy); a test that needs the paper's
    # fixed policy asks for it with the `paper_policy` fixture
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return home


@pytest.fixture(autouse=True)
def _decisions_follow_the_path(monkeypatch: pytest.MonkeyPatch) -> Any:
    """On every graph run of the suite (in this process): each recorded decision's ``to`` is the next node of
    the run's ``path`` (the record explains exactly the route that was taken)."""
    from image2music import execution
    from image2music.graph.routing import decision_path_problems

    real = execution.write_outputs
    problems: list[str] = []

    def checked(ctx: Any, state: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        result = real(ctx, state, *args, **kwargs)
        rec = result.record
        finished = rec.get("status") in ("ok", "failed") and not rec.get("errors")
        problems.extend(decision_path_problems(list(rec.get("path", [])), list(rec.get("decisions", [])), finished))
        return result

    monkeypatch.setattr(execution, "write_outputs", checked)
    yield
    assert not problems, problems


@pytest.fixture
def paper_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper's route: one reflect round whatever the metrics say (``I2M_REFINE_POLICY=fixed``)."""
    monkeypatch.setenv("I2M_REFINE_POLICY", "fixed")
    monkeypatch.setenv("I2M_REFINE_ROUNDS", "1")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    """A small real PNG (the example picture, downscaled)."""
    from PIL import Image

    p = tmp_path / "img.png"
    Image.open(ROOT / "examples" / "sunset_lighthouse.png").resize((96, 64)).save(p)
    return p


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(url: str, proc: subprocess.Popen, attempts: int, pause_s: float) -> bool:
    """Poll ``url`` until it answers (True), or the server's process ends or the attempts run out (False): a
    bound on a hang, not a speed check."""
    for _ in range(attempts):
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return True
        except OSError:
            time.sleep(pause_s)
    return False


def write_replay(path: Path, calls: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"node": n, "text": t}) + "\n" for n, t in calls), encoding="utf-8")
    return path


def fenced(abc: str, prose: str = "Here is the music.") -> str:
    return f"{prose}\n\n```abc\n{abc.strip()}\n```\n\nI chose a calm tempo."


GOOD_ABC = """X:1
T:Calm Harbour
M:4/4
L:1/8
Q:1/4=80
K:G
% [theme]
G2 B2 d2 B2 | c2 A2 F2 D2 | G2 B2 d2 g2 | f4 d4 |
% [ending]
e2 c2 A2 F2 | G2 D2 B,2 D2 | G8 |]
"""

BROKEN_ABC = """X:1
T:Broken
M:4/4
L:1/8
K:G
[GBd2 c2 A2 | G/0 A2 |
"""

WARN_ABC = """X:1
T:Short bars
M:6/4
L:1/4
Q:60
K:Am
E A | D G | A D | E A | C E | A2 A2 A2 |]
"""


def ctrl_c_works() -> None:
    """A child's ``preexec_fn`` for tests that press Ctrl-C: SIGINT back to its default, so Python turns it
    into KeyboardInterrupt even when the suite was started with SIGINT ignored (``nohup make test &``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, stdin: str | None = None) -> Any:
    """``i2m ARGS`` in this process (click's runner; an exception is raised, not caught)."""
    from click.testing import CliRunner

    from image2music.cli import main

    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def replay_run(folder: Path, description: str = "A quiet harbour at dawn.", motivation: str = "Calm.") -> Path:
    """``folder/calls.jsonl``: recorded answers of a whole run that passes (describe, compose, one refine round,
    explain)."""
    calls = [("describe", description), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC))]
    return write_replay(folder / "calls.jsonl", [*calls, ("explain", motivation)])
