"""The run database: migrations, literal id prefixes, no stored secret, a damaged file said in one line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from image2music.graph.config import load_settings
from image2music.rundb import MIGRATIONS, connect_db, get_run, register_run
from image2music.tools.errors import InputError, RunError


def _settings(tmp_path: Path, **kw: object) -> object:
    return load_settings(home=str(tmp_path / "home"), vlm_backend="replay", top_k=0, **kw)


def test_an_older_database_is_migrated_and_loses_its_stored_keys(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    s.home.mkdir(parents=True)  # type: ignore[attr-defined]
    old = sqlite3.connect(s.db_path)  # type: ignore[attr-defined]
    for migration in MIGRATIONS[:4]:  # a database of the version before redaction
        migration(old)
    old.execute("PRAGMA user_version = 4")
    old.execute(
        "INSERT INTO i2m_runs VALUES ('20260101-000000-aaaaaa', '/r', 'i.png', 1.0, 'ok', ?, '{}', NULL)",
        (json.dumps({"vlm_api_key": "sk-OLD-KEY", "top_k": 1}),),
    )
    old.commit()
    old.close()
    conn = connect_db(s)  # type: ignore[arg-type]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    info = get_run(conn, "20260101-000000-aaaaaa")
    assert info.settings == {"top_k": 1}
    # before: the key's bytes stayed in the file's free space after the update (no secure delete, no checkpoint)
    for f in Path(s.home).glob("runs.sqlite*"):  # type: ignore[attr-defined]
        assert b"sk-OLD-KEY" not in f.read_bytes(), f.name


def test_ids_by_literal_prefix(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    conn = connect_db(s)  # type: ignore[arg-type]
    for rid in ("20260101-000000-aaaaaa", "20260101-000000-bbbbbb", "20260202-000000-cccccc"):
        register_run(conn, rid, tmp_path / rid, "i.png", s, {})  # type: ignore[arg-type]
    assert get_run(conn, "20260202").run_id == "20260202-000000-cccccc"
    with pytest.raises(InputError, match="matches 2 runs"):
        get_run(conn, "20260101")
    with pytest.raises(InputError, match="at least 4 of its first characters"):
        get_run(conn, "202")
    with pytest.raises(InputError, match="no run '2026%"):  # a prefix is literal: no SQL wildcard
        get_run(conn, "2026%")


def test_what_a_run_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = _settings(tmp_path, vlm_api_key="sk-NEVER", vlm_base_url="http://user:pass@h:8000/v1")
    conn = connect_db(s)  # type: ignore[arg-type]
    register_run(conn, "20260303-000000-dddddd", tmp_path / "r", "i.png", s, {"compose": "my.md"})  # type: ignore[arg-type]
    info = get_run(conn, "20260303-000000-dddddd")
    assert info.status == "running" and info.prompts == {"compose": str(tmp_path / "my.md")}
    assert "vlm_api_key" not in info.settings and "pass" not in info.settings["vlm_base_url"]


def test_a_damaged_database_is_one_line_with_what_to_do(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    s.home.mkdir(parents=True)  # type: ignore[attr-defined]
    Path(s.db_path).write_bytes(b"this is not a database" * 100)  # type: ignore[attr-defined]
    with pytest.raises(RunError, match="is damaged .*move that file away"):
        connect_db(s)  # type: ignore[arg-type]
