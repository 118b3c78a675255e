"""Chroma on disk with our own CLIP embeddings; retrieval by image and by text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image2music.tools.embedder import ClipEmbedder, EmbedderError, get_embedder
from image2music.tools.kb.retrieval import format_examples, retrieve
from image2music.tools.kb.store import Entry, KnowledgeBase, StoreError


def _entries(n: int) -> list[Entry]:
    return [
        Entry(
            id=f"e{i}",
            caption=f"a {w} tune number {i}",
            abc=f"X:{i}\nT:t{i}\nK:C\nC{i % 7 + 1}|\n",
            source=f"test:{i}",
            metadata={"key": "C", "tempo": 90.0, "tags": ["a", "b"], "none": None},
        )
        for i, w in enumerate(["happy", "sad", "calm", "stormy", "bright", "dark"][:n])
    ]


def test_embedder_shapes_and_truncation(tiny_clip: Path) -> None:
    emb = ClipEmbedder(str(tiny_clip))
    v = emb.embed_texts(["short", "word " * 200])
    assert v.shape == (2, emb.dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert emb.truncated == 1 and emb.max_positions == 77
    im = emb.embed_images([Image.new("RGB", (40, 30), (10, 200, 30))])
    assert im.shape == (1, emb.dim)


def test_missing_embedder_is_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="embedding model 'no-such-org.*hf download.*I2M_EMBED_MODEL"):
        ClipEmbedder("no-such-org/no-such-clip-model")


def test_add_is_idempotent_and_query_returns_scores(tiny_clip: Path, tmp_path: Path) -> None:
    emb = get_embedder(str(tiny_clip))
    kb = KnowledgeBase(tmp_path / "kb", str(tiny_clip))
    assert not kb.exists() and kb.count() == 0
    entries = _entries(6)
    vecs = emb.embed_texts([e.caption for e in entries])
    assert kb.add(entries, vecs) == 6
    assert kb.add(entries, vecs) == 0  # stable ids: nothing twice
    assert kb.count() == 6 and kb.info()["dim"] == emb.dim
    hits = kb.query(vecs[2], 3)
    assert hits[0].id == "e2" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].abc.startswith("X:2") and hits[0].metadata["tags"] == "a, b"
    assert "none" not in hits[0].metadata
    assert len(kb.query(vecs[0], 50)) == 6  # more asked than stored: all of them


def test_other_embedder_is_a_clear_error(tiny_clip: Path, tmp_path: Path) -> None:
    kb = KnowledgeBase(tmp_path / "kb", str(tiny_clip))
    kb.add(_entries(2), np.eye(2, 16, dtype=np.float32))
    other = KnowledgeBase(tmp_path / "kb", "some/other-clip")
    with pytest.raises(StoreError, match="built with .*tiny-clip"):
        other.query(np.ones(16, dtype=np.float32), 1)
    with pytest.raises(StoreError, match="holds 16-d vectors"):
        kb.query(np.ones(8, dtype=np.float32), 1)


def test_retrieve_merges_image_and_text_hits(tiny_clip: Path, tmp_path: Path) -> None:
    emb = get_embedder(str(tiny_clip))
    kb = KnowledgeBase(tmp_path / "kb", str(tiny_clip))
    entries = _entries(6)
    kb.add(entries, emb.embed_texts([e.caption for e in entries]))
    img = Image.new("RGB", (32, 32), (200, 100, 0))
    refs = retrieve(kb, emb, img, entries[1].caption, k=2)
    ids = [r["id"] for r in refs]
    assert len(ids) == len(set(ids)) and 2 <= len(ids) <= 4
    assert "e1" in ids and next(r for r in refs if r["id"] == "e1")["via"] in ("text", "both")
    assert all(r["via"] in ("image", "text", "both") for r in refs)
    assert refs == sorted(refs, key=lambda r: -r["score"])
    assert retrieve(kb, emb, img, "x", k=0) == []
    assert retrieve(kb, emb, img, entries[1].caption, k=2, threshold=1.01) == []


def test_empty_base_returns_nothing(tiny_clip: Path, tmp_path: Path) -> None:
    emb = get_embedder(str(tiny_clip))
    kb = KnowledgeBase(tmp_path / "kb", str(tiny_clip))
    assert retrieve(kb, emb, None, "calm", k=3) == []


def test_format_examples_shows_a_bar_aligned_excerpt() -> None:
    from image2music.tools.music.check import check_abc

    abc = "X:1\nT:long\nM:4/4\nL:1/8\nQ:1/4=90\nK:D\nV:1\n" + "DEFG ABcd|\n" * 200 + "V:2\n" + "D,8|\n" * 200
    text = format_examples([{"caption": "a long tune", "abc": abc}], max_chars=300)
    assert "an excerpt: the first" in text and "of 200 bars" in text
    shown = text.split("```abc\n", 1)[1].rsplit("```", 1)[0]
    assert len(shown) <= 300 and "Q:1/4=90" in shown and "V:2" in shown and "D,8|" in shown
    r = check_abc(shown, extract=False)
    assert r.ok and not [w for w in r.warnings if w.code in ("truncated", "voice-length", "bar-length")]


def test_server_calls_reuse_their_threads_and_a_stuck_one_holds_only_itself() -> None:
    """Before: one thread was started per Chroma server call. Now an idle caller thread is reused; a call stuck
    on a server that never answers keeps its (daemon) thread, its caller gets the deadline's error, and the next
    call gets another thread."""
    import threading

    from image2music.tools.kb.store import StoreError, _Callers

    callers = _Callers()
    assert [callers.call(lambda i=i: i * 2, "the server", 5.0) for i in range(50)] == [i * 2 for i in range(50)]
    assert callers.started == 1
    with pytest.raises(ValueError, match="refused"):
        callers.call(lambda: (_ for _ in ()).throw(ValueError("refused")), "the server", 5.0)
    never = threading.Event()
    with pytest.raises(StoreError, match="the server did not answer within 0.2 s"):
        callers.call(never.wait, "the server", 0.2)
    assert callers.call(lambda: "ok", "the server", 5.0) == "ok" and callers.started == 2
    stuck = [t for t in threading.enumerate() if t.name.startswith("i2m-chroma-") and t.is_alive()]
    assert stuck and all(t.daemon for t in stuck)
    never.set()
