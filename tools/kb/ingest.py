"""Knowledge-base building: the starter base from music21's bundled ABC corpus.

The ABC and captions are precomputed once (``prepare_starter_data``) and shipped as a data file in the
package, so a first build only embeds and stores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from image2music.tools.kb.captions import caption_for, tune_metadata
from image2music.tools.kb.store import Entry, KnowledgeBase
from image2music.tools.music.abcparse import read_tune
from image2music.tools.music.metrics import entry_metrics

STARTER_DATA = Path(__file__).resolve().parents[1] / "data" / "starter.jsonl.gz"


def stable_id(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:20]


def prepare_starter_data(path: Path = STARTER_DATA, limit: int | None = None) -> dict[str, int]:
    """Check every corpus tune, caption the valid ones, write the gzip JSONL data file. Returns counts."""
    from image2music.tools.music.corpus import iter_corpus

    kept = skipped = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for ct in iter_corpus():
            tune = read_tune(ct.abc)
            if not tune.ok:
                skipped += 1
                continue
            rec = {
                "id": stable_id(ct.source),
                "source": f"music21:{ct.source}",
                "abc": ct.abc,
                "caption": caption_for(tune, ct.collection),
                "metadata": {**tune_metadata(tune, ct.collection), **entry_metrics(tune)},
            }
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            kept += 1
            if limit and kept >= limit:
                break
    return {"kept": kept, "skipped": skipped}


def iter_starter(path: Path = STARTER_DATA) -> Iterator[Entry]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            yield Entry(id=r["id"], caption=r["caption"], abc=r["abc"], source=r["source"], metadata=r["metadata"])


def progress_bar(label: str, enabled: bool = True) -> Any:
    """A progress bar with count, elapsed time and ETA (on stderr; off in tests)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
        console=Console(stderr=True),
    )


def build_starter(
    kb: KnowledgeBase,
    *,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    batch: int = 64,
) -> dict[str, int]:
    """Embed the shipped captions with the base's embedding model and store them; entries already present
    are skipped (resumable)."""
    from image2music.tools.embedder import get_embedder

    entries = list(iter_starter())
    if limit:
        entries = entries[:limit]
    embedder = get_embedder(kb.embed_model, device)
    added = 0
    with progress_bar("starter base", enabled=progress) as bar:
        task = bar.add_task("build", total=len(entries))
        for i in range(0, len(entries), batch):
            chunk = entries[i : i + batch]
            have = kb.existing_ids([e.id for e in chunk])
            todo = [e for e in chunk if e.id not in have]
            if todo:
                vecs = embedder.embed_texts([e.caption for e in todo])
                added += kb.add(todo, vecs)
            bar.advance(task, len(chunk))
    return {"added": added, "total": kb.count(), "truncated_captions": embedder.truncated}


# --- MidiCaps ----------------------------------------------------------------------------------------


def _midicaps_meta(rec: dict[str, Any]) -> dict[str, Any]:
    def join(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(str(x) for x in v[:6])
        return "" if v is None else str(v)

    return {
        "key": join(rec.get("key")),
        "meter": join(rec.get("time_signature")),
        "tempo": float(rec["tempo"]) if isinstance(rec.get("tempo"), (int, float)) else 0.0,
        "genre": join(rec.get("genre")),
        "mood": join(rec.get("mood")),
        "instruments": join(rec.get("instrument_summary")),
        "collection": "midicaps",
    }


def _convert_one(args: tuple[str, str, str, str]) -> tuple[str, str | None, str, dict[str, Any]]:
    """(id, abc or None, route or reason, metrics of the music) — runs in a worker process."""
    from image2music.tools.music.midi2abc import MidiConversionError, midi_to_abc

    entry_id, path, title, converter = args
    p = Path(path)
    if not p.is_file():
        return entry_id, None, "MIDI file missing", {}
    try:
        abc, route = midi_to_abc(p, title=title, prefer_exe=converter != "python")
    except MidiConversionError as e:
        return entry_id, None, str(e)[:200], {}
    tune = read_tune(abc)
    return entry_id, abc, route, entry_metrics(tune) if tune.ok else {}


def iter_midicaps(root: Path) -> Iterator[dict[str, Any]]:
    """Records of ``root/train.json`` (JSON Lines; a JSON array is accepted too)."""
    meta = root / "train.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: DIR must hold MidiCaps' train.json and the MIDI files")
    text = meta.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        yield from json.loads(text)
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta}, line {n}: not JSON ({e.msg})") from e


