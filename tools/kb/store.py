"""The knowledge base: captioned ABC music in Chroma, one collection per embedding model.

We always pass our own embeddings (Chroma's default embedding function would download a model). The
local store is thread-safe but not process-safe, so there is one client per process and a file lock
around writes. ``I2M_CHROMA_URL`` switches to a shared Chroma server.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from image2music.tools.errors import RunError

COLLECTION_PREFIX = "i2m-"
BUILD_HINT = "i2m kb build-starter"


class StoreError(RunError):
    """The knowledge base cannot be used as asked; the message says how to fix it."""


@dataclass
class Entry:
    """One piece of music in the knowledge base."""

    id: str
    caption: str
    abc: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    id: str
    caption: str
    abc: str
    score: float
    metadata: dict[str, Any]


def collection_name(embed_model: str) -> str:
    digest = hashlib.sha1(embed_model.encode("utf-8")).hexdigest()[:16]
    return f"{COLLECTION_PREFIX}{digest}"


_CLIENTS: dict[str, Any] = {}
_CLIENT_LOCK = threading.Lock()


CHROMA_TIMEOUT_S = 30.0
"""Every call to a Chroma server must answer within this time (the client's default is to wait forever)."""


class _Callers:
    """The threads that make Chroma server calls for callers who wait at most a deadline: an idle one is reused,
    one is started only when every one is busy (a call in flight, or stuck on a server that never answers: it
    stays stuck, the caller does not). Daemon threads: a stuck call never holds the process at its exit (a
    ThreadPoolExecutor's threads would: the interpreter joins them)."""

    def __init__(self) -> None:
        import queue

        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._free = 0
        self.started = 0

    def call(self, fn: Any, what: str, timeout_s: float) -> Any:
        box: dict[str, Any] = {}
        done = threading.Event()
        with self._lock:
            if self._free:
                self._free -= 1  # an idle thread will take it
            else:
                self.started += 1
                threading.Thread(target=self._serve, name=f"i2m-chroma-{self.started}", daemon=True).start()
        self._jobs.put((fn, box, done))
        if not done.wait(timeout_s):
            raise StoreError(f"{what} did not answer within {timeout_s:g} s; check I2M_CHROMA_URL and the server")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _serve(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e
            finally:
                with self._lock:
                    self._free += 1
                done.set()


_CALLERS = _Callers()


def _with_deadline(fn: Any, what: str, timeout_s: float = CHROMA_TIMEOUT_S) -> Any:
    """``fn()`` (a call to a Chroma server), given up after ``timeout_s`` (a server that accepts and never
    answers)."""
    return _CALLERS.call(fn, what, timeout_s)


class _Deadlined:
    """A Chroma server client, or one of its collections, whose every method call must answer within
    ``timeout_s`` (chromadb's HTTP client waits forever and has no public setting for it). Collections it
    returns are wrapped the same way; attributes are read as they are (they make no request)."""

    def __init__(self, target: Any, what: str, timeout_s: float) -> None:
        self._target, self._what, self._timeout_s = target, what, timeout_s

    def _wrap(self, value: Any) -> Any:
        from chromadb.api.models.Collection import Collection

        if isinstance(value, Collection):
            return _Deadlined(value, self._what, self._timeout_s)
        if isinstance(value, list) and value and all(isinstance(v, Collection) for v in value):
            return [_Deadlined(v, self._what, self._timeout_s) for v in value]
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(_with_deadline(lambda: attr(*args, **kwargs), self._what, self._timeout_s))

        return call


def _client(kb_dir: Path | None, url: str | None, timeout_s: float = CHROMA_TIMEOUT_S) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    key = f"{url} {timeout_s}" if url else str(kb_dir)
    with _CLIENT_LOCK:
        if key not in _CLIENTS:
            settings = ChromaSettings(anonymized_telemetry=False)
            try:
                if url:
                    from urllib.parse import urlparse

                    u = urlparse(url)
                    what = f"the Chroma server at {url}"
                    http = _with_deadline(
                        lambda: chromadb.HttpClient(
                            host=u.hostname or "localhost",
                            port=u.port or 8000,
                            ssl=u.scheme == "https",
                            settings=settings,
                        ),
                        what,
                        timeout_s,
                    )
                    _CLIENTS[key] = _Deadlined(http, what, timeout_s)
                else:
                    assert kb_dir is not None
                    kb_dir.mkdir(parents=True, exist_ok=True)
                    # Chroma's first-time set-up of a folder races between processes ("table collections
                    # already exists"): one process at a time opens it
                    with FileLock(str(kb_dir / ".open.lock"), timeout=600):
                        _CLIENTS[key] = chromadb.PersistentClient(path=str(kb_dir), settings=settings)
            except Exception as e:  # chromadb raises many types for a bad dir or an unreachable server
                where = f"the Chroma server at {url}" if url else f"the knowledge base at {kb_dir}"
                fix = (
                    "check I2M_CHROMA_URL and that the server runs"
                    if url
                    else (
                        "`i2m kb stats` says what it holds; only if it is damaged, move that folder away (keep it) "
                        f"and rebuild it with `{BUILD_HINT}`"
                    )
                )
                raise StoreError(f"cannot open {where}: {type(e).__name__}: {str(e)[:200]}; {fix}") from e
        return _CLIENTS[key]


def forget_clients() -> None:
    """Drop cached clients (tests that delete the data dir)."""
    with _CLIENT_LOCK:
        _CLIENTS.clear()


class KnowledgeBase:
    """The collection of one embedding model in a local dir or on a Chroma server."""

    def __init__(
        self, kb_dir: Path | None, embed_model: str, url: str | None = None, timeout_s: float = CHROMA_TIMEOUT_S
    ) -> None:
        self.timeout_s = timeout_s
        """Every call to a Chroma server answers within this (a server that accepts and never answers)."""
        self.kb_dir = Path(kb_dir) if kb_dir is not None else None
        self.embed_model = embed_model
        self.url = url
        self.name = collection_name(embed_model)
        self._collection: Any = None
        self._lock = FileLock(str(self.kb_dir / ".write.lock")) if self.kb_dir is not None and not url else None

    @property
    def client(self) -> Any:
        return _client(self.kb_dir, self.url, self.timeout_s)

    def _collections(self) -> list[Any]:
        client = self.client  # raises StoreError with its own message when it cannot connect
        try:
            return [client.get_collection(c.name if hasattr(c, "name") else c) for c in client.list_collections()]
        except Exception as e:  # chromadb raises many types; a corrupt store fails here first
            if self.url:
                raise StoreError(f"the Chroma server at {self.url} failed: {type(e).__name__}: {str(e)[:200]}") from e
            raise StoreError(
                f"the knowledge base at {self.kb_dir} cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                f"it looks damaged: move that folder away (keep it) and rebuild it with `{BUILD_HINT}`"
            ) from e

    def _get(self) -> Any | None:
        if self._collection is not None:
            return self._collection
        for c in self._collections():
            if c.name == self.name:
                self._collection = c  # a handle is cheap to keep; looking it up costs SQLite round trips
                return c
        return None

    def other_models(self) -> list[str]:
        """Embedding models of the other i2m collections in this store."""
        out = []
        for c in self._collections():
            if c.name.startswith(COLLECTION_PREFIX) and c.name != self.name:
                out.append(str((c.metadata or {}).get("embed_model", c.name)))
        return out

    def exists(self) -> bool:
        c = self._get()
        return c is not None and c.count() > 0

    # -- builds: one builder across processes, completion marked last ----------------------------------
    def _marker(self) -> Path | None:
        """Beside the base while a build of it runs (and after one that was stopped): which build it was."""
        return self.kb_dir / f".{self.name}.building" if self.kb_dir is not None else None

    def build_state(self) -> str:
        """``empty`` (no entries), ``complete``, or ``partial:starter`` / ``partial:midicaps``: a build that was
        stopped before its end (its entries are there, the rest is not)."""
        marker = self._marker()
        if marker is not None and marker.is_file():
            what = marker.read_text(encoding="utf-8", errors="replace").strip()
            return f"partial:{what if what in ('starter', 'midicaps') else 'starter'}"
        return "complete" if self.exists() else "empty"

    def begin_build(self, what: str) -> None:
        marker = self._marker()
        if marker is not None:
            from image2music.tools.files import atomic_write_text

            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(marker, what)

    def end_build(self) -> None:
        """The build reached its end: the base is whole (written last)."""
        marker = self._marker()
        if marker is not None:
            marker.unlink(missing_ok=True)

    def build_lock(self, timeout_s: float = -1) -> Any:
        """A lock across processes for building this base: the first builds, the others wait and reuse it."""
        import contextlib

        if self.kb_dir is None:
            return contextlib.nullcontext()
        self.kb_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.kb_dir / f".{self.name}.build.lock"), timeout=timeout_s)

    def count(self) -> int:
        c = self._get()
        return 0 if c is None else int(c.count())

    def info(self) -> dict[str, Any]:
        c = self._get()
        meta = dict(c.metadata or {}) if c is not None else {}
        return {
            "count": 0 if c is None else int(c.count()),
            "embed_model": self.embed_model,
            "dim": meta.get("dim"),
            "collection": self.name,
            "location": self.url or str(self.kb_dir),
            "other_models": self.other_models(),
        }

    def _collection_for_write(self, dim: int) -> Any:
        c = self._get()
        if c is None:
            c = self.client.get_or_create_collection(
                name=self.name,
                metadata={"embed_model": self.embed_model, "dim": dim, "hnsw:space": "cosine"},
                embedding_function=None,
            )
            self._collection = c
        self._check_dim(c, dim)
        return c

    def _check_dim(self, c: Any, dim: int) -> None:
        stored = (c.metadata or {}).get("dim")
        if stored is not None and int(stored) != dim:
            raise StoreError(
                f"the knowledge base for '{self.embed_model}' holds {stored}-d vectors but the embedder gives "
                f"{dim}-d ones; rebuild it with `{BUILD_HINT}`"
            )

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        c = self._get()
        if c is None or not ids:
            return set()
        got = c.get(ids=list(ids), include=[])
        return set(got["ids"])

    def add(self, entries: Sequence[Entry], vectors: np.ndarray) -> int:
        """Add entries not already present (stable ids make re-ingest idempotent); returns how many."""
        if len(entries) == 0:
            return 0
        if len(entries) != len(vectors):
            raise ValueError("entries and vectors differ in length")
        lock = self._lock
        if lock is not None:
            lock.acquire(timeout=600)
        try:
            c = self._collection_for_write(int(vectors.shape[1]))
            have = self.existing_ids([e.id for e in entries])
            keep = [(e, v) for e, v in zip(entries, vectors, strict=True) if e.id not in have]
            if not keep:
                return 0
            c.add(
                ids=[e.id for e, _ in keep],
                embeddings=[v.astype(np.float32).tolist() for _, v in keep],
                documents=[e.caption for e, _ in keep],
                metadatas=[_clean_meta({**e.metadata, "abc": e.abc, "source": e.source}) for e, _ in keep],
            )
            return len(keep)
        finally:
            if lock is not None:
                lock.release()

    def iter_metadata(self, page: int = 500) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """Every entry's (ids, metadatas), a page at a time."""
        c = self._get()
        if c is None:
            return
        offset = 0
        while True:
            got = c.get(include=["metadatas"], limit=page, offset=offset)
            if not got["ids"]:
                return
            yield list(got["ids"]), [dict(m or {}) for m in got["metadatas"]]
            offset += len(got["ids"])

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        """Replace the metadata of existing entries (under the write lock)."""
        c = self._get()
        if c is None or not ids:
            return
        lock = self._lock
        if lock is not None:
            lock.acquire(timeout=600)
        try:
            c.update(ids=list(ids), metadatas=[_clean_meta(m) for m in metadatas])
        finally:
            if lock is not None:
                lock.release()

    def query(self, vector: np.ndarray, k: int) -> list[Hit]:
        """The ``k`` nearest entries by cosine similarity (score = similarity, higher is closer)."""
        c = self._get()
        if c is None or k <= 0:
            if c is None and self.other_models():
                raise StoreError(
                    f"the knowledge base was built with {', '.join(self.other_models())}, not with "
                    f"'{self.embed_model}': set I2M_EMBED_MODEL to that model, or build a base for this one "
                    f"with `{BUILD_HINT}`"
                )
            return []
        self._check_dim(c, int(vector.shape[-1]))
        # no count() here: at 168k entries it costs several times the query itself; Chroma returns fewer
        # hits when k exceeds the entries
        res = c.query(
            query_embeddings=[vector.astype(np.float32).tolist()],
            n_results=k,
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for i, doc, meta, dist in zip(
            res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True
        ):
            meta = dict(meta or {})
            abc = str(meta.pop("abc", ""))
            hits.append(Hit(id=i, caption=doc or "", abc=abc, score=round(1.0 - float(dist), 6), metadata=meta))
        return hits


def _clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Chroma metadata values must be str, int, float or bool."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if v is None:
            continue
        if isinstance(v, (str, int, float, bool)):
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = ", ".join(str(x) for x in v)
        else:
            out[k] = str(v)
    return out
