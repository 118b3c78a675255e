"""Vision-language models behind one interface; backends are imported lazily."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from image2music.tools.vlm.base import VLM, GenerationSettings, VLMError, VLMResult

__all__ = [
    "CPU_COSTS",
    "VLM",
    "cpu_notice",
    "GenerationSettings",
    "VLMError",
    "VLMResult",
    "make_vlm",
    "strip_think",
]

_CACHE: dict[tuple[object, ...], VLM] = {}
_LOCK = threading.Lock()


def model_location(model_id: str) -> str:
    """Where a local VLM's files are (a folder, a cached snapshot), or its hub id when the hub can be reached
    (the loader downloads it); VLMError saying how to get it when it is absent. Decided without importing
    torch or transformers: the CLI asks before anything heavy is imported, the loader asks again (cached)."""
    from image2music.tools.models import ModelNotFound, resolve_model

    try:
        return resolve_model(model_id, "VLM", "I2M_VLM_MODEL", "--vlm-model")
    except ModelNotFound as e:
        raise VLMError(str(e)) from e


CPU_COSTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "Qwen/Qwen3-VL-4B-Instruct": {"bfloat16": (0.6, 21.0, 39.0), "float32": (0.74, 30.0, 52.0)},
    "HuggingFaceTB/SmolVLM-256M-Instruct": {"bfloat16": (0.03, 1.0, 2.0), "float32": (0.04, 1.4, 2.6)},
}
"""Measured by bench/costs.py on this project's 2-core x86 machine (AVX512-BF16), random weights at the model's
dimensions: {model: {dtype: (seconds a new token, minutes of a typical run, minutes at the token budgets)}}."""


def cpu_notice(model: str, dtype: str) -> str:
    """What a run of ``model`` costs on a CPU, said before a multi-GB download and a long wait."""
    cost = CPU_COSTS.get(model, {}).get(dtype)
    where = "README: Which model for my machine"
    if cost is None:
        return (
            f"no GPU: '{model}' runs on the CPU in {dtype}; a model of a few billion parameters takes tens of "
            f"minutes an image there ({where})"
        )
    per_token, typical, budget = cost
    return (
        f"no GPU: '{model}' runs on the CPU in {dtype}, about {per_token:.2f} s a token: ~{typical:.0f} min for a "
        f"typical image on 2 cores (up to {budget:.0f} min at its token budgets; more cores are faster). For "
        f"minutes, serve a quantised model with llama.cpp and I2M_VLM_SERVER=llamacpp ({where})"
    )


def make_vlm(
    backend: str,
    model: str,
    *,
    replay_file: Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    max_pixels: int = 512 * 512,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 300.0,
    replay_delay_s: float = 0.0,
    feature_cache: int = 8,
    replay_token_delay_s: float = 0.0,
    stream: bool = True,
    server: str = "openai",
) -> VLM:
    """The VLM for these settings; local models are loaded once per process and reused. A local model keeps
    the vision features of at least ``feature_cache`` images (parallel runs must not evict each other's)."""
    match backend:
        case "replay":
            from image2music.tools.vlm.replay import ReplayFileError, ReplayVLM

            if replay_file is None:  # refused input (exit 2), like a replay file that cannot be read
                raise ReplayFileError("the replay backend needs a file: set I2M_REPLAY_FILE or pass --replay FILE")

            try:
                st = Path(replay_file).stat()
                rkey: tuple[object, ...] = (
                    "replay", str(replay_file), st.st_mtime_ns, st.st_size, replay_delay_s, replay_token_delay_s
                )  # fmt: skip
            except OSError:
                return ReplayVLM(replay_file, delay_s=replay_delay_s)  # raises the clear "cannot read" error
            with _LOCK:
                if rkey not in _CACHE:
                    _CACHE[rkey] = ReplayVLM(replay_file, delay_s=replay_delay_s, token_delay_s=replay_token_delay_s)
                return _CACHE[rkey]
        case "transformers":
            key = ("transformers", model, device, dtype, trust_remote_code, max_pixels)
            with _LOCK:
                if key not in _CACHE:
                    from image2music.tools.vlm.hf import TransformersVLM

                    _CACHE[key] = TransformersVLM(
                        model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, max_pixels=max_pixels,
                        cache_entries=feature_cache,
                    )  # fmt: skip
                local = _CACHE[key]
                local.cache_entries = max(local.cache_entries, feature_cache)  # type: ignore[attr-defined]
                return _CACHE[key]
        case "openai":
            from image2music.tools.vlm.openai_compat import OpenAIVLM

            if not base_url:
                raise VLMError(
                    "the openai backend needs a server: set I2M_VLM_BASE_URL, "
                    "e.g. http://localhost:8000/v1 for vLLM or http://localhost:11434/v1 for Ollama"
                )
            return OpenAIVLM(
                base_url=base_url, model=model, api_key=api_key, timeout_s=timeout_s, max_pixels=max_pixels,
                stream=stream, server=server,
            )  # fmt: skip
        case _:
            raise VLMError(f"unknown VLM backend '{backend}': use transformers, replay or openai")


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


def strip_think(text: str) -> str:
    """The answer without reasoning sections (an unclosed <think> hides everything after it)."""
    out = _THINK.sub("", text)
    m = re.search(r"<think>", out, re.I)
    if m:
        out = out[: m.start()]
    return re.sub(r"</think>", "", out, flags=re.I).strip()
