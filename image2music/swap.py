"""Replacing an earlier run in a folder the user named (``-o``), so that a crash at any point leaves either
the earlier run or the new one at that path.

The new run is written beside the folder (``.NAME.new-XXXXXX``); a journal beside it
(``.NAME.i2m-swap.json``) says which folders take part. When the new run has its record, the swap is three
idempotent steps: the earlier folder goes aside (``.NAME.old-XXXXXX``), the new one takes its name, the
earlier one is removed. Every step can be repeated or finished from the journal by the next command that
touches the folder or the run (:func:`recover`); a new run that never finished is rolled back from (the
earlier run returns to the name) and is swapped in when a resume finishes it.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
from pathlib import Path
from typing import TypedDict

from image2music.rundb import set_run_dir, set_status
from image2music.tools.errors import InputError
from image2music.tools.files import atomic_write_json

_STAGED = re.compile(r"^\.(?P<name>.+)\.new-[0-9a-f]{6}$")
_TOKEN = re.compile(r"[0-9a-f]{6}")


class Journal(TypedDict):
    final: str
    new: str
    old: str
    run_id: str
    earlier: str | None
    """The run id of the run being replaced (its database row then says ``replaced``)."""


def journal_path(final_dir: Path) -> Path:
    return final_dir.with_name(f".{final_dir.name}.i2m-swap.json")


def final_dir_of(run_dir: Path) -> Path | None:
    """The folder a staged run (``.NAME.new-XXXXXX``) will replace, or None for any other run folder."""
    m = _STAGED.match(run_dir.name)
    return run_dir.with_name(m["name"]) if m and journal_path(run_dir.with_name(m["name"])).is_file() else None


def begin(final_dir: Path, run_id: str) -> Path:
    """Record the intent to replace the run in ``final_dir``; returns the folder the new run is written to."""
    token = secrets.token_hex(3)
    earlier = None
    try:
        earlier = json.loads((final_dir / "run.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        pass
    journal: Journal = {
        "final": final_dir.name,
        "new": f".{final_dir.name}.new-{token}",
        "old": f".{final_dir.name}.old-{token}",
        "run_id": run_id,
        "earlier": earlier if isinstance(earlier, str) else None,
    }
    atomic_write_json(journal_path(final_dir), journal)
    return final_dir.with_name(journal["new"])


def abandon(final_dir: Path) -> None:
    """The new run did not start: its folder and the journal go; the earlier run was never touched."""
    journal = _read(final_dir)
    if journal is not None:
        shutil.rmtree(final_dir.with_name(journal["new"]), ignore_errors=True)
        journal_path(final_dir).unlink(missing_ok=True)


class BadJournal(InputError):
    """A swap journal beside a folder that this program did not write (or that was changed): it is data from a
    folder others may write to, so nothing it names is renamed or removed; the user is told."""


def _read(final_dir: Path) -> Journal | None:
    """The journal beside ``final_dir``, None when there is none. Its names are checked before any is used: a
    journal names only siblings of ``final_dir`` of the exact shapes :func:`begin` writes (``.NAME.new-XXXXXX``
    and ``.NAME.old-XXXXXX`` with one token), none of them a link; anything else raises :class:`BadJournal`
    and nothing is touched (a journal planted in a shared folder must not make a run delete a folder)."""
    path = journal_path(final_dir)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink():
            raise ValueError("it is a link")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _bad(path, str(e)) from None
    problem = _journal_problem(data, final_dir)
    if problem:
        raise _bad(path, problem)
    return data  # type: ignore[no-any-return]


def _journal_problem(data: object, final_dir: Path) -> str | None:
    """Why ``data`` is not a journal :func:`begin` could have written for ``final_dir`` (None: it is)."""
    if not isinstance(data, dict) or not {"final", "new", "old", "run_id"} <= set(data):
        return "it is not a swap journal"
    if not all(isinstance(data[k], str) for k in ("final", "new", "old", "run_id")):
        return "its fields are not names"
    if data.get("earlier") is not None and not isinstance(data["earlier"], str):
        return "its earlier run id is not a name"
    if data["final"] != final_dir.name:
        return f"it names the folder {data['final']!r}, not {final_dir.name!r}"
    token = data["new"].removeprefix(f".{final_dir.name}.new-")
    if data["new"] == token or not _TOKEN.fullmatch(token) or data["old"] != f".{final_dir.name}.old-{token}":
        return "the folders it names are not this folder's staging folders"
    for name in (data["new"], data["old"]):
        if final_dir.with_name(name).is_symlink():
            return f"{name} is a link"
    return None


def _bad(path: Path, why: str) -> BadJournal:
    return BadJournal(
        f"{path} is not a swap journal of i2m ({why}); nothing was changed. Remove it if no i2m run of yours "
        "is replacing that folder, or choose another -o folder."
    )


def finish(final_dir: Path, conn: sqlite3.Connection) -> Path:
    """Put the finished new run in place (each step idempotent); returns where the new run now is."""
    journal = _read(final_dir)
    if journal is None:
        return final_dir
    new, old = final_dir.with_name(journal["new"]), final_dir.with_name(journal["old"])
    if new.exists() and final_dir.exists() and not old.exists():
        final_dir.rename(old)
    if new.exists() and not final_dir.exists():
        new.rename(final_dir)
    set_run_dir(conn, journal["run_id"], final_dir)
    if journal.get("earlier") and journal["earlier"] != journal["run_id"]:
        set_status(conn, journal["earlier"], "replaced")  # type: ignore[arg-type]
    shutil.rmtree(old, ignore_errors=True)
    journal_path(final_dir).unlink(missing_ok=True)
    return final_dir


def _ended(run_dir: Path) -> bool:
    """The run in ``run_dir`` has ended (ok or failed); a cancelled one is still to be resumed."""
    try:
        status = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return status in ("ok", "failed")


def recover(final_dir: Path, conn: sqlite3.Connection, *, busy: bool = False) -> None:
    """Finish or roll back a swap that a crash interrupted. A new run with its record is swapped in; one
    without (it stopped mid-run) leaves the earlier run at the name and waits for a resume to finish it.
    ``busy``: the new run is executing now (leave it alone)."""
    journal = _read(final_dir)
    if journal is None:
        return
    new, old = final_dir.with_name(journal["new"]), final_dir.with_name(journal["old"])
    if _ended(new) or (not new.exists() and final_dir.exists()):
        finish(final_dir, conn)
        return
    if not final_dir.exists() and old.exists():
        old.rename(final_dir)  # the new run has no record yet: the earlier one returns to the name
    if not new.exists() and not busy:
        journal_path(final_dir).unlink(missing_ok=True)  # nothing left to swap in
