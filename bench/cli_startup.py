"""Benchmark: wall time of `i2m abc check` on one small tune next to `i2m --help` (goal: <= 3x).

Light commands import only what they use (no LangGraph, torch, numpy or PIL for checking ABC).
Run: .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUNE = "X:1\nT:Small\nM:4/4\nL:1/8\nK:G\nG2B2 d2B2|c2A2 F2D2|G2B2 d2g2|f4 d4|]\n"


def wall(cmd: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    i2m = str(Path(sys.executable).with_name("i2m"))
    with tempfile.TemporaryDirectory() as d:
        tune = Path(d) / "small.abc"
        tune.write_text(TUNE)
        help_s = wall([i2m, "--help"])
        check_s = wall([i2m, "abc", "check", str(tune)])
    print(
        f"i2m --help: {help_s * 1000:.0f} ms; i2m abc check (one small tune): {check_s * 1000:.0f} ms; "
        f"ratio {check_s / help_s:.2f} (goal <= 3)"
    )


if __name__ == "__main__":
    main()
