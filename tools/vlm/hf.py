"""The transformers backend: any ``AutoModelForImageTextToText`` checkpoint, hub id or local folder."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from image2music.tools.images import fit_pixels
from image2music.tools.vlm.base import GenerationSettings, VLMError, VLMResult
from image2music.tools.vlm.capture import AttentionRecorder, image_grid


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
    # a CPU that computes in bf16 natively (AVX512-BF16, AMX): half the memory of fp32 and faster (bench/costs.py)
    return torch.bfloat16 if device == "cpu" and cpu_has_bf16() else torch.float32


def cpu_has_bf16() -> bool:
    """The CPU has bf16 arithmetic in hardware (Linux: the avx512_bf16 or amx_bf16 flag)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


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
    return f"cannot load the {what} '{model_id}': {reason[:300].rstrip('. ')}. {hint}"


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
        cache_entries: int = 8,
    ) -> None:
        from image2music.tools.vlm import model_location

        # an absent model is known before torch and transformers are imported (seconds saved per process)
        where = model_location(model_id)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = model_id
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.max_pixels = max_pixels
        self.vision_calls = 0
        self.cache_entries = cache_entries
        self._lock = threading.Lock()  # one generate at a time on a shared model (batch --jobs)
        try:
            self.processor = AutoProcessor.from_pretrained(where, trust_remote_code=trust_remote_code)
            self.model = AutoModelForImageTextToText.from_pretrained(
                where, dtype=self.dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise VLMError(load_error("VLM", model_id, "I2M_VLM_MODEL", "--vlm-model", e)) from e
        cast(Any, self.model).to(self.device).eval()
        self._torch = torch
        self.image_token_id = _image_token_id(self.model.config, self.processor)
        self._vision_cache: OrderedDict[bytes, Any] = OrderedDict()
        self._install_vision_cache()

    def _install_vision_cache(self) -> None:
        """Encode each image once: later calls with the same pixels reuse the vision features.

        Every generate call would otherwise run the vision tower again (describe, compose, reflect, explain,
        and each retry). ``vision_calls`` counts the tower's forward passes.
        """
        inner: Any = (
            self.model.model if hasattr(getattr(self.model, "model", None), "get_image_features") else self.model
        )
        # every tower is counted, whatever its name (LightOnOCR: vision_encoder) and wherever it sits (mllama)
        tower = next(
            (
                getattr(owner, n)
                for owner in (inner, getattr(inner, "model", None))
                for n in VISION_TOWERS
                if owner is not None and getattr(owner, n, None) is not None
            ),
            None,
        )
        if tower is not None:
            tower.register_forward_hook(self._count_vision)
        original = getattr(inner, "get_image_features", None)
        if original is None:  # no seam to cache at (mllama encodes the image inside its forward): counted only
            return

        @functools.wraps(original)  # generate() inspects this signature to route pixel arguments
        def cached(*args: Any, **kwargs: Any) -> Any:
            key = _features_key(args, kwargs)
            if key is not None and key in self._vision_cache:
                self._vision_cache.move_to_end(key)
                return self._vision_cache[key]
            out = original(*args, **kwargs)
            if key is not None:
                self._vision_cache[key] = out
                while len(self._vision_cache) > self.cache_entries:
                    self._vision_cache.popitem(last=False)
            return out

        inner.get_image_features = cached

    def _count_vision(self, module: Any, args: Any, output: Any) -> None:
        self.vision_calls += 1

    def _inputs(self, prompt: str, image: Image.Image) -> dict[str, Any]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        try:
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (ValueError, AttributeError) as e:
            raise VLMError(f"the processor of '{self.name}' has no usable chat template: {e}") from e
        inputs = self.processor(
            text=[text], images=[fit_pixels(image.convert("RGB"), self.max_pixels)], return_tensors="pt"
        )
        dtype = self.model.dtype
        # floating inputs (pixels) take the model's dtype: bf16 pixels into an fp32 model (or the reverse) fail
        return {
            k: (
                v.to(self.device, dtype=dtype)
                if getattr(v, "is_floating_point", lambda: False)()
                else v.to(self.device)
            )
            if hasattr(v, "to")
            else v
            for k, v in inputs.items()
        }

    def layout(self, inputs: dict[str, Any], n_positions: int, image: Image.Image) -> Any:
        """(rows, cols) and the image positions to use for this model's processor outputs, or None if unknown."""
        return image_grid(
            n_positions,
            inputs,
            self.model.config,
            merge_size=getattr(getattr(self.processor, "image_processor", None), "merge_size", None),
            tile_tokens=getattr(self.processor, "image_seq_len", None)
            or getattr(self.processor, "image_seq_length", None),
            image_size=fit_pixels(image, self.max_pixels).size,
        )

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
        with self._lock:
            before = self.vision_calls
            try:
                result = self._generate(prompt, image, call_index, settings, capture_attention, on_text, stop)
            except VLMError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever transformers raises, the run gets one clear line
                cause = (str(e).strip().splitlines() or [""])[0][:300]
                raise VLMError(f"'{self.name}' failed in {node}: {type(e).__name__}: {cause}") from e
            result.meta["vision_forwards"] = self.vision_calls - before
            return result

    def _generate(
        self,
        prompt: str,
        image: Image.Image,
        call_index: int,
        settings: GenerationSettings,
        capture_attention: bool,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> VLMResult:
        torch = self._torch
        inputs = self._inputs(prompt, image)
        ids = inputs["input_ids"][0]
        tok = getattr(self.processor, "tokenizer", self.processor)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens}
        if on_text is not None:
            gen_kwargs["streamer"] = TextPieces(tok, on_text)
        if stop is not None:
            gen_kwargs["stopping_criteria"] = [StopWhenSet(stop)]
        grammar = None
        if settings.grammar:
            from transformers import LogitsProcessorList

            from image2music.tools.vlm.constrain import abc_grammar

            grammar = abc_grammar(self.model, tok, int(ids.shape[0]), settings.max_new_tokens)
            gen_kwargs["logits_processor"] = LogitsProcessorList([grammar])
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
        model: Any = self.model  # transformers' generate() is bound by a mixin that type checkers cannot follow
        cross = capture_attention and len(positions) == 1  # one placeholder: the image is read by cross-attention
        try:
            with torch.inference_mode():
                if capture_attention and len(positions) > 1:
                    recorder = AttentionRecorder(self.model, positions, prompt_len=int(ids.shape[0]))
                    with recorder:
                        out = model.generate(**inputs, **gen_kwargs)
                else:
                    out = model.generate(**inputs, **gen_kwargs)
        except RuntimeError as e:
            raise VLMError(f"generation with '{self.name}' failed on {self.device}: {str(e)[:300]}") from e
        new = out[0, ids.shape[0] :]
        text = tok.decode(new, skip_special_tokens=True)
        result = VLMResult(text=text, meta={"new_tokens": int(new.shape[0])})
        if grammar is not None:
            result.meta["grammar"] = {
                "engine": "llguidance",
                "opened_at_half_budget": grammar.opened_by_budget,
                "closed_at_budget": grammar.closed_by_budget,
            }
            if grammar.gave_up:
                result.meta["note"] = f"the ABC grammar stopped steering: {grammar.gave_up.splitlines()[0][:200]}"
        if cross:
            result.meta["note"] = (
                f"no attention map: '{self.name}' reads the image through cross-attention layers (one image "
                "placeholder in its text), not image tokens the text attends to"
            )
        if recorder is not None and not recorder.layers:
            result.meta["note"] = f"no attention map: no decoder self-attention layers found in '{self.name}'"
        elif recorder is not None:
            rows = recorder.result()
            layout = self.layout(inputs, len(positions), image) if rows.size else None
            if rows.size and layout is None:
                result.meta["note"] = (
                    f"no attention map: the layout of {len(positions)} image tokens of '{self.name}' is not known "
                    "(a strip would be meaningless)"
                )
            elif layout is not None:
                grid, use = layout
                result.token_attention = rows[:, use]
                result.grid = grid
                # row i belongs to generated token i + 1 (the prompt pass made token 0)
                result.token_offsets = token_offsets(tok, new.tolist(), min(len(new) - 1, len(rows)), text)
        return result


VISION_TOWERS = ("vision_tower", "visual", "vision_model", "vision_encoder")
"""The names a vision tower goes by in transformers' VLMs (counted once per forward: ``vision_forwards``)."""


class StopWhenSet:
    """A stopping criterion: ``generate`` ends at the next token once the run is stopped."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool, device=input_ids.device)


class TextPieces:
    """A ``generate`` streamer that hands the new text to ``sink`` as it is decoded: tokens are decoded from the
    start of the current line (so a character split over tokens, or a leading space, comes out whole), and
    a piece ending in an incomplete character waits for the next token. The prompt is skipped. It runs in the
    generating thread and changes nothing in generation (tokens, seeds, captured attention)."""

    def __init__(self, tokenizer: Any, sink: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.sink = sink
        self.line: list[int] = []
        self.sent = 0  # characters of the current line already handed over
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate's first put is the prompt
            self.prompt_seen = True
            return
        self.line.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.line, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self.sent:
            self.sink(text[self.sent :])
        if text.endswith("\n"):
            self.line, self.sent = [], 0
        else:
            self.sent = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self.line, skip_special_tokens=True)
        if len(text) > self.sent:
            self.sink(text[self.sent :])
        self.line, self.sent = [], 0


OFFSET_WINDOW = 8
"""Tokens decoded before the new one, so that each step's text is exact (leading spaces, split characters)."""


def token_offsets(tok: Any, ids: list[int], count: int, text: str | None = None) -> list[int]:
    """``len(decode(ids[: i + 2]))`` for ``i < count`` (the text's length after each generated token), in linear
    time: each step decodes only a short window before the new token and adds what that token added (the
    window's own leading-space and partial-character effects cancel). Checked against the whole text's length;
    where a tokenizer's decoding is not local, the exact quadratic way is used."""

    def length(part: list[int]) -> int:
        return len(tok.decode(part, skip_special_tokens=True))

    if count <= 0:
        return []
    out: list[int] = []
    total = length(ids[:1])
    for k in range(2, count + 2):
        start = max(0, k - 1 - OFFSET_WINDOW)
        total += length(ids[start:k]) - length(ids[start : k - 1])
        out.append(total)
    whole = length(ids[: count + 1]) if text is None or count + 1 != len(ids) else len(text)
    if out[-1] != whole:
        return [length(ids[: i + 2]) for i in range(count)]  # decoding is not local for this tokenizer
    return out


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


def _features_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
    """A digest of the pixel tensors (and grid) a vision encoder is asked to encode."""
    import hashlib

    import torch

    h = hashlib.blake2b(digest_size=20)
    found = False
    for v in list(args) + [kwargs[k] for k in sorted(kwargs)]:
        if isinstance(v, torch.Tensor):
            h.update(str((tuple(v.shape), v.dtype)).encode())
            # hashed in place: no copy of the pixels (a CPU tensor's numpy view shares its memory)
            h.update(memoryview(v.detach().cpu().contiguous().view(torch.uint8).numpy()))  # type: ignore[arg-type]
            found = True
        elif isinstance(v, (int, float, str, bool)) or v is None:
            h.update(repr(v).encode())
    return h.digest() if found else None
