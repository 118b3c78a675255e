"""Knowledge-base building: the starter base from music21's bundled ABC corpus.

The ABC and captions are precomputed once (``prepare_starter_data``) and shipped as a data file in the
package, so a first build only embeds and stores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
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
    kb.begin_build("starter")  # until the end: a stopped build is known as one, and finished by the next
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
    kb.end_build()
    return {"added": added, "total": kb.count(), "truncated_captions": embedder.truncated}


# --- MidiCaps ----------------------------------------------------------------------------------------

MAX_LINE_BYTES = 1 << 20
"""A train.json line longer than this (1 MiB) is skipped unread: memory stays bounded whatever a line holds."""
MAX_ARRAY_BYTES = 64 << 20
"""A train.json written as one JSON array is read whole, so only up to this size (JSON Lines has no limit)."""
MAX_CAPTION_CHARS = 4000
MAX_LOCATION_CHARS = 1024
SKIPPED_FILE = "midicaps-skipped.jsonl"
"""Beside the base: records whose MIDI could not be used, not converted again unless asked."""


@dataclass(frozen=True)
class Skip:
    """A record that was not stored: its line in train.json, its location as written, and why."""

    line: int
    location: str
    code: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "location": self.location, "code": self.code, "reason": self.reason}


class _BadRecord(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def iter_midicaps(root: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, record or None, why it could not be read) for each line of ``root/train.json`` (JSON
    Lines, read a line at a time; a JSON array up to ``MAX_ARRAY_BYTES`` is accepted too). A missing file or
    an unreadable array is an error at once, before any record is read."""
    meta = root / "train.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: DIR must hold MidiCaps' train.json and the MIDI files")
    with meta.open("rb") as fh:
        is_array = fh.read(64).lstrip().startswith(b"[")
    if not is_array:
        return _json_lines(meta)
    size = meta.stat().st_size
    if size > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{meta} is one JSON array of {size:,} bytes; above {MAX_ARRAY_BYTES:,} write it as JSON Lines"
        )
    try:
        items = json.loads(meta.read_bytes().decode("utf-8", errors="replace"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{meta}: not JSON ({e})") from e
    return ((n, rec, None) for n, rec in enumerate(items if isinstance(items, list) else [items], start=1))


def _json_lines(meta: Path) -> Iterator[tuple[int, Any, str | None]]:
    with meta.open("rb") as fh:
        n = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            n += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, unread
                    raw = fh.readline(MAX_LINE_BYTES)
                yield n, None, f"the line is longer than {MAX_LINE_BYTES:,} bytes"
                continue
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                rec = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as e:
                yield n, None, f"not JSON ({getattr(e, 'msg', type(e).__name__)})"
                continue
            yield n, rec, None


def _text_field(rec: dict[str, Any], name: str, limit: int, required: bool) -> str:
    v = rec.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        raise _BadRecord("bad-record", f"'{name}' is {type(v).__name__}, not text")
    if required and not v.strip():
        raise _BadRecord("bad-record", f"'{name}' is empty")
    if len(v) > limit:
        raise _BadRecord("bad-record", f"'{name}' has {len(v):,} characters, more than {limit:,}")
    return v


def resolve_location(root_real: Path, location: str) -> tuple[str, Path]:
    """(location relative to the dataset folder, the file) when ``location`` names a regular file inside the
    folder after symlinks are followed; raises _BadRecord otherwise. Nothing is opened here."""
    if "\x00" in location:
        raise _BadRecord("outside-folder", "the location holds a NUL character")
    if Path(location).is_absolute():
        raise _BadRecord("outside-folder", "the location is an absolute path")
    try:
        target = (root_real / location).resolve()
    except (OSError, RuntimeError) as e:  # symlink loops
        raise _BadRecord("not-a-file", f"the location cannot be resolved ({e})") from e
    if not target.is_relative_to(root_real):
        raise _BadRecord("outside-folder", "the location leads outside the dataset folder")
    try:
        mode = target.stat().st_mode
    except OSError:
        raise _BadRecord("missing", "no such file") from None
    import stat

    if not stat.S_ISREG(mode):
        raise _BadRecord("not-a-file", "not a regular file")
    return target.relative_to(root_real).as_posix(), target


def _meta_text(v: Any, limit: int = 200) -> str:
    if isinstance(v, list):
        v = ", ".join(str(x) for x in v[:6] if isinstance(x, (str, int, float)))
    elif not isinstance(v, (str, int, float)) or isinstance(v, bool):
        return ""
    return str(v)[:limit]


def midicaps_metadata(rec: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """MidiCaps' own fields (``midicaps_*``, genre, mood, instruments) beside what was measured.

    Rule for the values targets read: MidiCaps' tempo (estimated from the audio of the whole piece) replaces
    the measured one when they differ by more than a factor of 1.5 (a half- or double-time reading of the
    file's tempo events); MidiCaps' mode replaces the measured one when MidiCaps names one. ``tempo_source`` and
    ``mode_source`` say which was kept.
    """
    tempo = rec.get("tempo")
    out: dict[str, Any] = {
        "midicaps_key": _meta_text(rec.get("key")),
        "midicaps_meter": _meta_text(rec.get("time_signature")),
        "midicaps_tempo": float(tempo) if isinstance(tempo, (int, float)) and not isinstance(tempo, bool) else 0.0,
        "genre": _meta_text(rec.get("genre")),
        "mood": _meta_text(rec.get("mood")),
        "instruments": _meta_text(rec.get("instrument_summary")),
        "collection": "midicaps",
    }
    final = dict(measured)
    mt, qpm = out["midicaps_tempo"], measured.get("tempo_qpm")
    final["tempo_source"] = "measured"
    if 20 <= mt <= 400 and isinstance(qpm, (int, float)) and qpm > 0 and max(mt / qpm, qpm / mt) > 1.5:
        final["tempo_qpm"], final["tempo_source"] = mt, "midicaps"
    key = out["midicaps_key"].lower()
    final["mode_source"] = "measured"
    if "minor" in key or "major" in key:
        final["mode"], final["mode_source"] = ("minor" if "minor" in key else "major"), "midicaps"
    return {**out, **final}


def _convert_one(args: tuple[str, str, str]) -> tuple[str, str | None, str, dict[str, Any]]:
    """(id, abc or None, "code: reason" when skipped, metadata of the music) — runs in a worker process."""
    from image2music.tools.music.midi2abc import MidiConversionError, midi_to_abc

    entry_id, path, title = args
    try:
        conv = midi_to_abc(Path(path), title=title)
    except MidiConversionError as e:
        return entry_id, None, f"{e.code}: {e}", {}
    # the converter's own notes give the metrics: equal to reading the ABC back (tests/test_tools/test_midi2abc.py
    # checks both, and that the checker accepts every development file), at a third of the cost
    return entry_id, conv.abc, "", {**conv.metrics(), **conv.summary()}


def _load_skipped(path: Path | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if path is None or not path.is_file():
        return out
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                r = json.loads(line)
                out[str(r["id"])] = str(r["reason"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return out


def ingest_midicaps(
    kb: KnowledgeBase,
    root: Path,
    *,
    device: str = "auto",
    limit: int | None = None,
    jobs: int = 1,
    batch: int = 64,
    progress: bool = True,
    retry_skipped: bool = False,
    skipped_file: Path | None = None,
) -> dict[str, Any]:
    """Convert, caption-embed and store MidiCaps entries, streaming ``train.json``; resumable (present ids are
    skipped), no duplicates. Every record is validated and its location must be a regular file inside
    ``root`` after symlinks; a bad record is skipped with its line and reason, never the whole ingest.
    Records whose MIDI could not be used are remembered in ``skipped_file`` (default: beside the base) and not
    converted again unless ``retry_skipped``.

    Memory: at most ``batch`` records are held at once, each at most ``MAX_LINE_BYTES`` of JSON and the
    converted ABC of one file at most ``KB_LIMITS.max_chars``; plus one set of the locations seen (for
    duplicates: about 100 bytes each, ~17 MB for all of MidiCaps).

    Returns counts: ``seen``, ``added``, ``present`` (already in the base), ``skipped``, ``reasons`` (code ->
    count), ``skips`` (every skip: line, location, code, reason) and ``previously_skipped``.
    """
    import time
    from collections import Counter
    from concurrent.futures import ProcessPoolExecutor

    from image2music.tools.embedder import get_embedder

    root_real = Path(root).resolve()
    records = iter_midicaps(root_real)  # raises now, before any model is loaded, when train.json is missing
    if skipped_file is None and kb.kb_dir is not None:
        skipped_file = Path(kb.kb_dir) / SKIPPED_FILE
    remembered = {} if retry_skipped else _load_skipped(skipped_file)
    embedder = get_embedder(kb.embed_model, device)
    kb.begin_build("midicaps")
    counts: dict[str, Any] = {"seen": 0, "added": 0, "present": 0, "skipped": 0, "previously_skipped": 0}
    reasons: Counter[str] = Counter()
    skips: list[Skip] = []
    seen_locations: set[str] = set()
    t_convert = t_embed = t_store = 0.0
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None

    def skip(line: int, location: Any, code: str, reason: str) -> None:
        counts["skipped"] += 1
        reasons[code] += 1
        loc = location if isinstance(location, str) else repr(location)
        skips.append(Skip(line, loc[:200], code, reason[:300]))

    def flush(chunk: list[tuple[int, str, str, Path, dict[str, Any]]]) -> None:
        nonlocal t_convert, t_embed, t_store
        ids = [c[1] for c in chunk]
        have = kb.existing_ids(ids)
        counts["present"] += len(have)
        todo = [c for c in chunk if c[1] not in have]
        t0 = time.perf_counter()
        args = [(eid, str(path), path.stem) for _n, eid, _loc, path, _r in todo]
        results = list(pool.map(_convert_one, args, chunksize=4)) if pool else [_convert_one(a) for a in args]
        t_convert += time.perf_counter() - t0
        entries, new_skips = [], []
        for (line, eid, loc, _path, rec), (_eid, abc, why, measured) in zip(todo, results, strict=True):
            if abc is None:
                code, _, reason = why.partition(": ")
                skip(line, loc, code, reason)
                new_skips.append({"id": eid, "location": loc, "reason": why})
                continue
            caption = rec["caption"]
            meta = midicaps_metadata(rec, measured)
            entries.append(Entry(id=eid, caption=caption, abc=abc, source=f"midicaps:{loc}", metadata=meta))
        if new_skips and skipped_file is not None:
            skipped_file.parent.mkdir(parents=True, exist_ok=True)
            with skipped_file.open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in new_skips)
        if entries:
            t0 = time.perf_counter()
            vecs = embedder.embed_texts([e.caption for e in entries])
            t_embed += time.perf_counter() - t0
            t0 = time.perf_counter()
            counts["added"] += kb.add(entries, vecs)
            t_store += time.perf_counter() - t0

    try:
        with progress_bar("MidiCaps ingest", enabled=progress) as bar:
            task = bar.add_task("ingest", total=limit)
            chunk: list[tuple[int, str, str, Path, dict[str, Any]]] = []
            for line, rec, problem in records:
                if limit and counts["seen"] >= limit:
                    break
                counts["seen"] += 1
                bar.advance(task, 1)
                if problem is not None:
                    skip(line, "", "bad-record", problem)
                    continue
                try:
                    if not isinstance(rec, dict):
                        raise _BadRecord("bad-record", f"the record is {type(rec).__name__}, not an object")
                    location = _text_field(rec, "location", MAX_LOCATION_CHARS, True)
                    _text_field(rec, "caption", MAX_CAPTION_CHARS, True)
                    loc, path = resolve_location(root_real, location)
                    if loc in seen_locations:
                        raise _BadRecord("duplicate", "the same file as an earlier record")
                except _BadRecord as e:
                    skip(line, rec.get("location") if isinstance(rec, dict) else "", e.code, e.reason)
                    continue
                seen_locations.add(loc)
                eid = stable_id("midicaps:" + loc)
                if eid in remembered:
                    counts["previously_skipped"] += 1
                    continue
                chunk.append((line, eid, loc, path, rec))
                if len(chunk) >= batch:
                    flush(chunk)
                    chunk = []
            if chunk:
                flush(chunk)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    counts["reasons"] = dict(reasons)
    counts["skips"] = [s.to_dict() for s in skips]
    counts["seconds"] = {"convert": round(t_convert, 3), "embed": round(t_embed, 3), "store": round(t_store, 3)}
    counts["truncated_captions"] = embedder.truncated
    counts["total"] = kb.count()
    kb.end_build()
    return counts


def migrate_metrics(kb: KnowledgeBase, *, progress: bool = True) -> dict[str, int]:
    """Recompute every entry's metrics with the current reader (entries stored by earlier versions have none,
    or values measured on notes the reader then played wrongly, such as ties inside chords); idempotent.

    Returns ``entries``, ``updated`` (entries whose stored values changed) and ``unreadable``.
    """
    from image2music.tools.music.midi2abc import KB_LIMITS

    counts = {"entries": 0, "updated": 0, "unreadable": 0}
    with progress_bar("kb migrate", enabled=progress) as bar:
        task = bar.add_task("migrate", total=kb.count())
        for ids, metas in kb.iter_metadata():
            todo_ids, todo_metas = [], []
            for eid, meta in zip(ids, metas, strict=True):
                counts["entries"] += 1
                tune = read_tune(str(meta.get("abc", "")), KB_LIMITS)
                if not tune.ok:
                    counts["unreadable"] += 1
                    continue
                measured = entry_metrics(tune)
                if meta.get("tempo_source") == "midicaps":
                    measured.pop("tempo_qpm", None)  # MidiCaps' tempo was kept by rule; keep it
                if meta.get("mode_source") == "midicaps":
                    measured.pop("mode", None)
                new = {**meta, **measured}
                if any(meta.get(k) != v for k, v in new.items()):
                    todo_ids.append(eid)
                    todo_metas.append(new)
            kb.update_metadata(todo_ids, todo_metas)
            counts["updated"] += len(todo_ids)
            bar.advance(task, len(ids))
    return counts
