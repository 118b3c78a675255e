"""Small file helpers: atomic writes and safe names."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".i2m-tmp-"
"""How every temporary file or folder the project makes beside its outputs begins: a process killed while it
writes leaves only names that :func:`clean_temporaries` recognises."""


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def clean_temporaries(folder: Path) -> list[str]:
    """Remove what a killed process left in ``folder`` (and its ``versions/``): the entries named
    ``TEMP_PREFIX...``, files and folders, links removed as links (never followed). Returns their names."""
    import shutil

    removed = []
    for where in (Path(folder), Path(folder) / "versions"):
        try:
            entries = list(where.iterdir()) if where.is_dir() and not where.is_symlink() else []
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry.name)
            except OSError:
                continue
    return removed


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def plain_path(path: str | os.PathLike[str]) -> Path:
    """``path`` absolute and normalised (``~`` expanded, ``a/../b`` as ``b``; links are not resolved)."""
    return Path(os.path.normpath(Path(os.path.expanduser(os.fspath(path))).absolute()))


def safe_name(text: str, default: str = "untitled", max_len: int = 60) -> str:
    """A file-name-safe slug of ``text`` (no path separators, no leading dots)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return s[:max_len].strip("-._") or default


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
