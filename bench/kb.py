"""Benchmark: knowledge-base ingest throughput and query latency, printed side by side.

  .venv/bin/python bench/kb.py            # 10k and 168k synthetic entries (takes a few minutes)
  .venv/bin/python bench/kb.py --quick    # 10k only

Ingest: MidiCaps-format files made from corpus tunes; conversion + storage are timed apart from embedding.
Query: Chroma (HNSW, cosine) p50/p95 over random unit vectors vs a flat numpy cosine search over the same
vectors. Goals: conversion + storage >= 200 files/s on 2 cores; query p50 <= 10 ms at 168k.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from image2music.tools.kb.store import Entry, KnowledgeBase  # noqa: E402


def ingest_throughput(n_files: int, jobs: int) -> None:
    from midicaps_fixture import build_midicaps

    from image2music.tools.kb.ingest import _convert_one, iter_midicaps, stable_id

    with tempfile.TemporaryDirectory(prefix="i2m-bench-") as d:
        root = build_midicaps(Path(d) / "mc", n=n_files, broken=0)
        recs = list(iter_midicaps(root))
        for conv in ("symusic",):
            args = [(stable_id(r["location"]), str(root / r["location"]), "t") for _n, r, _e in recs]
            t0 = time.perf_counter()
            if jobs > 1:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(jobs) as pool:
                    results = list(pool.map(_convert_one, args, chunksize=8))
            else:
                results = [_convert_one(a) for a in args]
            t_conv = time.perf_counter() - t0
            entries = [Entry(id=i, caption="c", abc=abc or "", source="s") for i, abc, _, _m in results if abc]
            kb = KnowledgeBase(Path(d) / f"kb-{conv}", "bench/none")
            kb.count()  # open the client outside the timing (once per process in real ingests)
            vecs = np.random.default_rng(0).standard_normal((len(entries), 768)).astype(np.float32)
            t0 = time.perf_counter()
            kb.add(entries, vecs)
            t_store = time.perf_counter() - t0
            rate = len(recs) / (t_conv + t_store)
            print(
                f"  ingest ({conv:>6}, {jobs} job(s)): convert {len(recs) / t_conv:7.1f} files/s, store "
                f"{len(entries) / t_store:7.1f} files/s, convert+store {rate:7.1f} files/s "
                f"(goal >= 200: {'met' if rate >= 200 else 'NOT met'})"
            )


def query_latency(n: int, dim: int = 768, queries: int = 200) -> None:
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="i2m-bench-") as d:
        kb = KnowledgeBase(Path(d), "bench/none")
        t0 = time.perf_counter()
        step = 5000
        for i in range(0, n, step):
            kb.add(
                [Entry(id=str(j), caption="c", abc="", source="s") for j in range(i, min(n, i + step))],
                vecs[i : i + step],
            )
        t_add = time.perf_counter() - t0
        qs = rng.standard_normal((queries, dim)).astype(np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        t_chroma, t_flat = [], []
        for q in qs:
            t0 = time.perf_counter()
            kb.query(q, 5)
            t_chroma.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            np.argpartition(-(vecs @ q), 5)[:5]
            t_flat.append(time.perf_counter() - t0)
        c50, c95 = np.percentile(t_chroma, [50, 95]) * 1000
        f50, f95 = np.percentile(t_flat, [50, 95]) * 1000
        print(
            f"  {n:>7} x {dim}: add {n / t_add:7.0f} vec/s | query p50 {c50:6.2f} ms p95 {c95:6.2f} ms (chroma) "
            f"vs p50 {f50:6.2f} ms p95 {f95:6.2f} ms (numpy flat) | ratio p50 chroma/flat = {c50 / f50:.2f}"
            + (f" | goal p50 <= 10 ms: {'met' if c50 <= 10 else 'NOT met'}" if n >= 100_000 else "")
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    print("knowledge base benchmark (2 cores)")
    ingest_throughput(a.files, a.jobs)
    for n in (10_000,) if a.quick else (10_000, 168_385):
        query_latency(n)


if __name__ == "__main__":
    main()
