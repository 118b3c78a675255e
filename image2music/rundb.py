"""The run database under I2M_HOME: LangGraph checkpoints plus an index of runs, with numbered migrations."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image2music.graph.config import Settings
from image2music.tools.errors import InputError, RunError

SECRET_SETTINGS = ("vlm_api_key",)
"""Settings never written to the run database or run.json (a resume reads them from the environment)."""

MIN_PREFIX = 4
"""A run id may be given as a literal prefix of at least this many characters."""


def _add_column(conn: sqlite3.Connection, column: str) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(i2m_runs)")}
    if column not in have:  # databases of early versions created some columns without a version number
        conn.execute(f"ALTER TABLE i2m_runs ADD COLUMN {column} TEXT")


MIGRATIONS: tuple[Any, ...] = (
    # 1: the index of runs
    lambda c: c.execute(
        "CREATE TABLE IF NOT EXISTS i2m_runs (run_id TEXT PRIMARY KEY, run_dir TEXT, image TEXT, created REAL, "
        "status TEXT)"
    ),
    # 2-4: what a resume or replay needs
    lambda c: _add_column(c, "settings"),
    lambda c: _add_column(c, "prompts"),
    lambda c: _add_column(c, "parent"),
    # 5: no stored secrets (databases written before redaction)
    lambda c: _redact_all(c),
)
"""Migration n is ``MIGRATIONS[n - 1]``; ``PRAGMA user_version`` is the last one applied."""
REDACTED_IN = 5
"""The migration that removed stored keys."""


@dataclass
class RunInfo:
    """A run as the run database knows it (enough to resume or replay it)."""

    run_id: str
    run_dir: Path
    image: str
    created: float
    status: str
    settings: dict[str, Any]
    prompts: dict[str, str]
    parent: str | None = None


def check_home(settings: Settings) -> None:
    """I2M_HOME must be a folder (or not exist yet): InputError otherwise."""
    if settings.home.exists() and not settings.home.is_dir():
        raise InputError(f"I2M_HOME={settings.home} is a file, not a folder: point I2M_HOME at a folder")


def connect_db(settings: Settings) -> sqlite3.Connection:
    """The run database (SQLite in WAL mode, shared safely by concurrent runs), migrated to this version."""
    check_home(settings)
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(settings.db_path), check_same_thread=False, timeout=60)
        conn.execute("PRAGMA busy_timeout=60000")
        # WAL with synchronous=NORMAL: a commit is not flushed to the disk one by one (only WAL checkpoints are),
        # so parallel runs do not queue behind each other's fsync; a crash of i2m loses nothing, a power cut
        # at most the last checkpoints (the run then resumes from an earlier node), and the file stays sound
        conn.execute("PRAGMA synchronous=NORMAL")
        _wal(conn)
        _migrate(conn)
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError):  # cannot open or write: a permission or disk problem
            raise InputError(
                f"cannot use the run database {settings.db_path}: {e}; point I2M_HOME at a writable folder"
            ) from e
        raise RunError(
            f"the run database {settings.db_path} is damaged ({e}); nothing else is lost: move that file away "
            "(keep it) and a new one is made on the next run (earlier runs then no longer list)"
        ) from e
    except OSError as e:
        raise InputError(
            f"cannot use I2M_HOME={settings.home} for the run database: {getattr(e, 'strerror', None) or e}; "
            "point I2M_HOME at a writable folder"
        ) from e
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for n in range(version, len(MIGRATIONS)):
            MIGRATIONS[n](conn)
        if version < len(MIGRATIONS):
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    if version < REDACTED_IN:  # the redacted pages into the database file now: no old key left in it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _wal(conn: sqlite3.Connection, tries: int = 100) -> None:
    """Switch to WAL. Changing the journal mode does not wait on the busy handler: when several runs open a
    new database at once, one gets "database is locked"; try again, bounded."""
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(0.05)


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-able data, without secrets (the API key; credentials in a server URL)."""
    from image2music.tools.errors import redact

    data = settings.model_dump(mode="json", exclude=set(SECRET_SETTINGS))
    for key in ("vlm_base_url", "chroma_url"):
        if data.get(key):
            data[key] = redact(data[key], headers=False)
    return data


