"""One error base for everything the user should read as one line: the message says what, where, what to do.

``exit_code`` is what the CLI exits with: 2 for refused input (a bad image, option, file or setting),
1 for a run that could not start or finish (a model, the knowledge base, a server).
"""

from __future__ import annotations


class I2MError(Exception):
    """A failure with a clear one-line message (never shown as a traceback)."""

    exit_code = 1


class InputError(I2MError, ValueError):
    """Refused input: a bad image, option, file, path or setting (exit code 2)."""

    exit_code = 2


class RunError(I2MError, RuntimeError):
    """The run could not start or go on: a model, the knowledge base or a server is unusable (exit code 1)."""

    exit_code = 1
