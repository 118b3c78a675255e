"""One error base for everything the user should read as one line: the message says what, where, what to do.

``exit_code`` is what the CLI exits with: 2 for refused input (a bad image, option, file or setting),
1 for a run that could not start or finish (a model, the knowledge base, a server).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


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


def redact(text: str, secrets: Iterable[str] = (), headers: bool = True) -> str:
    """``text`` without the given secret values and (``headers``) the values of ``Authorization`` /
    ``api-key`` style headers or fields (a server that echoes the request back must not put the key into a
    message)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    if not headers:
        return text
    return _SECRET_HEADER.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}[redacted]", text)
