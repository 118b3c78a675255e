"""Cached factories for what a run uses but the context does not hold: the model, the image, the prompts,
the retriever and the fallback attention map. Each is built once per process for the same inputs and shared
by the runs of that process (batch jobs, chat, evaluation, Studio)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from image2music import prompts as prompt_lib
from image2music.graph.config import Settings
from image2music.graph.context import RunContext, notify_stderr
from image2music.graph.state import Reference
from image2music.tools.errors import RunError, ScrubbedStream, redact
from image2music.tools.images import load_image
from image2music.tools.kb.store import StoreError
from image2music.tools.vlm import VLM, VLMResult, make_vlm

Notify = Callable[[str], None]
Retriever = Callable[[Image.Image, str], list[Reference]]
FallbackMap = Callable[[Image.Image, str], "np.ndarray | None"]

_LOCK = threading.RLock()
_IMAGES: dict[tuple[str, int, int], Image.Image] = {}
_RETRIEVERS: dict[tuple[Any, ...], Retriever | None] = {}
"""Retrievers by knowledge base."""
_NO_EMBEDDER: dict[tuple[Any, ...], float] = {}  # key -> when the embedder could not be had
NO_EMBEDDER_RETRY_S = 300.0
"""A missing embedder is remembered this long (so a batch does not look for it per image), then looked for
again (a long chat session picks up a model downloaded meanwhile)."""
_MAX_IMAGES = 16


def get_vlm(settings: Settings, backend: str | None = None, model: str | None = None) -> VLM:
    """The VLM the settings describe (or another ``model`` / ``backend`` with the same device options);
    local models are loaded once per process."""
    return make_vlm(
        backend or settings.vlm_backend,
        model or settings.vlm_model,
        replay_file=settings.replay_file,
        device=settings.vlm_device,
        dtype=settings.vlm_dtype,
        trust_remote_code=settings.trust_remote_code,
        max_pixels=settings.image_max_pixels,
        base_url=settings.vlm_base_url,
        api_key=settings.vlm_api_key,
        timeout_s=settings.vlm_timeout_s,
        replay_delay_s=settings.replay_delay_s,
        feature_cache=settings.vlm_feature_cache,
        replay_token_delay_s=settings.replay_token_delay_s,
        stream=settings.vlm_stream,
        server=settings.vlm_server,
    )


def get_image(path: Path) -> Image.Image:
    """The input image, loaded and normalised once per file version (path, size, modification time)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.absolute()), st.st_mtime_ns, st.st_size)
    except OSError:
        return load_image(p)  # raises the clear ImageError (missing, unreadable)
    with _LOCK:
        if key not in _IMAGES:
            if len(_IMAGES) >= _MAX_IMAGES:
                _IMAGES.pop(next(iter(_IMAGES)))
            _IMAGES[key] = load_image(p)
        return _IMAGES[key]


def get_prompts(overrides: dict[str, Path] | None = None) -> dict[str, prompt_lib.Prompt]:
    """Every prompt template, with per-node file overrides, checked (PromptError names the problem)."""
    return prompt_lib.load_all(overrides)


def get_kb(settings: Settings) -> Any:
    """The knowledge base the settings point at (its folder or server, and its embedding model)."""
    from image2music.tools.kb.store import KnowledgeBase

    return KnowledgeBase(settings.kb_dir, settings.embed_model, url=settings.chroma_url)


def no_embedder_note(model: str) -> str:
    """One short line: why a run has no references, and the command that fixes it."""
    return f"no references: embedding model '{model}' is not here; composing without examples (hf download {model})"


