"""Benchmark: our ABC -> MIDI against abc2midi, per source: the music21 corpus, Debian's sample tunes and each
source of ../shared/corpora (when present).

Prints, per source (never only a sum): how many tunes abc2midi plays, how many of those we accept, how many are
note-identical (same pitches at the same onsets, within 1/24 quarter note), the mean overlap, the tunes that
differ on purpose (counted apart, by reason) and the number of exceptions (checking and every output format of
ours). Goals for each source of >= 30 tunes: acceptance >= 98 %, identical >= 97 % (after only verified causes
are set apart), overlap >= 0.99; zero exceptions.

Run: .venv/bin/python bench/abc_differential.py [--limit N] [--misses FILE]
(``--misses`` writes each tune that is neither identical nor verified different on purpose, with abc2midi's
messages, as JSON lines for examination.)
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from image2music.tools.music.corpus import iter_corpus
from image2music.tools.music.differential import (
    Comparison,
    compare,
    debian_sample_tunes,
    shared_corpus_tunes,
    summarise,
)


def _one(item: tuple[str, str]) -> Comparison:
    return compare(*item)


def write_misses(path: Path, sources: dict[str, list[tuple[str, str]]], parts: dict[str, list[Comparison]]) -> int:
    """Each tune both sides play and that differs without a verified cause, as a JSON line."""
    import json

    from image2music.tools.music.differential import abc2midi_run

    n = 0
    with path.open("w", encoding="utf-8") as out:
        for name, part in parts.items():
            for (tune, abc), r in zip(sources[name], part, strict=True):
                if not r.accepted or r.identical or r.deliberate or not r.oracle_plays:
                    continue
                said = [ln for ln in abc2midi_run(abc)[1].splitlines() if "rror" in ln or "arning" in ln]
                row = {"source": name, "tune": tune, "overlap": round(r.overlap, 4), "claimed": r.unverified}
                out.write(json.dumps({**row, "abc2midi": said[:6], "abc": abc}) + "\n")
                n += 1
    return n


def formats_check(corpus: list[tuple[str, str]], n: int) -> str:
    """Every output format on a fixed-seed sample: a ConversionError is a clean refusal, anything else an exception."""
    import random
    import tempfile
    from functools import partial
    from pathlib import Path

    from image2music.tools.music.check import check_abc
    from image2music.tools.music.convert import ConversionError, write_midi, write_musicxml, write_svg, write_wav

    sample = random.Random(7).sample(corpus, min(n, len(corpus)))
    done = refused = 0
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="i2m-formats-") as d:
        for source, abc in sample:
            r = check_abc(abc)
            if not r.ok or r.tune is None:
                continue
            mid = Path(d) / "t.mid"
            writers = [
                partial(write_midi, r.tune, mid),
                partial(write_musicxml, r.abc, Path(d) / "t.musicxml"),
                partial(write_wav, mid, Path(d) / "t.wav"),
                partial(write_svg, r.abc, Path(d) / "t.svg"),
            ]
            for write in writers:
                try:
                    write()
                    done += 1
                except ConversionError:
                    refused += 1
                except Exception as e:  # noqa: BLE001 - counted: none is expected
                    errors.append(f"{source}: {type(e).__name__}: {e}")
    lines = [f"output formats on {len(sample)} sampled tunes: {done} files written, {refused} clean refusals, "
             f"{len(errors)} exceptions"]  # fmt: skip
    return "\n".join(lines + errors[:10])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N corpus tunes (0: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--formats", type=int, default=60, help="also write MusicXML, WAV and SVG for N sampled tunes (0: skip)"
    )
    ap.add_argument("--misses", type=Path, help="write each miss (source, name, overlap, claim, abc2midi's words, ABC)")
    args = ap.parse_args()
    corpus = [(t.source, t.abc) for t in iter_corpus()]
    if args.limit:
        corpus = corpus[: args.limit]
    sources: dict[str, list[tuple[str, str]]] = {"music21 corpus": corpus, "Debian samples": debian_sample_tunes()}
    sources.update(shared_corpus_tunes())
    items = [t for part in sources.values() for t in part]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_one, items, chunksize=32))
    secs = time.perf_counter() - t0
    parts: dict[str, list[Comparison]] = {}
    k = 0
    for name, part in sources.items():
        parts[name] = rows[k : k + len(part)]
        k += len(part)
    print(
        "per source (goals for sources with >= 30 tunes: acceptance >= 98%, identical >= 97% after verified "
        "causes, overlap >= 0.99):"
    )
    for name, part in parts.items():
        print(f"{name:>22}: {summarise(part).render()}")
    rejected = collections.Counter(
        (r.first_error or "").split(": ", 1)[-1][:70] for r in rows if r.oracle_plays and not r.accepted
    )
    print("most common reasons we refuse a tune abc2midi plays:")
    for reason, n in rejected.most_common(8):
        print(f"  {n:5d}  {reason}")
    for r in rows:
        if r.error:
            print(f"exception: {r.source}: {r.error}")
    print(f"{len(rows)} tunes in {secs:.0f} s")
    if args.misses:
        n = write_misses(args.misses, sources, parts)
        print(f"{n} misses written to {args.misses}")
    if args.formats:
        print(formats_check(corpus, args.formats))
    big = [summarise(p) for p in parts.values() if len(p) >= 30]
    ok = all(s.identical_rate >= 0.97 and s.mean_overlap >= 0.99 and s.acceptance >= 0.98 for s in big)
    return 0 if ok and summarise(rows).exceptions == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
