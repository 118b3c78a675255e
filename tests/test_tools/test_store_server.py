"""Server mode: the same store code against a Chroma server started on loopback (I2M_CHROMA_URL)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from image2music.tools.kb.store import Entry, KnowledgeBase, forget_clients


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    import sys

    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    if not Path(exe).exists():
        pytest.skip("the chroma CLI is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the chroma server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        forget_clients()


def test_store_against_a_server(chroma_server: str) -> None:
    kb = KnowledgeBase(None, "tiny/clip", url=chroma_server)
    assert not kb.exists()
    entries = [Entry(id=f"s{i}", caption=f"caption {i}", abc=f"X:{i}\nK:C\nC|\n", source="t") for i in range(3)]
    vecs = np.eye(3, 8, dtype=np.float32)
    assert kb.add(entries, vecs) == 3 and kb.add(entries, vecs) == 0
    hits = kb.query(vecs[1], 2)
    assert hits[0].id == "s1" and hits[0].abc.startswith("X:1")
    info = kb.info()
    assert info["count"] == 3 and info["location"] == chroma_server and info["dim"] == 8


def test_unreachable_server_is_a_clear_message() -> None:
    from image2music.tools.kb.store import StoreError

    kb = KnowledgeBase(None, "tiny/clip", url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(StoreError, match="cannot open the Chroma server"):
        kb.count()
    forget_clients()


@pytest.mark.slow
def test_a_server_that_accepts_and_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from image2music.tools.kb import store
    from image2music.tools.kb.store import StoreError

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # accept, read nothing, answer nothing
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(store, "CHROMA_TIMEOUT_S", 1.5)
    monkeypatch.setattr(store._with_deadline, "__defaults__", (1.5,))
    kb = KnowledgeBase(None, "tiny/clip", url=f"http://127.0.0.1:{srv.getsockname()[1]}")
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreError, match="did not answer within|cannot open"):
            kb.count()
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        for c in held:
            c.close()
        srv.close()
        forget_clients()
