"""One error base for everything the user should read as one line: the message says what, where, what to do.

``exit_code`` is what the CLI exits with: 2 for refused input (a bad image, option, file or setting),
1 for a run that could not start or finish (a model, the knowledge base, a server).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable


class I2MError(Exception):
    """A failure with a clear one-line message (never shown as a traceback)."""

    exit_code = 1


class InputError(I2MError, ValueError):
    """Refused input: a bad image, option, file, path or setting (exit code 2)."""

    exit_code = 2


class RunError(I2MError, RuntimeError):
    """The run could not start or go on: a model, the knowledge base or a server is unusable (exit code 1)."""

    exit_code = 1


_SECRET_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|api[-_]key)(\"?\s*[:=]\s*\"?)"
    r"((?:bearer|basic|token)\s+)?[^\s\"',;}]+"
)


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@\"']+(?::[^/\s@\"']*)?@")
MIN_PARTIAL = 4
"""The shortest piece of a secret cut at a text's edge that is still taken out."""


def secret_forms(secret: str) -> list[str]:
    """The ways a secret shows up in what a server echoes: as written, and base64-encoded at each of the three
    byte alignments (standard and URL-safe), each without the characters that depend on its neighbours."""
    import base64

    forms = [secret]
    raw = secret.encode()
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        core = enc[(shift * 4 + 2) // 3 + (1 if shift else 0) : len(enc) - 3]
        if len(core) >= 8:
            forms += [core, core.replace("+", "-").replace("/", "_")]
    return list(dict.fromkeys(forms))


def redact(text: str, secrets: Iterable[str] = (), headers: bool = True, edges: bool = True) -> str:
    """``text`` without the given secret values (as written or base64-encoded, and the start of one that the
    text's end cuts), without credentials in URLs (``user:password@``) and (``headers``) without the values
    of ``Authorization`` / ``api-key`` style headers or fields (a server that echoes the request back must not
    put the key into a message). ``edges``: the text is whole (not a piece of a stream that goes on)."""
    for secret in secrets:
        if not secret or len(secret) < MIN_PARTIAL:
            continue
        for form in secret_forms(secret):
            text = text.replace(form, "[redacted]")
        if not edges:
            continue
        # a message cut in the middle of the key (an error body's first 300 characters) keeps no piece of it
        for k in range(len(secret) - 1, MIN_PARTIAL - 1, -1):
            if text.endswith(secret[:k]):
                text = text[:-k] + "[redacted]"
                break
    text = _URL_CREDENTIALS.sub(lambda m: f"{m[1]}[redacted]@", text)
    if not headers:
        return text
    return _SECRET_HEADER.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}[redacted]", text)


def url_secrets(url: str | None) -> list[str]:
    """The password (and user) a URL carries (``http://user:password@host``): secrets like an API key."""
    import urllib.parse

    if not url:
        return []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    return [v for v in (parts.password, parts.username) if v and len(v) >= MIN_PARTIAL]


class ScrubbedStream:
    """Hands the pieces of a streamed text to ``sink`` with the secrets taken out, a secret split over pieces
    too: text that could be the start of a secret is held back until the next piece shows it is not (or
    :meth:`close` ends the stream). The pieces handed over add up to ``redact(whole text)``."""

    def __init__(self, sink: Callable[[str], None], secrets: Iterable[str]) -> None:
        self.sink = sink
        self.secrets = [s for s in secrets if s and len(s) >= 4]
        self.pending = ""

    def __call__(self, piece: str) -> None:
        if not self.secrets:
            if piece:
                self.sink(piece)
            return
        text = redact(self.pending + piece, self.secrets, headers=False, edges=False)
        held = max((k for s in self.secrets for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self.pending = text[len(text) - held :] if held else ""
        if len(text) > held:
            self.sink(text[: len(text) - held])

    def close(self) -> None:
        if self.pending:
            self.sink(redact(self.pending, self.secrets, headers=False))
            self.pending = ""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM: ``timeout``, ``docker stop``, systemd). Like Ctrl-C, it ends
    the run ``cancelled`` with its record, resumable."""


def stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, ``docker stop``, systemd) stops a run as Ctrl-C does: cancelled, with its record,
    resumable. A second SIGTERM while the record is written is ignored (SIGKILL still ends the process).
    Installed by the programs (``i2m``, a batch's child processes), never by a library caller."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)


def disk_fault(error: OSError) -> str:
    """An OSError of the file system in words: which file, why, and (disk full) how much space is left."""
    import errno
    import shutil
    from pathlib import Path

    where = error.filename or ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = Path(where).parent if where else Path.cwd()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = "no space left"
        return f"the disk holding {folder} is full ({free}) while writing {where or 'a file'}"
    return f"cannot write {where or 'a file'}: {error.strerror or error}"
