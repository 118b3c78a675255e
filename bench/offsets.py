"""Benchmark: mapping attention rows to characters (``token_offsets``) grows linearly with the answer.

  .venv/bin/python bench/offsets.py

For 512, 2,048 and 8,192 generated tokens of a trained byte-level BPE tokenizer, side by side: the old way
(decode every prefix: quadratic) and ``token_offsets`` (a short window per step), the same result checked.
Goal: growth per doubling of the length <= 2 x 1.1 (linear + 10%).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from tiny_models import train_tokenizer

    from image2music.tools.vlm.hf import token_offsets

    tok = train_tokenizer(["<s>", "</s>", "<pad>"], vocab_size=400)
    rng = np.random.default_rng(0)
    last: float | None = None
    prev = 1
    print(f"{'tokens':>7} {'prefix decodes s':>17} {'token_offsets s':>16} {'growth x':>9}")
    for n in (512, 2048, 8192):
        ids = rng.integers(3, len(tok), size=n).tolist()
        t0 = time.perf_counter()
        want = [len(tok.decode(ids[: i + 2], skip_special_tokens=True)) for i in range(n - 1)] if n <= 2048 else None
        old = time.perf_counter() - t0 if want is not None else float("nan")
        t0 = time.perf_counter()
        got = token_offsets(tok, ids, n - 1)
        new = time.perf_counter() - t0
        if want is not None:
            assert got == want
        growth = "" if last is None else f"{new / last / (n / prev):.2f}"
        print(f"{n:>7} {old:>17.3f} {new:>16.3f} {growth:>9}")
        last, prev = new, n


if __name__ == "__main__":
    main()
