"""Server mode: the same store code against a Chroma server started on loopback (I2M_CHROMA_URL)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from conftest import free_port, wait_until_serving

from image2music.tools.kb.store import Entry, KnowledgeBase, forget_clients


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    import sys

    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    if not Path(exe).exists():
        pytest.skip("the chroma CLI is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_serving(f"{url}/api/v2/heartbeat", proc, 100, 0.2):
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

    kb = KnowledgeBase(None, "tiny/clip", url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match="cannot open the Chroma server"):
        kb.count()
    forget_clients()


@pytest.mark.slow
def test_a_server_that_accepts_and_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

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
    kb = KnowledgeBase(None, "tiny/clip", url=f"http://127.0.0.1:{srv.getsockname()[1]}", timeout_s=1.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreError, match="did not answer within|cannot open"):
            kb.count()
        assert time.monotonic() - t0 < 60  # only a bound on a hang: this server never answers
    finally:
        stop.set()
        for c in held:
            c.close()
        srv.close()
        forget_clients()


def test_a_server_that_stops_answering_mid_session_times_out(chroma_server: str) -> None:
    """Every call after the connection is made has the deadline too: a proxy in front of the real server
    forwards until told to swallow what the client sends (the server then never answers)."""
    import threading

    from image2music.tools.kb.store import StoreError

    up = urlparse(chroma_server)
    swallow = threading.Event()
    front = socket.socket()
    front.bind(("127.0.0.1", 0))
    front.listen(8)
    front.settimeout(0.2)
    stop = threading.Event()
    socks: list[socket.socket] = []

    def pipe(src: socket.socket, dst: socket.socket, client_side: bool) -> None:
        try:
            while data := src.recv(65536):
                if not (client_side and swallow.is_set()):
                    dst.sendall(data)
        except OSError:
            pass

    def serve() -> None:
        while not stop.is_set():
            try:
                c = front.accept()[0]
            except OSError:
                continue
            b = socket.create_connection((up.hostname, up.port))
            socks.extend((c, b))
            threading.Thread(target=pipe, args=(c, b, True), daemon=True).start()
            threading.Thread(target=pipe, args=(b, c, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    kb = KnowledgeBase(None, "tiny/clip", url=f"http://127.0.0.1:{front.getsockname()[1]}", timeout_s=2.0)
    try:
        entries = [Entry(id="m0", caption="c", abc="X:1\nK:C\nC|\n", source="t")]
        assert kb.add(entries, np.eye(1, 8, dtype=np.float32)) == 1  # through the proxy: the session works
        swallow.set()
        with pytest.raises(StoreError, match="did not answer within 2 s"):
            kb.count()
    finally:
        stop.set()
        for c in socks:
            c.close()
        front.close()
        forget_clients()
