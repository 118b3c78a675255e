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
    heard: list[str] = []
    ctx = RunContext(settings=s, run_id="r-notify", image_path=tmp_path / "i.png", run_dir=tmp_path / "run").listen(
        heard.append
    )
    services.ask(ctx, "compose", "a prompt", 1)
    assert heard == ["compose: HTTP 429, retry 1 of 3 in 1 s"] and "429" not in capsys.readouterr().err


def _starter_of(size: int) -> Any:
    from image2music.tools.kb import ingest

    real = ingest.build_starter
    return real, lambda kb, **kw: real(kb, **{**kw, "limit": size, "progress": False})


def test_a_stopped_first_build_is_finished_not_used_as_whole(tiny_clip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first compose's starter build is stopped half-way: the base is known as unfinished (its marker is
    removed only at the end), the next compose finishes it, and a base left unfinished while auto-build is off
    is said, not used silently."""
    from image2music.tools.kb import ingest
    from image2music.tools.kb.store import KnowledgeBase

    real, small = _starter_of(40)
    s = load_settings(embed_model=str(tiny_clip), top_k=1, kb_auto_build=True)
    kb = KnowledgeBase(s.kb_dir, s.embed_model)

    class Stopped(BaseException):
        pass

    added = {"n": 0}
    real_add = KnowledgeBase.add

    def add_then_stop(self: Any, entries: Any, vecs: Any) -> Any:
        if added["n"] == 20:
            raise Stopped  # the process is stopped half-way: end_build never runs
        added["n"] += len(entries)
        return real_add(self, entries, vecs)

    monkeypatch.setattr(ingest, "build_starter", lambda kb, **kw: real(kb, **{**kw, "limit": 40, "batch": 10}))
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Stopped):
        mp.setattr(KnowledgeBase, "add", add_then_stop)
        services.get_retriever(s, notify=lambda m: None)
    assert kb.build_state() == "partial:starter" and kb.count() == 20
    notes: list[str] = []
    monkeypatch.setattr(services, "_RETRIEVERS", {})
    off = s.with_overrides(kb_auto_build=False)
    assert services.get_retriever(off, notify=notes.append) is not None
    assert any("unfinished" in n and "i2m kb build-starter" in n for n in notes), notes
    monkeypatch.setattr(services, "_RETRIEVERS", {})
    monkeypatch.setattr(ingest, "build_starter", small)
    notes.clear()
    assert services.get_retriever(s, notify=notes.append) is not None
    assert kb.build_state() == "complete" and kb.count() == 40
    assert any("left unfinished (20 entries): finishing it" in n for n in notes), notes


def test_parallel_first_composes_build_the_base_once(tiny_clip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from image2music.tools.kb import ingest

    _real, small = _starter_of(30)
    builds: list[int] = []

    def counted(kb: Any, **kw: Any) -> Any:
        builds.append(1)
        return small(kb, **kw)

    monkeypatch.setattr(ingest, "build_starter", counted)
    s = load_settings(embed_model=str(tiny_clip), top_k=1, kb_auto_build=True)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(services.get_retriever(s, notify=lambda m: None)))
               for _ in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(r is not None for r in got) and len(builds) == 1
