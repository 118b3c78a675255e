"""Optional cross-check with abc2midi (Debian ``abcmidi``): a fast reference reader.

abc2midi prints its findings on stdout as ``Error in line-char L-C : ...`` / ``Warning in line-char L-C : ...``
and always exits 0, so the verdict is read from the text. Our pure-Python checker stands on its own; this
is used for agreement reports and benchmarks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(Error|Warning) in line-char (\d+)-(\d+) : (.*)$")
_BAR = re.compile(r"Bar (\d+) has ([\d/.]+) time units while the time signature has ([\d/.]+)")


@dataclass(frozen=True)
class Abc2MidiFinding:
    kind: str  # "error" | "warning"
    line: int
    column: int
    message: str

    @property
    def is_bar_length(self) -> bool:
        return _BAR.search(self.message) is not None


def available() -> bool:
    return shutil.which("abc2midi") is not None


def run_abc2midi(abc: str, timeout_s: float = 10.0) -> list[Abc2MidiFinding]:
    """abc2midi's findings on ``abc`` (its MIDI goes to a temp dir and is discarded)."""
    exe = shutil.which("abc2midi")
    if exe is None:
        raise FileNotFoundError("abc2midi is not installed (Debian package 'abcmidi')")
    with tempfile.TemporaryDirectory(prefix="i2m-abc2midi-") as d:
        src = Path(d) / "t.abc"
        src.write_text(abc, encoding="utf-8")
        proc = subprocess.run(
            [exe, str(src), "-o", str(Path(d) / "t.mid")], capture_output=True, text=True, timeout=timeout_s, cwd=d
        )
    out = []
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append(Abc2MidiFinding(m.group(1).lower(), int(m.group(2)), int(m.group(3)), m.group(4).strip()))
    return out
