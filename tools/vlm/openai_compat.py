"""OpenAI-compatible chat completions (vLLM, Ollama, LM Studio, hosted APIs); the image goes as a data URL."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from PIL import Image

from image2music.tools.errors import ScrubbedStream, redact, url_secrets
from image2music.tools.images import fit_pixels
from image2music.tools.vlm.base import GenerationSettings, VLMError, VLMResult

MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Answers are read up to this size and refused beyond it (a tune is a few kB)."""
MAX_EVENT_BYTES = 1024 * 1024
"""One event of a streamed answer (one line of ``data:``) may hold at most this many bytes."""
MAX_RETRIES = 3
"""Retries after HTTP 429 or 5xx, each after Retry-After (capped) or an exponential backoff."""


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, or VLMError (no file:, ftp:, data: or other schemes)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise VLMError(f"I2M_VLM_BASE_URL must be an http:// or https:// URL with a host, not {url!r}")
    return url.rstrip("/")


def answer_text(data: Any) -> str:
    """``choices[0].message.content`` as text: a string, or a list of parts (OpenAI's content parts)."""
    content = data["choices"][0]["message"]["content"]
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content if p is not None)
    return str(content)


class OpenAIVLM:
    """A served model; it has no attentions, so explanation maps come from the CLIP fallback."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_pixels: int = 512 * 512,
        stream: bool = True,
        server: str = "openai",
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.shown_url = redact(self.base_url, headers=False)
        """The URL as messages name it (without credentials)."""
        self.stream = stream
        """Ask for ``stream: true``; turned off for this server once it refuses a stream."""
        self.server = server
        self.name = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_pixels = max_pixels
        # the encoded images of the last few calls, each kept with its image (so that an id is never reused
        # for another picture while it is cached): a batch's parallel runs each send theirs once
        self._image_cache: list[tuple[Image.Image, str]] = []
        self._image_lock = threading.Lock()

    IMAGE_CACHE = 16

    def _data_url(self, image: Image.Image) -> str:
        with self._image_lock:
            for cached, url in self._image_cache:
                if cached is image:
                    return url
        buf = io.BytesIO()
        fit_pixels(image.convert("RGB"), self.max_pixels).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        with self._image_lock:
            self._image_cache = [(image, url), *self._image_cache[: self.IMAGE_CACHE - 1]]
        return url

    def generate(
        self,
        *,
        node: str,
        prompt: str,
        image: Image.Image,
        call_index: int,
        settings: GenerationSettings,
        capture_attention: bool = False,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> VLMResult:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": self._data_url(image)}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed + call_index,
        }
        if settings.grammar:
            from image2music.tools.vlm.constrain import server_fields

            body.update(server_fields(self.server))
        deadline = time.monotonic() + self.timeout_s
        retries: list[str] = []
        sink = ScrubbedStream(on_text, [self.api_key or ""]) if on_text is not None else None
        answer = _Answer(sink)
        streaming = self.stream
        try:
            attempt = 0
            while True:
                if streaming:
                    body.update(stream=True, stream_options={"include_usage": True})
                else:
                    body.pop("stream", None)
                    body.pop("stream_options", None)
                try:
                    data = self._post(json.dumps(body).encode(), deadline, answer if streaming else None, stop)
                    break
                except HTTPStatus as e:
                    detail = redact(" ".join(e.detail.split()), [self.api_key or "", *url_secrets(self.base_url)])
                    if streaming and 400 <= e.code < 500 and "stream" in detail.lower():
                        # a server that does not stream (or not with stream_options): the same request, whole
                        streaming = self.stream = False
                        retries.append(f"HTTP {e.code}: the server does not stream; asked again without streaming")
                        continue
                    wait = self._retry_wait(e, attempt, deadline)
                    if wait is None:
                        raise self._status_error(e, detail, settings.grammar) from e
                    retries.append(f"HTTP {e.code}: retry {attempt + 1} in {wait:.1f} s")
                    attempt += 1
                    if stop is not None and stop.wait(wait):
                        raise VLMError(f"the call to {self.shown_url} was stopped") from e
                    if stop is None:
                        time.sleep(wait)
        except VLMError as e:
            e.retries = retries  # the record keeps what was retried, also when the call failed in the end
            raise
        if data is None:  # streamed
            if sink is not None:
                sink.close()
            if not answer.finished:
                raise VLMError(f"the answer of {self.shown_url} was cut short: its stream ended before the answer did")
            return VLMResult(text=answer.text, meta={"usage": answer.usage, "retries": retries, "streamed": True})
        try:
            text = answer_text(data)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise VLMError(f"unexpected answer from {self.shown_url}: no choices[0].message.content") from e
        if sink is not None and text:
            sink(text)
            sink.close()
        usage = data.get("usage") if isinstance(data, dict) else None
        return VLMResult(text=text, meta={"usage": usage, "retries": retries})

    def _status_error(self, e: HTTPStatus, detail: str, grammar: bool) -> VLMError:
        """The VLMError for a non-2xx answer that is not retried."""
        if 300 <= e.code < 400:
            return VLMError(
                f"the server at {self.shown_url} answered a redirect (HTTP {e.code}) to "
                f"{redact(str(e.headers.get('Location', '?')), [self.api_key or '', *url_secrets(self.base_url)])}; "
                "redirects are not followed so the API key stays with the configured server: set I2M_VLM_BASE_URL to "
                "the final address"
            )
        if grammar and self.server != "openai" and 400 <= e.code < 500:
            return VLMError(
                f"the server at {self.shown_url} answered HTTP {e.code}: {detail}; it may not take the ABC grammar the "
                f"way I2M_VLM_SERVER={self.server} sends it: set I2M_VLM_SERVER to its kind, or I2M_GRAMMAR=off"
            )
        return VLMError(f"the server at {self.shown_url} answered HTTP {e.code}: {detail}")

    def _retry_wait(self, e: HTTPStatus, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before retrying a 429 or 5xx (Retry-After, else exponential), or None to give up."""
        if not (e.code == 429 or 500 <= e.code < 600) or attempt >= MAX_RETRIES:
            return None
        try:
            wait = float(e.headers.get("Retry-After") or 0) or 2.0**attempt
        except ValueError:
            wait = 2.0**attempt
        wait = min(wait, 30.0)
        return wait if time.monotonic() + wait < deadline else None

    def _post(
        self, payload: bytes, deadline: float, answer: _Answer | None = None, stop: threading.Event | None = None
    ) -> Any:
        """One request under one deadline for the whole call, kept by the clock: the socket's timeout is the
        time left before every read, and a watchdog shuts the socket at the deadline (a server that trickles
        its status line, headers or body, or sends ``100 Continue`` forever, is cut off there). With ``answer``
        a streamed answer (server-sent events) is read into it and None returned; a server that answers whole
        anyway is read as usual."""
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        where = f"the VLM server at {self.shown_url}"
        on_event: Callable[[str], None] | None = None
        if answer is not None:
            api_key = self.api_key
            on_event = lambda data: answer.event(data, where, api_key)  # noqa: E731 - the one place it is made

        raw = _exchange(
            f"{self.base_url}/chat/completions",
            payload,
            {"Content-Type": "application/json", **auth},
            deadline,
            where=where,
            timeout_s=self.timeout_s,
            on_event=on_event,
            stop=stop,
            secrets=[self.api_key or "", *url_secrets(self.base_url)],
        )
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            raise VLMError(f"the server at {self.shown_url} did not answer JSON (or the answer was cut short)") from e
        except RecursionError as e:
            raise VLMError(f"the answer of {self.shown_url} is JSON nested too deeply to read; refused") from e


