"""Knowledge-base building: starter data, MidiCaps ingest (resume, idempotent), captions."""

from __future__ import annotations

from pathlib import Path

import pytest
from image2music.graph.config import load_settings
from image2music.tools.kb.ingest import build_starter, caption_for, ingest_midicaps, iter_starter
from image2music.tools.kb.store import KnowledgeBase
from image2music.tools.music.abcparse import read_tune
from image2music.tools.music.midi2abc import MidiConversionError, abc_pitch, midi_to_abc, python_midi_to_abc
from midicaps_fixture import build_midicaps


def test_starter_data_is_checked_and_captioned() -> None:
    entries = list(iter_starter())
    assert len(entries) > 12_000
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    e = entries[100]
    assert read_tune(e.abc).ok and "It is in" in e.caption and e.metadata["key"]


def test_caption_from_the_music() -> None:
    tune = read_tune("X:1\nT:Sad Song\nO:Ireland\nM:3/4\nL:1/8\nQ:1/4=60\nK:Dm\nD2 F2 A2 | d6 |]\n")
    cap = caption_for(tune, "oneills1850")
    assert "D minor" in cap and "3/4" in cap and "slow tempo of about 60" in cap and "Ireland" in cap
    assert "Title: Sad Song." in cap


def test_build_starter_resumes(tiny_clip: Path) -> None:
    s = load_settings(embed_model=str(tiny_clip))
    first = build_starter(KnowledgeBase(s.kb_dir, s.embed_model), limit=20, progress=False)
    again = build_starter(KnowledgeBase(s.kb_dir, s.embed_model), limit=30, progress=False)
    assert (first["added"], again["added"], again["total"]) == (20, 10, 30)


@pytest.mark.parametrize("converter", ["python", "auto"])
def test_ingest_midicaps_resume_and_idempotent(tmp_path: Path, tiny_clip: Path, converter: str) -> None:
    root = build_midicaps(tmp_path / "midicaps", n=10, broken=1)
    s = load_settings(embed_model=str(tiny_clip))
    kb = KnowledgeBase(s.kb_dir, s.embed_model)
    part = ingest_midicaps(kb, root, limit=4, batch=2, converter=converter, progress=False)  # "interrupted" early
    assert part["added"] == 4 and part["skipped"] == 0
    full = ingest_midicaps(kb, root, batch=3, converter=converter, progress=False, jobs=2)
    assert full["present"] == 4 and full["added"] == 6 and full["skipped"] == 1
    assert list(full["reasons"]) and full["total"] == 10
    again = ingest_midicaps(kb, root, converter=converter, progress=False)
    assert again["added"] == 0 and again["present"] == 10 and again["total"] == 10
    kb = KnowledgeBase(s.kb_dir, s.embed_model)
    hit = kb.query(kb.client.get_collection(kb.name).get(limit=1, include=["embeddings"])["embeddings"][0], 1)[0]
    assert hit.metadata["collection"] == "midicaps" and read_tune(hit.abc).ok
    assert hit.metadata["instruments"] == "Piano"


def test_missing_train_json(tmp_path: Path, tiny_clip: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train.json"):
        ingest_midicaps(KnowledgeBase(tmp_path / "kb", str(tiny_clip)), tmp_path, progress=False)


def test_pure_python_midi_to_abc(tmp_path: Path) -> None:
    root = build_midicaps(tmp_path / "m", n=3, broken=1)
    mids = sorted(root.glob("lmd_full/*/*.mid"))
    good = [m for m in mids if "broken" not in m.name]
    abc = python_midi_to_abc(good[0], "t")
    assert read_tune(abc).ok and "V:1" in abc
    abc2, route = midi_to_abc(good[0], "t", prefer_exe=False)
    assert route == "python" and abc2 == abc
    with pytest.raises(MidiConversionError):
        midi_to_abc(next(m for m in mids if "broken" in m.name), prefer_exe=False)
    assert [abc_pitch(p) for p in (60, 61, 72, 48, 84)] == ["C", "^C", "c", "C,", "c'"]


def test_entries_carry_their_metrics_and_old_bases_migrate(tiny_clip: Path) -> None:
    from image2music.tools.kb.ingest import migrate_metrics

    s = load_settings(embed_model=str(tiny_clip))
    kb = KnowledgeBase(s.kb_dir, s.embed_model)
    build_starter(kb, limit=12, progress=False)
    (_ids, metas), *_ = list(kb.iter_metadata())
    assert all({"pitch_range", "scale_consistency", "tempo_qpm", "mode", "bars"} <= set(m) for m in metas)
    # a base written by an earlier version: no metrics in its metadata
    import numpy as np
    from image2music.tools.kb.ingest import iter_starter
    from image2music.tools.kb.store import Entry

    old = KnowledgeBase(s.home / "old-kb", s.embed_model)
    entries = [Entry(e.id, e.caption, e.abc, e.source, {"key": "C"}) for e in list(iter_starter())[:12]]
    old.add(entries, np.eye(12, 8, dtype=np.float32))
    kb = old
    assert migrate_metrics(kb, progress=False) == {"entries": 12, "updated": 12, "unreadable": 0}
    assert migrate_metrics(kb, progress=False)["updated"] == 0
    (_ids2, metas2), *_ = list(kb.iter_metadata())
    assert all("pitch_range" in m for m in metas2)