def ingest_midicaps(
    kb: KnowledgeBase,
    root: Path,
    *,
    device: str = "auto",
    limit: int | None = None,
    jobs: int = 1,
    batch: int = 256,
    converter: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Convert, caption-embed and store MidiCaps entries; resumable (present ids are skipped), no duplicates.

    Returns counts: ``seen``, ``added``, ``present`` (already in the base), ``skipped`` and ``reasons``.
    """
    import time
    from collections import Counter
    from concurrent.futures import ProcessPoolExecutor

    from image2music.tools.embedder import get_embedder

    records = []
    for rec in iter_midicaps(root):
        if "location" not in rec or "caption" not in rec:
            continue
        records.append(rec)
        if limit and len(records) >= limit:
            break
    embedder = get_embedder(kb.embed_model, device)
    counts: dict[str, Any] = {"seen": len(records), "added": 0, "present": 0, "skipped": 0}
    reasons: Counter[str] = Counter()
    t_convert = t_embed = t_store = 0.0
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        with progress_bar("MidiCaps ingest", enabled=progress) as bar:
            task = bar.add_task("ingest", total=len(records))
            for i in range(0, len(records), batch):
                chunk = records[i : i + batch]
                ids = [stable_id("midicaps:" + r["location"]) for r in chunk]
                have = kb.existing_ids(ids)
                counts["present"] += len(have)
                todo = [(eid, r) for eid, r in zip(ids, chunk, strict=True) if eid not in have]
                t0 = time.perf_counter()
                args = [(eid, str(root / r["location"]), Path(r["location"]).stem, converter) for eid, r in todo]
                results = list(pool.map(_convert_one, args, chunksize=8)) if pool else [_convert_one(a) for a in args]
                t_convert += time.perf_counter() - t0
                entries = []
                by_id = dict(todo)
                for eid, abc, how, measured in results:
                    if abc is None:
                        counts["skipped"] += 1
                        reasons[how.split(":")[0] if ":" in how else how] += 1
                        continue
                    r = by_id[eid]
                    entries.append(
                        Entry(
                            id=eid,
                            caption=str(r["caption"]),
                            abc=abc,
                            source=f"midicaps:{r['location']}",
                            metadata={**_midicaps_meta(r), **measured, "converter": how},
                        )
                    )
                if entries:
                    t0 = time.perf_counter()
                    vecs = embedder.embed_texts([e.caption for e in entries])
                    t_embed += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    counts["added"] += kb.add(entries, vecs)
                    t_store += time.perf_counter() - t0
                bar.advance(task, len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    counts["reasons"] = dict(reasons)
    counts["seconds"] = {"convert": round(t_convert, 3), "embed": round(t_embed, 3), "store": round(t_store, 3)}
    counts["truncated_captions"] = embedder.truncated
    counts["total"] = kb.count()
    return counts


def migrate_metrics(kb: KnowledgeBase, *, progress: bool = True) -> dict[str, int]:
    """Fill in the metrics of entries stored by earlier versions (targets need them); idempotent."""
    counts = {"entries": 0, "updated": 0, "unreadable": 0}
    with progress_bar("kb migrate", enabled=progress) as bar:
        task = bar.add_task("migrate", total=kb.count())
        for ids, metas in kb.iter_metadata():
            todo_ids, todo_metas = [], []
            for eid, meta in zip(ids, metas, strict=True):
                counts["entries"] += 1
                if "pitch_range" in meta:
                    continue
                tune = read_tune(str(meta.get("abc", "")))
                if not tune.ok:
                    counts["unreadable"] += 1
                    continue
                todo_ids.append(eid)
                todo_metas.append({**meta, **entry_metrics(tune)})
            kb.update_metadata(todo_ids, todo_metas)
            counts["updated"] += len(todo_ids)
            bar.advance(task, len(ids))
    return counts
