"""A hostile OpenAI-compatible server on loopback: errors, rate limits, trickles, silence, huge and cut-off
answers, redirects to another host, content as parts, invalid UTF-8. Every case ends in a bounded time with
text or one clear VLMError, and the API key never leaves the configured server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from image2music.tools.vlm import GenerationSettings, VLMError, openai_compat
from image2music.tools.vlm.openai_compat import OpenAIVLM, check_base_url


def _ok(content: Any) -> bytes:
    return json.dumps({"choices": [{"message": {"content": content}}]}).encode()


class Server:
    def __init__(self, mode: str, target: str = "") -> None:
        self.mode, self.target, self.hits, self.auth = mode, target, 0, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits += 1
                outer.auth.append(self.headers.get("Authorization"))
                m = outer.mode
                if m in ("500", "429") and outer.hits == 1:
                    self.send_response(int(m))
                    if m == "429":
                        self.send_header("Retry-After", "1")
                    self.end_headers()
                    return
                if m == "redirect":
                    self.send_response(302)
                    self.send_header("Location", outer.target)
                    self.end_headers()
                    return
                if m == "silent":
                    time.sleep(3)
                    return
                body = {
                    "parts": _ok([{"type": "text", "text": "A "}, {"type": "text", "text": "lighthouse."}]),
                    "number": _ok(42),
                    "badutf8": b'{"choices": [{"message": {"content": "caf\xe9 \xff"}}]}',
                }.get(m, _ok("fine"))
                if m == "huge":
                    body = _ok("x" * 3000)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) + (100 if m == "cut" else 0)))
                self.end_headers()
                if m == "trickle":
                    for b in body:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(request.param)
    yield s
    s.close()


def _ask(url: str, timeout_s: float = 5.0) -> str:
    vlm = OpenAIVLM(base_url=url, model="m", api_key="sk-SECRET", timeout_s=timeout_s)
    res = vlm.generate(
        node="describe", prompt="p", image=Image.new("RGB", (8, 8)), call_index=0, settings=GenerationSettings()
    )
    return res.text


@pytest.mark.parametrize("server", ["500", "429"], indirect=True)
def test_errors_and_rate_limits_are_retried(server: Server) -> None:
    assert _ask(server.url) == "fine" and server.hits == 2


@pytest.mark.parametrize(
    ("server", "text"),
    [("parts", "A lighthouse."), ("number", "42"), ("badutf8", "caf\ufffd \ufffd")],
    indirect=["server"],
)
def test_odd_but_valid_answers_become_text(server: Server, text: str) -> None:
    assert _ask(server.url) == text


@pytest.mark.slow
@pytest.mark.parametrize("server", ["trickle", "silent"], indirect=True)
def test_the_deadline_is_for_the_whole_call(server: Server) -> None:
    t0 = time.monotonic()
    with pytest.raises(VLMError, match="within 1.5 s|cannot reach|cut short"):
        _ask(server.url, timeout_s=1.5)
    assert time.monotonic() - t0 < 60  # only a bound on a hang: this server would never finish


@pytest.mark.parametrize("server", ["cut"], indirect=True)
def test_a_body_cut_short_is_a_clear_error(server: Server) -> None:
    with pytest.raises(VLMError):
        _ask(server.url, timeout_s=3)


@pytest.mark.parametrize("server", ["huge"], indirect=True)
def test_huge_answers_are_refused(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compat, "MAX_ANSWER_BYTES", 1000)
    with pytest.raises(VLMError, match="larger than"):
        _ask(server.url)


def test_redirects_are_not_followed_and_the_key_stays_home() -> None:
    other = Server("ok")
    first = Server("redirect", target=other.url + "/chat/completions")
    try:
        with pytest.raises(VLMError, match="redirect"):
            _ask(first.url)
        assert other.hits == 0 and first.auth == ["Bearer sk-SECRET"]
    finally:
        first.close()
        other.close()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/v1", "localhost:8000", "data:,x"])
def test_only_http_base_urls(url: str) -> None:
    with pytest.raises(VLMError, match="http"):
        check_base_url(url)


# --- a raw TCP server: whatever bytes a hostile server may send ------------------------------------------


BODIES: list[dict[str, Any]] = []
"""The request bodies the raw server received, in order."""


def _raw_server(behaviour: Any) -> Iterator[str]:
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    stop = threading.Event()

    def handle(c: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
            while len(body) < length:
                body += c.recv(65536)
            BODIES.append(json.loads(body))
            behaviour(c, head.decode("latin-1"), stop)
        except OSError:
            pass
        finally:
            c.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    finally:
        stop.set()
        srv.close()


def _drip(c: Any, data: bytes, stop: threading.Event, every: float = 0.3) -> None:
    for b in data:
        if stop.is_set():
            return
        c.sendall(bytes([b]))
        time.sleep(every)


def _continue_forever(c: Any, head: str, stop: threading.Event) -> None:
    while not stop.is_set():
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.3)


def _trickle_status(c: Any, head: str, stop: threading.Event) -> None:
    _drip(c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", stop)


def _trickle_headers(c: Any, head: str, stop: threading.Event) -> None:
    c.sendall(b"HTTP/1.1 200 OK\r\n")
    _drip(c, b"X-Slow: " + b"a" * 100 + b"\r\n\r\n", stop)


def _fixed(payload: bytes) -> Any:
    def send(c: Any, head: str, stop: threading.Event) -> None:
        c.sendall(payload)

    return send


def _echo_auth(c: Any, head: str, stop: threading.Event) -> None:
    body = ("unauthorized; you sent:\n" + head).encode()
    c.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


_OK_BODY = _ok("fine")
HOSTILE = {
    "100 Continue forever": _continue_forever,
    "status line a byte at a time": _trickle_status,
    "headers a byte at a time": _trickle_headers,
    "a 1 MB header": _fixed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1 << 20) + b"\r\nContent-Length: 2\r\n\r\n{}"),
    "200 headers": _fixed(
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"Content-Length: 2\r\n\r\n{}"
    ),
    "a chunked body cut short": _fixed(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{"choices"'),
    "a 100 kB chunk-size line": _fixed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 100_000 + b"\r\n"
    ),
    "a JSON nesting bomb": _fixed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"[" * 100_000 + b"]" * 100_000
    ),
    "no status line at all": _fixed(b"garbage\r\n\r\n"),
    "a 401 that echoes the request": _echo_auth,
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_hostile_answer_is_one_vlm_error_within_the_deadline(case: str) -> None:
    """Each ends as one VLMError naming the server (never the key), not a hang."""
    for url in _raw_server(HOSTILE[case]):
        t0 = time.monotonic()
        with pytest.raises(VLMError) as info:
            _ask(url, timeout_s=1.5)
        assert time.monotonic() - t0 < 60  # only a bound on a hang (the error itself says what ended it)
        message = str(info.value)
        assert "127.0.0.1" in message and "sk-SECRET" not in message and "\n" not in message.strip()
        if case == "a 401 that echoes the request":
            assert "HTTP 401" in message and "[redacted]" in message


# --- streamed answers (server-sent events) -----------------------------------------------------------------


def _sse(*events: bytes, every: float = 0.0, status: bytes = b"200 OK") -> Any:
    """A server that streams ``events`` (each a ``data:`` payload) as server-sent events, then closes."""

    def send(c: Any, head: str, stop: threading.Event) -> None:
        c.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/event-stream\r\n\r\n")
        for e in events:
            if stop.is_set():
                return
            time.sleep(every)
            c.sendall((e if e.startswith(b":") else b"data: " + e) + b"\n\n")  # ':' starts a comment line

    return send


def _delta(text: str, finish: str | None = None) -> bytes:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}).encode()


def _stream(url: str, timeout_s: float = 5.0, **kw: Any) -> tuple[str, list[str], dict[str, Any]]:
    vlm = OpenAIVLM(base_url=url, model="m", api_key="sk-SECRET", timeout_s=timeout_s, **kw)
    pieces: list[str] = []
    res = vlm.generate(
        node="compose", prompt="p", image=Image.new("RGB", (8, 8)), call_index=0,
        settings=GenerationSettings(grammar=True), on_text=pieces.append,
    )  # fmt: skip
    return res.text, pieces, res.meta


def test_a_streamed_answer_arrives_piece_by_piece() -> None:
    usage = json.dumps({"choices": [], "usage": {"completion_tokens": 3}}).encode()
    server = _sse(b": keep-alive", _delta("A "), _delta("calm "), _delta("sea.", "stop"), usage, b"[DONE]")
    for url in _raw_server(server):
        text, pieces, meta = _stream(url)
        assert pieces == ["A ", "calm ", "sea."] and text == "A calm sea."
        assert meta["usage"] == {"completion_tokens": 3} and meta["streamed"]
        assert BODIES[-1]["stream"] is True and BODIES[-1]["stream_options"] == {"include_usage": True}
        assert "grammar" not in json.dumps(BODIES[-1])  # a plain OpenAI server gets no grammar


@pytest.mark.parametrize(
    ("server", "field"),
    [("vllm", "structured_outputs"), ("sglang", "ebnf"), ("llamacpp", "grammar")],
)
def test_the_grammar_goes_to_each_kind_of_server_in_its_dialect(server: str, field: str) -> None:
    from image2music.tools.music.grammar import gbnf

    for url in _raw_server(_sse(_delta("ok", "stop"))):
        _stream(url, server=server)
        sent = BODIES[-1][field]
        assert (sent["grammar"] if field == "structured_outputs" else sent) == gbnf()


def test_a_server_that_answers_whole_anyway_is_read_whole() -> None:
    for url in _raw_server(_fixed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_OK_BODY), _OK_BODY))):
        text, pieces, _ = _stream(url)
        assert text == "fine" and pieces == ["fine"]


def test_a_server_that_refuses_to_stream_is_asked_again_whole() -> None:
    refusal = b'{"error": "stream is not supported"}'
    calls = {"n": 0}

    def behaviour(c: Any, head: str, stop: threading.Event) -> None:
        calls["n"] += 1
        body = refusal if calls["n"] == 1 else _OK_BODY
        status = b"400 Bad Request" if calls["n"] == 1 else b"200 OK"
        c.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))

    for url in _raw_server(behaviour):
        vlm = OpenAIVLM(base_url=url, model="m", timeout_s=5)
        res = vlm.generate(
            node="describe", prompt="p", image=Image.new("RGB", (8, 8)), call_index=0, settings=GenerationSettings()
        )
        assert res.text == "fine" and calls["n"] == 2 and "stream" not in BODIES[-1]
        assert res.meta["retries"] == ["HTTP 400: the server does not stream; asked again without streaming"]
        assert vlm.stream is False  # the next call does not ask again


STREAM_FAULTS = {
    "a stream slower than the deadline": (_sse(*[_delta("x")] * 20, every=0.4), "did not finish its answer within"),
    "a stream cut short": (_sse(_delta("A "), _delta("calm")), "was cut short"),
    "an event of 2 MB": (_sse(_delta("y" * (2 << 20))), "larger than 1 MB"),
    "an error in the stream": (
        _sse(_delta("A "), b'{"error": {"message": "overloaded, key sk-SECRET"}}'),
        "overloaded",
    ),
    "an event that is not JSON": (_sse(b"{not json"), "not JSON"),
}


@pytest.mark.parametrize("case", list(STREAM_FAULTS))
def test_every_stream_fault_is_one_clear_error(case: str) -> None:
    behaviour, words = STREAM_FAULTS[case]
    for url in _raw_server(behaviour):
        with pytest.raises(VLMError) as info:
            _stream(url, timeout_s=1.5)
        message = str(info.value)
        assert words in message and "sk-SECRET" not in message and "\n" not in message.strip(), message


def test_a_key_echoed_in_a_stream_never_reaches_the_screen() -> None:
    """The key split over three events: no piece, and no run of pieces, shows any of it."""
    server = _sse(_delta("you sent sk-SE"), _delta("CR"), _delta("ET to me", "stop"), b"[DONE]")
    for url in _raw_server(server):
        _text, pieces, _ = _stream(url)
        shown = "".join(pieces)
        assert shown == "you sent [redacted] to me"
        assert not any("sk-" in p for p in pieces)


# --- the key in every place of an answer, and credentials in the URL: never on disk -------------------------

KEY = "sk-SECRET-0123456789abcdef"


def _answer_with_key(place: str) -> Any:
    import base64

    def send(c: Any, head: str, stop: threading.Event) -> None:
        if place == "Location":
            where = f"http://evil.example/steal?k={KEY}"
            c.sendall(f"HTTP/1.1 302 Found\r\nLocation: {where}\r\nContent-Length: 0\r\n\r\n".encode())
        elif place == "status line":
            c.sendall(f"HTTP/1.1 2OO {KEY}\r\n\r\n".encode())
        elif place == "body cut at 300":
            body = ("x" * (300 - 9) + KEY).encode()  # the key straddles the 300-character cut of an error body
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif place == "base64 echo":
            body = ("you sent " + base64.b64encode(f"Authorization: Bearer {KEY}".encode()).decode()).encode()
            c.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return send


def _on_disk(roots: list[Any], needles: list[str]) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    return found


@pytest.mark.parametrize("place", ["Location", "status line", "body cut at 300", "base64 echo"])
def test_the_key_in_any_place_of_an_answer_reaches_no_file(place: str, tmp_path: Any, image_path: Any) -> None:
    """run.json, the report, run.log, vlm_calls.jsonl and the run database, LangGraph's checkpoint tables
    included, hold no piece of the key, whether it comes back in a redirect's Location, a malformed status line,
    an error body cut in the middle of it, or base64-encoded."""
    import base64

    from image2music.graph.config import load_settings
    from image2music.runner import compose_image

    for url in _raw_server(_answer_with_key(place)):
        s = load_settings(vlm_backend="openai", vlm_base_url=url, vlm_api_key=KEY, vlm_model="m", top_k=0,
                          attention_maps=False, vlm_timeout_s=5)  # fmt: skip
        rec = compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None).record
        assert rec["status"] == "failed", rec
        echoed = base64.b64encode(f"Authorization: Bearer {KEY}".encode()).decode()
        key_part = echoed[len("QXV0aG9yaXphdGlvbjogQmVhcmVyI") + 3 : -6]  # the characters only the key makes
        needles = [KEY, KEY[:9], KEY[-9:], key_part]
        assert _on_disk([tmp_path / "run", s.home], needles) == [], rec["reason"]
        if place == "Location":
            assert "evil.example" in rec["reason"] and "[redacted]" in rec["reason"]


def test_credentials_in_the_server_url_reach_no_file(tmp_path: Any, image_path: Any) -> None:
    from image2music.graph.config import load_settings
    from image2music.runner import compose_image

    for url in _raw_server(_echo_auth):
        with_user = url.replace("http://", "http://alice:hunter2-password@")
        s = load_settings(vlm_backend="openai", vlm_base_url=with_user, vlm_model="m", top_k=0, attention_maps=False,
                          vlm_timeout_s=5)  # fmt: skip
        rec = compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None).record
        assert rec["status"] == "failed"
        assert _on_disk([tmp_path / "run", s.home], ["hunter2-password", "alice:"]) == [], rec["reason"]
        assert rec["settings"]["vlm_base_url"].startswith("http://[redacted]@127.0.0.1")
