"""OpenAI-compatible chat completions (vLLM, Ollama, LM Studio, hosted APIs); the image goes as a data URL."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

from image2music.tools.vlm.base import GenerationSettings, VLMError, VLMResult
from image2music.tools.vlm.hf import fit_pixels
from PIL import Image


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
        self.base_url = base_url.rstrip("/")
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
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            raise VLMError(f"the server at {self.base_url} answered HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise VLMError(
                f"cannot reach the VLM server at {self.base_url}: {getattr(e, 'reason', e)}; "
                "is it running? (I2M_VLM_BASE_URL)"
            ) from e
        except json.JSONDecodeError as e:
            raise VLMError(f"the server at {self.base_url} did not answer JSON") from e
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise VLMError(f"unexpected answer from {self.base_url}: no choices[0].message.content") from e
        return VLMResult(text=text or "", meta={"usage": data.get("usage")})
