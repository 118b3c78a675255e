"""Benchmark: wall time of `i2m abc check` on one small tune next to `i2m --help` (goal: <= 3x); the README's
offline demo (default settings: the embedding model is absent) next to the same with `--top-k 0` (goal: <= 1.3x),
and a missing default model's failure next to `python -c "import transformers"` (goal: <= 1.5x); then the exit
latency of commands: the time from their last line of output to the end of the process (goal: < 1 s).

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


def exit_latency(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Seconds from the last byte the command writes (stdout or stderr) to its exit, and its exit status."""
    import os
    import selectors

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    last = time.perf_counter()
    open_pipes = 2
    while open_pipes:
        for key, _ in sel.select():
            data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            if data:
                last = time.perf_counter()
            else:
                sel.unregister(key.fileobj)
                open_pipes -= 1
    code = proc.wait()
    return time.perf_counter() - last, code


def latencies() -> None:
    root = Path(__file__).resolve().parents[1]
    i2m = str(Path(sys.executable).with_name("i2m"))
    with tempfile.TemporaryDirectory() as home:
        env = {"I2M_HOME": home, "HF_HUB_OFFLINE": "1", "HF_HOME": str(Path(home) / "hf")}
        demo = [i2m, "compose", str(root / "examples/sunset_lighthouse.png"), "--replay",
                str(root / "examples/replay_sunset.jsonl"), "--top-k", "0"]  # fmt: skip
        for name, cmd in (("compose (offline demo)", demo), ("runs list", [i2m, "runs", "list"]),
                          ("kb stats", [i2m, "kb", "stats"]), ("--help", [i2m, "--help"])):  # fmt: skip
            secs = [exit_latency(cmd, env)[0] for _ in range(3)]
            print(f"exit latency, {name}: median {statistics.median(secs):.2f} s, max {max(secs):.2f} s (goal < 1 s)")


if __name__ == "__main__":
    main()
    latencies()
