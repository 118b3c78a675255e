"""The OpenAI-compatible backend against a small fake server on loopback; CLIP fallback map."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import GOOD_ABC, fenced
from PIL import Image

from image2music.graph.config import load_settings
from image2music.runner import compose_image
from image2music.tools.vlm import GenerationSettings, VLMError, make_vlm

ANSWERS = {
    "Look carefully": "A lighthouse at sunset over a calm sea.",
    "You are a composer who writes": fenced(GOOD_ABC),
    "revising your own piece": fenced(GOOD_ABC),
    "Explain the motivation": "The lighthouse beam inspired the rising theme.",
}


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if body.get("model") == "echo-then-401" and len(outer.requests) > 1:
                    echo = f"denied; you sent Authorization: {self.headers.get('Authorization')}".encode()
                    self.send_response(401)
                    self.send_header("Content-Length", str(len(echo)))
                    self.end_headers()
                    self.wfile.write(echo)
                    return
                if body.get("model") == "always-503":
                    self.send_response(503)
                    self.send_header("Retry-After", "0.05")
                    self.send_header("Content-Length", "10")
                    self.end_headers()
                    self.wfile.write(b"overloaded")
                    return
                if body.get("model") == "missing-model":
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(b'{"error": "model not found"}')
                    return
                prompt = body["messages"][0]["content"][1]["text"]
                text = next((a for k, a in ANSWERS.items() if k in prompt), "I do not know.")
                if body.get("model") == "echo-then-401":  # a server that echoes the request into its answer
                    text = f"A lighthouse. (request header: {self.headers.get('Authorization')})"
                data = json.dumps(
                    {
                        "choices": [{"message": {"role": "assistant", "content": text}}],
                        "usage": {"completion_tokens": 10},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.httpd.shutdown()


def test_generate_sends_image_as_data_url(server: FakeServer) -> None:
    vlm = make_vlm("openai", "served-vlm", base_url=server.url, api_key="secret")
    res = vlm.generate(
        node="describe",
        prompt="Look carefully at this image.",
        image=Image.new("RGB", (8, 8)),
        call_index=0,
        settings=GenerationSettings(max_new_tokens=64, temperature=0.2),
    )
    assert res.text.startswith("A lighthouse")
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    content = req["body"]["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert req["body"]["max_tokens"] == 64 and req["body"]["model"] == "served-vlm"


def test_each_call_sends_its_own_image_and_an_image_is_encoded_once(server: FakeServer) -> None:
    """A batch's parallel runs share the client: their images alternate, each is encoded once, and a new picture
    never gets another's cached encoding (the cache holds its images, so no id is reused while cached)."""
    import base64
    import io

    vlm = make_vlm("openai", "served-vlm", base_url=server.url)
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    images = [Image.new("RGB", (8, 8), c) for c in colours]
    settings = GenerationSettings(max_new_tokens=8, temperature=0.0)
    for image in images + images + [Image.new("RGB", (8, 8), (9, 9, 9))]:
        vlm.generate(node="describe", prompt="Look carefully.", image=image, call_index=0, settings=settings)
    sent = []
    for req in server.requests:
        url = req["body"]["messages"][0]["content"][0]["image_url"]["url"]
        sent.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).getpixel((0, 0)))
    assert sent == colours + colours + [(9, 9, 9)]
    assert len({id(u) for u in (vlm._data_url(i) for i in images)}) == 3  # type: ignore[attr-defined]
    assert vlm._data_url(images[0]) is vlm._data_url(images[0])  # type: ignore[attr-defined]  # cached


