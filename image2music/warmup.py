"""A head start for a run's later stages while its first model call is out."""

from __future__ import annotations

import threading
from collections.abc import Callable

from image2music.graph.config import Settings
from image2music.tools.vlm.backends import backend

LATER_IMPORTS = (
    "image2music.report",
    "image2music.tools.music.excerpt",
    "image2music.tools.music.midi2abc",
    "lameenc",
    "soundfile",
)
"""Modules a run imports when it gets to them (outputs, report, map): a process's first runs import them
while their first model call is out instead of after it, when every run of a batch's first wave waits."""


_WARMED: set[str] = set()


_WARM_LOCK = threading.Lock()


def warm_up(settings: Settings) -> None:
    """Start what a run will need later while its first model call is out: a MusicXML worker, if the run
    writes MusicXML (music21's import, about a second), and, once per process in a background thread, the
    modules of the later stages and, for a served model's map, where the embedding model is. Failures are
    ignored here: the stage that needs the thing says what is wrong."""
    if settings.writes("musicxml"):
        from image2music.tools.music.workers import WorkerError, pool

        try:
            pool().prestart(1)
        except WorkerError:
            pass
    import functools
    import importlib

    jobs: dict[str, Callable[[], object]] = {m: functools.partial(importlib.import_module, m) for m in LATER_IMPORTS}
    kind = backend(settings.vlm_backend)
    if settings.attention_maps and not kind.attention and not kind.recorded:  # CLIP's occlusion map stands in
        from image2music.tools.embedder import model_location

        # cached: the map's loader asks again
        jobs[f"embedder {settings.embed_model}"] = functools.partial(model_location, settings.embed_model)
    with _WARM_LOCK:
        todo = [job for key, job in jobs.items() if key not in _WARMED]
        _WARMED.update(jobs)
    if todo:
        threading.Thread(target=_warm, args=(todo,), name="i2m-warm-up", daemon=True).start()


def _warm(jobs: list[Callable[[], object]]) -> None:
    for job in jobs:
        try:
            job()
        except Exception:  # noqa: BLE001, S112 - only a head start; the stage itself reports failures
            continue