class _Answer:
    """A streamed answer as its events arrive: the text so far (each piece handed to ``sink``), whether it
    ended (a ``finish_reason`` or ``[DONE]``) and the usage the server reported."""

    def __init__(self, sink: Callable[[str], None] | None) -> None:
        self.sink = sink
        self.parts: list[str] = []
        self.finished = False
        self.usage: Any = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def event(self, data: str, where: str, key: str | None) -> None:
        if data.strip() == "[DONE]":
            self.finished = True
            return
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as e:
            raise VLMError(f"{where} streamed an event that is not JSON; refused") from e
        if not isinstance(obj, dict):
            raise VLMError(f"{where} streamed an event that is not a JSON object; refused")
        if obj.get("error"):
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else err
            text = redact(" ".join(str(message).split())[:300], [key or ""])
            raise VLMError(f"{where} stopped its answer with an error: {text}")
        if obj.get("usage"):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            piece = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(piece, list):  # content parts
                piece = "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in piece)
            if isinstance(piece, str) and piece:
                self.parts.append(piece)
                if self.sink is not None:
                    self.sink(piece)
            if choice.get("finish_reason"):
                self.finished = True


class HTTPStatus(Exception):
    """A non-2xx answer: its code, headers and the first bytes of its body."""

    def __init__(self, code: int, headers: Any, detail: str) -> None:
        super().__init__(f"HTTP {code}")
        self.code, self.headers, self.detail = code, headers, detail


class _Late(Exception):
    pass


