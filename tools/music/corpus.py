"""Tunes from the ABC corpus bundled with music21 (~13,000 folk and art tunes, no download)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusTune:
    """One tune of a multi-tune ABC file; ``abc`` includes the file header."""

    source: str  # e.g. "essenFolksong/han1.abc#12"
    collection: str
    abc: str


def corpus_files() -> list[Path]:
    """All ABC files in music21's corpus, sorted for determinism."""
    from music21 import corpus

    return sorted(Path(str(p)) for p in corpus.getPaths(fileExtensions=("abc",)))


def split_tunes(text: str) -> tuple[str, list[str]]:
    """Split an ABC file into (file header, tunes); each tune starts at an ``X:`` line."""
    parts = re.split(r"(?m)^(?=X:)", text)
    header = parts[0] if parts and not parts[0].startswith("X:") else ""
    tunes = [p for p in parts if p.startswith("X:")]
    # the file header only carries fields that apply to all tunes; keep its field lines
    header_fields = "\n".join(ln for ln in header.splitlines() if re.match(r"^(%%|[A-Za-z]:)", ln))
    return header_fields, tunes


def iter_corpus() -> Iterator[CorpusTune]:
    """Every tune of the bundled corpus, in a stable order."""
    for path in corpus_files():
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        header, tunes = split_tunes(text)
        parts = path.parts
        collection = parts[parts.index("corpus") + 1] if "corpus" in parts else path.parent.name
        rel = "/".join(parts[parts.index("corpus") + 1 :]) if "corpus" in parts else path.name
        for n, tune in enumerate(tunes, start=1):
            abc = tune.strip() + "\n"
            if header:
                # ABC 2.1: file-header fields apply to every tune; insert them after X:
                first, _, rest = abc.partition("\n")
                abc = f"{first}\n{header}\n{rest}"
            yield CorpusTune(source=f"{rel}#{n}", collection=collection, abc=abc)


def sample_corpus(n: int, seed: int = 0) -> list[CorpusTune]:
    """``n`` tunes sampled from the whole corpus with a fixed seed."""
    tunes = list(iter_corpus())
    rng = random.Random(seed)
    return rng.sample(tunes, min(n, len(tunes)))
