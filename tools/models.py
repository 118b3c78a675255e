"""Find a model before loading it: a local folder, a hub id already in the cache, or one quick check that
the hub can be reached. Offline with a missing model, the user gets one clear line at once instead of
minutes of download retries. The answer is remembered for the process (batch, chat and eval ask once)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from image2music.tools.errors import RunError

_RESOLVED: dict[str, tuple[str | BaseException, float]] = {}
FAILURE_TTL_S = 60.0
"""A model found missing is looked for again after this long (one installed meanwhile is found)."""
_LOCK = threading.Lock()
REACH_TIMEOUT_S = 3.0


class ModelNotFound(RunError):
    """The model is neither a local folder, nor in the cache, nor downloadable now."""


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached(model_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here means "not in the cache"
        return None


def resolve_model(model_id: str, what: str, env_var: str, flag: str) -> str:
    """A local folder or cached snapshot for ``model_id``, or the id itself when the hub can be reached (the
    loader then downloads it). Raises ModelNotFound with the command that fixes it."""
    import time

    with _LOCK:
        known, at = _RESOLVED.get(model_id, (None, 0.0))
    if isinstance(known, BaseException) and time.monotonic() - at < FAILURE_TTL_S:
        raise known
    if isinstance(known, str):
        return known
    local = Path(model_id).expanduser()
    if local.exists():
        result: str | BaseException = str(local)
    elif model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").split("/", 1)[-1]:
        result = ModelNotFound(f"the {what} folder {model_id} does not exist; set {env_var} or {flag} to a folder "
                               "that holds the checkpoint")  # fmt: skip
    elif (cached := _cached(model_id)) is not None:
        result = cached
    elif not _offline() and _hub_reachable():
        result = model_id
    else:
        why = "offline mode is on (HF_HUB_OFFLINE)" if _offline() else "the Hugging Face hub cannot be reached"
        result = ModelNotFound(
            f"the {what} '{model_id}' is not on this machine and {why}: download it once with "
            f"`hf download {model_id}`, or point {flag} / {env_var} at a local folder"
        )
    with _LOCK:
        _RESOLVED[model_id] = (result, time.monotonic())
    if isinstance(result, BaseException):
        raise result
    return result


def forget() -> None:
    """Forget what was resolved (tests)."""
    with _LOCK:
        _RESOLVED.clear()