def _connection(url: urllib.parse.SplitResult, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for ``url`` (through the environment's proxy, as urllib would) and the request target."""
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    host = url.hostname or ""
    target = url.path + (f"?{url.query}" if url.query else "")
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        conn: http.client.HTTPConnection
        if https:
            conn = http.client.HTTPSConnection(p.hostname or "", p.port or 8080, timeout=timeout)
            conn.set_tunnel(host, port)
            return conn, target
        return http.client.HTTPConnection(p.hostname or "", p.port or 8080, timeout=timeout), urllib.parse.urlunsplit(
            url
        )
    if https:
        return http.client.HTTPSConnection(host, port, timeout=timeout), target
    return http.client.HTTPConnection(host, port, timeout=timeout), target


def _exchange(
    url: str,
    payload: bytes,
    headers: dict[str, str],
    deadline: float,
    *,
    where: str,
    timeout_s: float,
    on_event: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    secrets: list[str] | None = None,
) -> bytes | None:
    """POST ``payload``; the body of a 2xx answer (at most MAX_ANSWER_BYTES), else HTTPStatus; every
    socket, SSL and HTTP fault, and the deadline, as a VLMError naming ``where`` and the cause. With
    ``on_event``, an answer of server-sent events (``text/event-stream``) is read event by event into it (each
    event's ``data``, at most MAX_EVENT_BYTES, all of them at most MAX_ANSWER_BYTES) and None is returned."""

    def left() -> float:
        t = deadline - time.monotonic()
        if t <= 0:
            raise _Late
        return t

    conn, target = _connection(urllib.parse.urlsplit(url), max(0.01, deadline - time.monotonic()))
    fired = threading.Event()
    sock: list[Any] = []

    def watchdog() -> None:
        fired.set()
        for s in sock:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), watchdog)
    timer.daemon = True
    timer.start()
    done = threading.Event()
    if stop is not None:  # a stopped run shuts the socket too: the call ends at once, not at its deadline

        def on_stop() -> None:
            while not done.is_set() and not stop.wait(0.05):
                pass
            if stop.is_set() and not done.is_set():
                watchdog()

        threading.Thread(target=on_stop, name="i2m-call-stop", daemon=True).start()
    try:
        conn.connect()
        sock.append(conn.sock)
        if fired.is_set():
            raise _Late
        conn.sock.settimeout(left())
        conn.request("POST", target, body=payload, headers=headers)
        conn.sock.settimeout(left())
        resp = conn.getresponse()
        if not 200 <= resp.status < 300:
            sock[0].settimeout(left())
            detail = resp.read(300).decode("utf-8", "replace")
            raise HTTPStatus(resp.status, resp.headers, detail)
        kind = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if on_event is not None and kind == "text/event-stream":

            def arm() -> None:  # the time left before each read; _Late past the deadline
                t = left()
                with contextlib.suppress(OSError):  # the server closed the stream: the socket is gone
                    sock[0].settimeout(t)

            _read_events(resp, arm, on_event, where)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            sock[0].settimeout(left())
            chunk = resp.read1(65536)
            if not chunk:
                if resp.length:  # fewer bytes than Content-Length promised
                    raise http.client.IncompleteRead(b"", resp.length)
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise VLMError(f"the answer of {where} is larger than {MAX_ANSWER_BYTES >> 20} MB; refused")
            chunks.append(chunk)
        return b"".join(chunks)
    except (HTTPStatus, VLMError):
        raise
    except (_Late, TimeoutError) as e:
        raise VLMError(f"{where} did not finish its answer within {timeout_s:g} s (I2M_VLM_TIMEOUT_S)") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        if fired.is_set():
            raise VLMError(f"{where} did not finish its answer within {timeout_s:g} s (I2M_VLM_TIMEOUT_S)") from e
        raise VLMError(
            f"cannot reach {where} or its answer was unusable: {_cause(e, secrets or [])}; is it running? "
            "(I2M_VLM_BASE_URL)"
        ) from e
    finally:
        done.set()
        timer.cancel()
        conn.close()


def _read_events(resp: Any, before_read: Callable[[], None], on_event: Callable[[str], None], where: str) -> None:
    """Server-sent events: ``data:`` lines (several make one event, joined by newlines) up to a blank line;
    comments (``:``) and other fields are skipped; the stream ends at ``[DONE]`` or when the server closes it."""
    size = 0
    data: list[str] = []
    while True:
        before_read()
        line = resp.readline(MAX_EVENT_BYTES + 1)
        size += len(line)
        if len(line) > MAX_EVENT_BYTES:
            raise VLMError(f"an event of the answer of {where} is larger than {MAX_EVENT_BYTES >> 20} MB; refused")
        if size > MAX_ANSWER_BYTES:
            raise VLMError(f"the answer of {where} is larger than {MAX_ANSWER_BYTES >> 20} MB; refused")
        if not line:
            before_read()  # a stream the watchdog ended at the deadline is late, not cut short
        if not line or not line.strip(b"\r\n"):
            if data:
                event = "\n".join(data)
                data = []
                on_event(event)
                if event.strip() == "[DONE]":
                    return
            if not line:
                return
            continue
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))


def _cause(e: BaseException, secrets: list[str]) -> str:
    """The cause of a transport fault in words."""
    if isinstance(e, http.client.IncompleteRead):
        return "the answer was cut short"
    if isinstance(e, http.client.LineTooLong):
        return f"a line of its answer is too long ({e})"
    if isinstance(e, http.client.RemoteDisconnected):
        return "it closed the connection without answering"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed: {e.reason or e}"
    text = " ".join(str(getattr(e, "strerror", None) or e).split()) or type(e).__name__
    return f"{type(e).__name__}: {redact(text, secrets)[:200]}"  # scrubbed whole, then cut