def get_retriever(settings: Settings, notify: Notify = notify_stderr) -> Retriever | None:
    """A callable (image, description) -> references, or None to compose without examples."""
    if settings.top_k <= 0:
        return None
    key = (str(settings.kb_dir), settings.embed_model, settings.chroma_url, settings.vlm_device)
    import time

    with _LOCK:
        if key in _RETRIEVERS:
            found = _RETRIEVERS[key]
            return None if found is None else _bounded(found, settings)
        failed_at = _NO_EMBEDDER.get(key)
        if failed_at is not None and time.monotonic() - failed_at < NO_EMBEDDER_RETRY_S:
            return None
    from image2music.tools.embedder import EmbedderError, get_embedder, model_location
    from image2music.tools.models import ModelNotFound

    try:  # an absent embedding model is known without opening the base or importing torch
        model_location(settings.embed_model)
    except ModelNotFound:
        notify(no_embedder_note(settings.embed_model))
        with _LOCK:
            _NO_EMBEDDER[key] = time.monotonic()
        return None
    kb = get_kb(settings)
    state = kb.build_state()
    exists = state != "empty"
    if not exists and kb.other_models():
        # a base for another embedder: querying it with this one would be garbage
        raise StoreError(
            f"the knowledge base was built with {', '.join(kb.other_models())}, not with "
            f"'{settings.embed_model}': set I2M_EMBED_MODEL to that model or run `i2m kb build-starter`"
        )
    if not exists and not settings.kb_auto_build:
        notify("no knowledge base: composing without examples; build one with `i2m kb build-starter`")
        return None
    try:
        embedder = get_embedder(settings.embed_model, settings.vlm_device)
    except EmbedderError as e:
        # retrieval is an aid, not a requirement: an offline machine without the embedder still composes
        notify(f"no embedder, so no references: composing without examples ({str(e).splitlines()[0][:160]})")
        with _LOCK:
            _NO_EMBEDDER[key] = time.monotonic()
        return None
    if state in ("empty", "partial:starter") and settings.kb_auto_build:
        from image2music.tools.kb.ingest import build_starter

        with kb.build_lock():  # one builder across processes: the others wait here, then use what it built
            state = kb.build_state()
            if state != "complete":
                notify(
                    "no knowledge base yet: building the starter base (once)"
                    if state == "empty"
                    else f"the starter knowledge base was left unfinished ({kb.count()} entries): finishing it (once)"
                )
                build_starter(kb, device=settings.vlm_device, progress=True)
    elif state.startswith("partial:"):
        what = state.split(":", 1)[1]
        command = "i2m kb build-starter" if what == "starter" else "i2m kb ingest-midicaps DATASET"
        notify(
            f"the knowledge base is unfinished: its {what} build stopped before its end ({kb.count()} entries); "
            f"run `{command}` again to finish it (using it as it is)"
        )
    from image2music.tools.kb.retrieval import retrieve

    def _query(image: Image.Image, description: str, k: int, threshold: float | None) -> list[Any]:
        return retrieve(kb, embedder, image, description, k, threshold)

    with _LOCK:
        _RETRIEVERS[key] = _query  # type: ignore[assignment]
    return _bounded(_query, settings)  # type: ignore[arg-type]


def _bounded(query: Any, settings: Settings) -> Retriever:
    def _retrieve(image: Image.Image, description: str) -> list[Reference]:
        return list(query(image, description, settings.top_k, settings.score_threshold))

    return _retrieve


def get_fallback_map(settings: Settings, notify: Notify = notify_stderr) -> FallbackMap | None:
    """Where the model gives no map (a served model; a local one that reads the image by cross-attention): a CLIP
    occlusion map of the image against a text, or None (recorded answers: no model looked at anything)."""
    from image2music.tools.vlm.backends import backend

    if not settings.attention_maps or backend(settings.vlm_backend).recorded:
        return None

    def _map(image: Image.Image, text: str) -> np.ndarray | None:
        from image2music.tools.attention import clip_occlusion_map
        from image2music.tools.embedder import EmbedderError, get_embedder

        try:
            embedder = get_embedder(settings.embed_model, settings.vlm_device)
        except EmbedderError as e:
            notify(f"no explanation map: {e}")
            return None
        return clip_occlusion_map(embedder, image, text)

    return _map


_CALLS_LOCK = threading.Lock()


class RunAbandoned(RunError):
    """The run this call belongs to has ended (deadline, Ctrl-C): its answer is not used."""


def ask(
    ctx: RunContext,
    node: str,
    prompt: str,
    call_index: int,
    capture_attention: bool = False,
    on_text: Callable[[str], None] | None = None,
) -> VLMResult:
    """One VLM call for ``node`` of the run, recorded in the run's ``vlm_calls.jsonl`` (replayable). ``on_text``
    receives the answer as it is written, without the configured secrets (display only)."""
    stream = ScrubbedStream(on_text, ctx.settings.secret_values()) if on_text is not None else None
    try:
        result = get_vlm(ctx.settings).generate(
            node=node,
            prompt=prompt,
            image=get_image(ctx.image_path),
            call_index=call_index,
            settings=ctx.generation(node),
            capture_attention=capture_attention,
            on_text=stream,
            stop=ctx.cancel,
        )
    except RunError as e:
        if ctx.cancel.is_set():  # the call failed because the run stopped it
            raise RunAbandoned(f"run {ctx.run_id} has stopped; its {node} call was ended") from None
        if getattr(e, "retries", None):  # retried, then failed: the record says so (run.json server_retries)
            e.retries = [f"{node} call {call_index + 1}: {r}" for r in e.retries]  # type: ignore[attr-defined]
        raise
    if stream is not None:
        stream.close()
    if ctx.cancel.is_set():
        raise RunAbandoned(f"run {ctx.run_id} has stopped; the answer of its {node} call is not used")
    # lone surrogates cannot be written; a key the server echoes goes nowhere
    clean = redact(result.text.encode("utf-8", "replace").decode("utf-8"), ctx.settings.secret_values(), False)
    if clean != result.text:
        result = dataclasses.replace(result, text=clean)
    record: dict[str, Any] = {"node": node, "text": result.text, "call": call_index, "prompt": prompt}
    retries = (result.meta or {}).get("retries")
    if retries:  # a served model answered 429/5xx first: each retry is visible
        record["retries"] = retries
        for line in retries:
            ctx.notify(f"{node}: {line}")
    with _CALLS_LOCK:
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        with open(ctx.run_dir / "vlm_calls.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
    return result
