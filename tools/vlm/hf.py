"""The transformers backend: any ``AutoModelForImageTextToText`` checkpoint, hub id or local folder."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from tools.attention import AttentionRecorder, image_grid
from tools.vlm.base import GenerationSettings, VLMError, VLMResult


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, dtype: str = "auto") -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def load_error(what: str, model_id: str, env_var: str, flag: str, err: BaseException) -> str:
    """One clear message for a model that cannot be loaded."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    local = Path(model_id).expanduser()
    if local.exists():
        hint = (
            f"the folder {local} exists but does not hold a loadable checkpoint "
            "(config.json, the weights and the processor files)"
        )
    else:
        hint = (
            f"if '{model_id}' is a Hugging Face hub id, download it once with `hf download {model_id}` "
            f"(needs network; set HF_HUB_OFFLINE=1 afterwards to stay offline), or point {env_var} / "
            f"{flag} at a local folder that holds the checkpoint"
        )
    return f"cannot load the {what} '{model_id}': {reason[:300]}. {hint}"


def fit_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale ``image`` so that width x height <= ``max_pixels`` (aspect kept)."""
    w, h = image.size
    if max_pixels <= 0 or w * h <= max_pixels:
        return image
    scale = (max_pixels / (w * h)) ** 0.5
    return image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)


class TransformersVLM:
    """A local vision-language model through transformers."""

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_pixels: int = 512 * 512,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = model_id
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.max_pixels = max_pixels
        self.vision_calls = 0
        self._lock = threading.Lock()  # one generate at a time on a shared model (batch --jobs)
        try:
            self.processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=self.dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise VLMError(load_error("VLM", model_id, "I2M_VLM_MODEL", "--vlm-model", e)) from e
        cast(Any, self.model).to(self.device).eval()
        self._torch = torch
        self.image_token_id = _image_token_id(self.model.config, self.processor)

    def _inputs(self, prompt: str, image: Image.Image) -> dict[str, Any]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        try:
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (ValueError, AttributeError) as e:
            raise VLMError(f"the processor of '{self.name}' has no usable chat template: {e}") from e
        inputs = self.processor(
            text=[text], images=[fit_pixels(image.convert("RGB"), self.max_pixels)], return_tensors="pt"
        )
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}

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
        with self._lock:
            return self._generate(prompt, image, call_index, settings, capture_attention)

    def _generate(
        self, prompt: str, image: Image.Image, call_index: int, settings: GenerationSettings, capture_attention: bool
    ) -> VLMResult:
        torch = self._torch
        inputs = self._inputs(prompt, image)
        ids = inputs["input_ids"][0]
        gen_kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens}
        if settings.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        else:
            gen_kwargs.update(do_sample=False)
        torch.manual_seed(settings.seed + call_index)
        positions = (
            np.nonzero((ids == self.image_token_id).cpu().numpy())[0]
            if self.image_token_id is not None
            else np.zeros(0, dtype=int)
        )
        recorder: AttentionRecorder | None = None
        previous = getattr(self.model.config, "_attn_implementation", None)
        try:
            if capture_attention and len(positions):
                # attention weights exist only in the eager implementation; switch for this call only
                if previous != "eager":
                    self.model.set_attn_implementation("eager")
                recorder = AttentionRecorder(self.model, positions)
                with torch.inference_mode(), recorder:
                    out = self.model.generate(**inputs, **gen_kwargs)
            else:
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **gen_kwargs)
        except RuntimeError as e:
            raise VLMError(f"generation with '{self.name}' failed on {self.device}: {str(e)[:300]}") from e
        finally:
            if recorder is not None and previous and previous != "eager":
                self.model.set_attn_implementation(previous)
        new = out[0, ids.shape[0] :]
        tok = getattr(self.processor, "tokenizer", self.processor)
        text = tok.decode(new, skip_special_tokens=True)
        result = VLMResult(text=text, meta={"new_tokens": int(new.shape[0])})
        if recorder is not None:
            rows = recorder.result()
            if rows.size:
                grid, use = image_grid(
                    len(positions),
                    inputs,
                    self.model.config,
                    merge_size=getattr(getattr(self.processor, "image_processor", None), "merge_size", None),
                    tile_tokens=getattr(self.processor, "image_seq_len", None),
                )
                result.token_attention = rows[:, use]
                result.grid = grid
                result.token_offsets = [
                    len(tok.decode(new[: i + 1], skip_special_tokens=True)) for i in range(min(len(new), len(rows)))
                ]
        return result


def _image_token_id(config: Any, processor: Any) -> int | None:
    for attr in ("image_token_id", "image_token_index"):
        v = getattr(config, attr, None)
        if isinstance(v, int):
            return v
    tok = getattr(processor, "image_token", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if isinstance(tok, str) and tokenizer is not None:
        return int(tokenizer.convert_tokens_to_ids(tok))
    return None
