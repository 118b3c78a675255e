"""Benchmark: wall time of `i2m abc check` on one small tune next to `i2m --help` (goal: <= 3x); the README's
offline demo (default settings: the embedding model is absent) next to the same with `--top-k 0` (goal: <= 1.3x),
and a missing default model's failure next to `python -c "import transformers"` (goal: <= 1.5x).

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
    root = Path(__file__).resolve().parents[1]
    demo = [i2m, "compose", str(root / "examples/sunset_lighthouse.png"), "--replay"]
    demo += [str(root / "examples/replay_sunset.jsonl")]
    with tempfile.TemporaryDirectory() as home:
        env = {"I2M_HOME": home, "HF_HUB_OFFLINE": "1", "HF_HOME": str(Path(home) / "hf")}
        plain = wall_env([*demo, "--top-k", "0"], env, 5)
        default = wall_env(demo, env, 5)
        missing = wall_env([i2m, "compose", str(root / "examples/sunset_lighthouse.png")], env, 3)
    imports = wall([sys.executable, "-c", "import transformers"], 3)
    print(
        f"offline demo: default {default:.2f} s, --top-k 0 {plain:.2f} s, ratio {default / plain:.2f} (goal <= 1.3); "
        f"missing default VLM fails in {missing:.2f} s vs import transformers {imports:.2f} s, ratio "
        f"{missing / imports:.2f} (goal <= 1.5)"
    )


def wall_env(cmd: list[str], env: dict[str, str], runs: int) -> float:
    import os

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False, env={**os.environ, **env})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
