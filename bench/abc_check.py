"""Benchmark: parse-check + MIDI of a 64-bar tune, ours vs music21 vs abc2midi, side by side.

Run: .venv/bin/python bench/abc_check.py  (goal: ours <= 50 ms)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from image2music.tools.music import abc2midi  # noqa: E402
from image2music.tools.music.check import check_abc  # noqa: E402
from image2music.tools.music.convert import midi_bytes  # noqa: E402

BARS = [
    "G2B2 d2B2",
    "c2A2 F2D2",
    "G2B2 d2g2",
    "f4 d4",
    "e2c2 A2F2",
    "G2D2 B,2D2",
    "(3GAB c2 d>e d2",
    "[GBd]8",
]
TUNE = (
    "X:1\nT:Sixty-four bars\nM:4/4\nL:1/8\nQ:1/4=96\nK:G\n"
    + "\n".join(" | ".join(BARS) + " |" for _ in range(8))
    + "]\n"
)


def timeit(fn, n: int) -> float:  # noqa: ANN001
    fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def ours() -> None:
    r = check_abc(TUNE)
    assert r.ok and r.tune is not None
    midi_bytes(r.tune)


def music21_plain() -> None:
    import music21

    s = music21.converter.parseData(TUNE, format="abc")
    with tempfile.TemporaryDirectory() as d:
        s.write("midi", fp=str(Path(d) / "t.mid"))


def abc2midi_run() -> None:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.abc"
        src.write_text(TUNE)
        subprocess.run(["abc2midi", str(src), "-o", str(Path(d) / "t.mid")], capture_output=True, check=True)


def main() -> None:
    assert TUNE.count("|") >= 64
    t_ours = timeit(ours, 50)
    print("64-bar tune, median of repeated runs (2 cores)")
    verdict = "met" if t_ours <= 0.05 else "NOT met"
    print(f"  ours (extract + check + MIDI) : {t_ours * 1000:8.2f} ms   goal <= 50 ms: {verdict}")
    t_m21 = timeit(music21_plain, 5)
    print(f"  music21 parseData + MIDI      : {t_m21 * 1000:8.2f} ms   ratio ours/music21  = {t_ours / t_m21:.3f}")
    if abc2midi.available():
        t_a2m = timeit(abc2midi_run, 20)
        print(f"  abc2midi (subprocess)         : {t_a2m * 1000:8.2f} ms   ratio ours/abc2midi = {t_ours / t_a2m:.2f}")
    else:
        print("  abc2midi not installed (Debian: abcmidi)")


if __name__ == "__main__":
    main()