def _redact_all(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA secure_delete = ON")  # the old rows' bytes are overwritten, not left in free space
    for run_id, raw in conn.execute("SELECT run_id, settings FROM i2m_runs").fetchall():
        try:
            data = json.loads(raw or "{}")
        except json.JSONDecodeError:
            continue
        if any(k in data for k in SECRET_SETTINGS):
            clean = {k: v for k, v in data.items() if k not in SECRET_SETTINGS}
            conn.execute("UPDATE i2m_runs SET settings = ? WHERE run_id = ?", (json.dumps(clean), run_id))


def register_run(
    conn: sqlite3.Connection,
    run_id: str,
    run_dir: Path,
    image: str,
    settings: Settings,
    prompts: dict[str, str],
    parent: str | None = None,
) -> None:
    """Add a run (status ``running``) to the index; prompt files are stored as absolute paths."""
    prompts = {node: os.path.normpath(Path(path).expanduser().absolute()) for node, path in prompts.items()}
    conn.execute(
        "INSERT OR REPLACE INTO i2m_runs (run_id, run_dir, image, created, status, settings, prompts, parent) "
        "VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
        (run_id, str(run_dir), image, time.time(), json.dumps(public_settings(settings)), json.dumps(prompts), parent),
    )
    conn.commit()


def set_run_dir(conn: sqlite3.Connection, run_id: str, run_dir: Path) -> None:
    """Where a run's files are now (after an earlier run in the same folder was replaced)."""
    conn.execute("UPDATE i2m_runs SET run_dir = ? WHERE run_id = ?", (str(run_dir), run_id))
    conn.commit()


def set_status(conn: sqlite3.Connection, run_id: str, status: str) -> None:
    conn.execute("UPDATE i2m_runs SET status = ? WHERE run_id = ?", (status, run_id))
    conn.commit()


_COLUMNS = "run_id, run_dir, image, created, status, settings, prompts, parent"


def _info(row: tuple[Any, ...]) -> RunInfo:
    return RunInfo(
        run_id=row[0],
        run_dir=Path(row[1]),
        image=row[2],
        created=row[3],
        status=row[4],
        settings=json.loads(row[5] or "{}"),
        prompts=json.loads(row[6] or "{}"),
        parent=row[7],
    )


def get_run(conn: sqlite3.Connection, run_id: str) -> RunInfo:
    """The run with this id, or with this literal prefix of ≥ 4 characters when it is unique."""
    run_id = run_id.strip()
    row = conn.execute(f"SELECT {_COLUMNS} FROM i2m_runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is not None:
        return _info(row)
    if len(run_id) < MIN_PREFIX:
        raise InputError(
            f"no run '{run_id}' in {conn_path(conn)}; give the full id or at least {MIN_PREFIX} of its first "
            "characters (see `i2m runs list`)"
        )
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM i2m_runs WHERE substr(run_id, 1, ?) = ? ORDER BY created", (len(run_id), run_id)
    ).fetchall()
    if len(rows) == 1:
        return _info(rows[0])
    if not rows:
        raise InputError(f"no run '{run_id}' in {conn_path(conn)}; see `i2m runs list`")
    raise InputError(f"'{run_id}' matches {len(rows)} runs; give more of the id")


def list_runs(conn: sqlite3.Connection, limit: int = 20) -> list[RunInfo]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM i2m_runs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
    return [_info(r) for r in rows]


def conn_path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "the run database"


def checkpointer(conn: sqlite3.Connection, secrets: list[str] | tuple[str, ...] = ()) -> Any:
    """LangGraph's SQLite checkpointer on the same database (thread id = run id). With ``secrets``, what it
    stores (checkpoints and the writes of a failed node: LangGraph keeps the exception's text) is scrubbed."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    saver = SqliteSaver(conn, serde=ScrubbingSerde(secrets)) if secrets else SqliteSaver(conn)
    saver.setup()
    return saver


class ScrubbingSerde:
    """LangGraph's serializer with the secrets masked in what it writes: each secret, as written and
    base64-encoded, is overwritten with as many ``*`` (the same length, so the encoded structure stays valid).
    Reading is LangGraph's own."""

    def __init__(self, secrets: list[str] | tuple[str, ...]) -> None:
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        from image2music.tools.errors import secret_forms

        self.inner = JsonPlusSerializer()
        forms = {f for s in secrets if s and len(s) >= 4 for f in secret_forms(s)}
        self.masks = [(f.encode(), b"*" * len(f.encode())) for f in sorted(forms, key=len, reverse=True)]

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        kind, data = self.inner.dumps_typed(obj)
        for form, mask in self.masks:
            data = data.replace(form, mask)
        return kind, data

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)