def test_server_errors_are_clear(server: FakeServer) -> None:
    vlm = make_vlm("openai", "missing-model", base_url=server.url)
    with pytest.raises(VLMError, match="HTTP 404"):
        vlm.generate(
            node="describe", prompt="x", image=Image.new("RGB", (8, 8)), call_index=0, settings=GenerationSettings()
        )
    down = make_vlm("openai", "m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(VLMError, match="cannot reach the VLM server"):
        down.generate(
            node="describe", prompt="x", image=Image.new("RGB", (8, 8)), call_index=0, settings=GenerationSettings()
        )


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
def test_run_with_served_model_uses_the_clip_fallback_map(
    server: FakeServer, tmp_path: Path, image_path: Path, tiny_clip: Path
) -> None:
    s = load_settings(
        vlm_backend="openai", vlm_base_url=server.url, vlm_model="served-vlm", embed_model=str(tiny_clip), top_k=0
    )
    res = compose_image(image_path, s, run_dir=tmp_path / "run")
    rec = res.record
    assert rec["status"] == "ok" and rec["motivation"].startswith("The lighthouse beam")
    assert rec["attention"]["method"] == "clip-occlusion"
    assert rec["attention"]["files"] == {"describe": "attention.png"}
    assert (tmp_path / "run" / "attention.png").exists()
    assert len(server.requests) == 4


def test_the_api_key_is_never_stored(server: FakeServer, tmp_path: Path, image_path: Path) -> None:
    key = "sk-never-store-me-123"
    s = load_settings(
        vlm_backend="openai",
        vlm_base_url=server.url,
        vlm_model="served-vlm",
        vlm_api_key=key,
        top_k=0,
        attention_maps=False,
    )
    res = compose_image(image_path, s, run_dir=tmp_path / "run")
    assert res.record["status"] == "ok" and server.requests[0]["auth"] == f"Bearer {key}"
    for path in [*(tmp_path / "run").rglob("*"), *s.home.rglob("*")]:
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_a_key_the_server_echoes_goes_nowhere(server: FakeServer, tmp_path: Path, image_path: Path) -> None:
    """The describe answer echoes the key; compose's 401 echoes the request's Authorization header: the run
    fails with the reason on one line, and the key is in no file of the run or of I2M_HOME."""
    key = "sk-echoed-by-a-hostile-server-42"
    s = load_settings(
        vlm_backend="openai", vlm_base_url=server.url, vlm_model="echo-then-401", vlm_api_key=key, top_k=0
    )
    res = compose_image(image_path, s, run_dir=tmp_path / "run")
    assert res.record["status"] == "failed" and "HTTP 401" in (res.record["reason"] or "")
    assert "[redacted]" in (res.record["reason"] or "") and "[redacted]" in (res.record["description"] or "")
    files = [p for p in [*(tmp_path / "run").rglob("*"), *s.home.rglob("*")] if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.name == "vlm_calls.jsonl" for p in files)
    for path in files:
        assert key.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/v1"])
def test_a_base_url_that_is_not_http_is_refused_as_a_setting(url: str) -> None:
    from image2music.tools.errors import InputError

    with pytest.raises(InputError, match="http"):
        load_settings(vlm_backend="openai", vlm_base_url=url)


@pytest.mark.parametrize("choose", [False, True])
def test_a_resumed_run_keeps_its_server_unless_told(
    choose: bool, tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored server wins over the environment's I2M_VLM_BASE_URL (said in one line); `--base-url`
    (``vlm_base_url``) moves the rest of the run to another server."""
    from image2music.graph import nodes
    from image2music.resume import resume_run

    first, second = FakeServer(), FakeServer()
    try:
        s = load_settings(vlm_backend="openai", vlm_base_url=first.url, vlm_model="m", top_k=0, attention_maps=False)

        def stopped(*a: Any, **k: Any) -> Any:
            raise KeyboardInterrupt

        with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
            mp.setattr(nodes, "explain", stopped)
            compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None)
        run_id = json.loads((tmp_path / "run" / "run.json").read_text())["run_id"]
        before = len(first.requests)
        here = s.with_overrides(vlm_base_url=second.url)  # what the environment says now
        notes: list[str] = []
        extra = {"vlm_base_url": second.url} if choose else {}
        done = resume_run(run_id, here, notify=notes.append, **extra)
        assert done.record["status"] == "ok"
        if choose:
            assert len(first.requests) == before and second.requests and not notes
        else:
            assert len(first.requests) > before and not second.requests
            assert any("goes on with the server it was started with" in n and "--base-url" in n for n in notes)
    finally:
        first.httpd.shutdown()
        second.httpd.shutdown()


def test_a_call_that_fails_after_its_retries_records_them(server: FakeServer, tmp_path: Path, image_path: Path) -> None:
    """run.json server_retries lists every retry of the call that ended the run, and the reason is one line."""
    s = load_settings(vlm_backend="openai", vlm_base_url=server.url, vlm_model="always-503", top_k=0)
    rec = compose_image(image_path, s, run_dir=tmp_path / "run", notify=lambda m: None).record
    assert rec["status"] == "failed" and "HTTP 503" in (rec["reason"] or "") and "\n" not in rec["reason"]
    assert rec["server_retries"] == [f"describe call 1: HTTP 503: retry {n} in 0.1 s" for n in (1, 2, 3)]
    assert rec["errors"][0]["retries"] == rec["server_retries"]
