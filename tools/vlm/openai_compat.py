"""OpenAI-compatible chat completions (vLLM, Ollama, LM Studio, hosted APIs); the image goes as a data URL."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from image2music.tools.images import fit_pixels
from image2music.tools.vlm.base import GenerationSettings, VLMError, VLMResult
from PIL import Image

MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Answers are read up to this size and refused beyond it (a tune is a few kB)."""
MAX_RETRIES = 3
"""Retries after HTTP 429 or 5xx, each after Retry-After (capped) or an exponential backoff."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are never followed: the API key must not travel to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


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
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.name = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_pixels = max_pixels
        self._image_cache: tuple[int, str] | None = None

    def _data_url(self, image: Image.Image) -> str:
        key = id(image)
        if self._image_cache and self._image_cache[0] == key:
            return self._image_cache[1]
        buf = io.BytesIO()
        fit_pixels(image.convert("RGB"), self.max_pixels).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        self._image_cache = (key, url)
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
    ) -> VLMResult:
        body = {
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
        payload = json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout_s
        retries: list[str] = []
        for attempt in range(MAX_RETRIES + 1):
            try:
                data = self._post(payload, deadline)
                break
            except urllib.error.HTTPError as e:
                wait = self._retry_wait(e, attempt, deadline)
                if wait is None:
                    detail = e.read(300).decode("utf-8", "replace") if e.fp else ""
                    if 300 <= e.code < 400:
                        raise VLMError(
                            f"the server at {self.base_url} answered a redirect (HTTP {e.code}) to "
                            f"{e.headers.get('Location', '?')}; redirects are not followed so the API key stays "
                            "with the configured server: set I2M_VLM_BASE_URL to the final address"
                        ) from e
                    raise VLMError(f"the server at {self.base_url} answered HTTP {e.code}: {detail}") from e
                retries.append(f"HTTP {e.code}: retry {attempt + 1} in {wait:.1f} s")
                time.sleep(wait)
        try:
            text = answer_text(data)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise VLMError(f"unexpected answer from {self.base_url}: no choices[0].message.content") from e
        usage = data.get("usage") if isinstance(data, dict) else None
        return VLMResult(text=text, meta={"usage": usage, "retries": retries})

    def _retry_wait(self, e: urllib.error.HTTPError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before retrying a 429 or 5xx (Retry-After, else exponential), or None to give up."""
        if not (e.code == 429 or 500 <= e.code < 600) or attempt >= MAX_RETRIES:
            return None
        try:
            wait = float(e.headers.get("Retry-After") or 0) or 2.0**attempt
        except ValueError:
            wait = 2.0**attempt
        wait = min(wait, 30.0)
        return wait if time.monotonic() + wait < deadline else None

    def _post(self, payload: bytes, deadline: float) -> Any:
        """One request with a whole-call deadline (not per read) and a maximum answer size."""
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=payload,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with _OPENER.open(req, timeout=max(0.1, deadline - time.monotonic())) as resp:
                chunks: list[bytes] = []
                size = 0
                while True:
                    if time.monotonic() > deadline:
                        raise VLMError(
                            f"the server at {self.base_url} did not finish its answer within "
                            f"{self.timeout_s:g} s (I2M_VLM_TIMEOUT_S)"
                        )
                    chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
                    if not chunk:
                        if getattr(resp, "length", None):  # fewer bytes than Content-Length promised
                            raise VLMError(f"the answer of {self.base_url} was cut short; try again")
                        break
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise VLMError(
                            f"the answer of {self.base_url} is larger than {MAX_ANSWER_BYTES >> 20} MB; refused"
                        )
                    chunks.append(chunk)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise VLMError(
                f"cannot reach the VLM server at {self.base_url} or its answer was cut short: "
                f"{getattr(e, 'reason', e)}; is it running? (I2M_VLM_BASE_URL)"
            ) from e
        try:
            return json.loads(b"".join(chunks).decode("utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            raise VLMError(f"the server at {self.base_url} did not answer JSON (or the answer was cut short)") from e
