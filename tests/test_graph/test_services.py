"""Cached services: a missing embedder is remembered for a while, not for the whole process."""

from __future__ import annotations

from typing import Any

import pytest
from image2music.graph import services
from image2music.graph.config import load_settings


def test_a_missing_embedder_is_looked_for_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: one failure was cached for the process, so a long chat never found a model installed meanwhile
    from image2music.tools import models

    calls: list[str] = []

    def missing(model: str, *args: Any) -> Any:
        calls.append(model)
        raise models.ModelNotFound("not installed")

    class Base:
        def exists(self) -> bool:
            return True

        def other_models(self) -> list[str]:
            return []

    monkeypatch.setattr(models, "resolve_model", missing)  # looked for without importing torch
    monkeypatch.setattr(services, "get_kb", lambda settings: Base())
    s = load_settings(embed_model="tiny/missing-embedder", top_k=1)
    notes: list[str] = []
    assert services.get_retriever(s, notify=notes.append) is None
    assert services.get_retriever(s, notify=notes.append) is None
    assert len(calls) == 1  # remembered: a batch does not look for it per image
    monkeypatch.setattr(services, "NO_EMBEDDER_RETRY_S", 0.0)
    assert services.get_retriever(s, notify=notes.append) is None
    assert len(calls) == 2 and all("composing without examples" in n for n in notes)


def test_a_servers_retries_go_to_the_runs_notify(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    # before: they were printed straight to stderr, beside the run's own message channel
    from image2music.graph.context import RunContext
    from image2music.tools.vlm import VLMResult

    class Served:
        def generate(self, **kwargs: Any) -> VLMResult:
            return VLMResult(text="ok", meta={"retries": ["HTTP 429, retry 1 of 3 in 1 s"]})

    monkeypatch.setattr(services, "get_vlm", lambda settings: Served())
    monkeypatch.setattr(services, "get_image", lambda path: None)
    s = load_settings(vlm_backend="replay", top_k=0)
    ctx = RunContext(settings=s, run_id="r-notify", image_path=tmp_path / "i.png", run_dir=tmp_path / "run")
    heard: list[str] = []
    services.set_notify("r-notify", heard.append)
    services.ask(ctx, "compose", "a prompt", 1)
    assert heard == ["compose: HTTP 429, retry 1 of 3 in 1 s"] and "429" not in capsys.readouterr().err
