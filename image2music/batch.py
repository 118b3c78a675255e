"""Scripted runs: many images, one sub-folder each, a results.jsonl line per image; failures never stop it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypedDict

from image2music.graph.config import Settings
from image2music.runner import StopSignal, cancel_reason, compose_image, how_stopped, new_run_id
from image2music.tools.errors import I2MError, InputError
from image2music.tools.files import safe_name


class BatchRow(TypedDict):
    """One line of results.jsonl."""

    path: str
    """The image."""
    status: str
    """``ok``, ``failed`` (the run's record says why), ``refused`` (the input was refused before a run) or
    ``cancelled`` (Ctrl-C or SIGTERM stopped the batch: the run in flight is resumable, an image not yet
    started has no run)."""
    reason: str | None
    run_dir: str
    run_id: str | None
    seconds: float | None
    """Wall time of the image's run."""
    timings: list[list[str | float]] | None
    """``[node, seconds]`` of each step."""


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files from files and directories (directories: their image files, sorted, not recursive)."""
    from image2music.tools.files import plain_path

    out: list[Path] = []
    for item in inputs:
        p = plain_path(item)  # absolute and normalised: what every line and record names
        if p.is_dir():
            out.extend(sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def run_batch(
    inputs: Iterable[str | Path],
    out_dir: Path,
    settings: Settings,
    *,
    jobs: int = 1,
    prompt_overrides: dict[str, Path] | None = None,
    on_done: Callable[[BatchRow], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> list[BatchRow]:
    """Compose music for every image; returns the results.jsonl rows in input order. ``notify`` gets each
    distinct message of the runs once (why there are no references, say), not once per image."""
    # parallel runs on one local model must not evict each other's vision features
    settings = settings.with_overrides(vlm_feature_cache=max(settings.vlm_feature_cache, jobs))
    images = collect_images(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names: dict[Path, str] = {}
    used: set[str] = set()
    for img in images:
        base = safe_name(img.stem, default="image")
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names[img] = name
    lock = threading.Lock()
    results_path = out_dir / "results.jsonl"
    results_path.write_text("", encoding="utf-8")
    rows: dict[Path, BatchRow] = {}
    stop = StopSignal()
    said: set[str] = set()

    def once(message: str) -> None:
        with lock:
            if notify is None or message in said:
                return
            said.add(message)
        notify(message)

    def one(img: Path) -> None:
        run_dir = out_dir / names[img]
        run_id = new_run_id()
        t0 = time.perf_counter()
        row: BatchRow = {
            "path": str(img),
            "status": "failed",
            "reason": None,
            "run_dir": str(run_dir),
            "run_id": None,
            "seconds": None,
            "timings": None,
        }
        interrupted: KeyboardInterrupt | None = None
        try:
            if stop.error is not None:
                row["status"] = "cancelled"
                row["reason"] = f"not started: the batch was stopped by {how_stopped(stop.error)}"
            else:
                res = compose_image(
                    img,
                    settings,
                    run_dir=run_dir,
                    run_id=run_id,
                    prompt_overrides=prompt_overrides,
                    notify=once,
                    stop=stop,
                )
                steps = zip(res.record["path"], res.record["timings"], strict=False)
                row["status"] = res.record["status"]
                row["reason"] = res.record.get("reason")
                row["run_id"] = res.run_id
                row["timings"] = [[node, secs] for node, secs in steps]
        except KeyboardInterrupt as e:  # this run's record is written (resumable) before it gets here
            interrupted = e
            stop.stop(e)  # the other runs stop too, and the images not started are not
            row["status"], row["reason"], row["run_id"] = "cancelled", cancel_reason(e, run_id), run_id
        except InputError as e:
            row["status"], row["reason"] = "refused", str(e)
        except I2MError as e:
            row["reason"] = str(e)
        except Exception as e:  # noqa: BLE001 - one image's unexpected failure must not stop the batch
            row["reason"] = f"internal error: {type(e).__name__}: {e}"
        row["seconds"] = round(time.perf_counter() - t0, 3)
        with lock:
            rows[img] = row
            with open(results_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            if on_done is not None:
                on_done(row)
        if interrupted is not None and jobs <= 1:  # the serial loop stops here; a worker thread's run just ends
            raise interrupted

    if jobs <= 1:
        try:
            for img in images:
                one(img)
        except KeyboardInterrupt as e:
            if stop.error is None:  # it came between two runs
                stop.stop(e)
            for img in images:  # every image has its line, the ones not started too
                if img not in rows:
                    one(img)
            raise
    else:
        # Ctrl-C and SIGTERM reach the main thread only: it hands them to the runs in the workers, and the images
        # still queued see the stop when a worker takes them (their lines say "not started")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, img) for img in images]
            try:
                for f in as_completed(futures):
                    f.result()
            except KeyboardInterrupt as e:
                stop.stop(e)
                for f in futures:
                    f.result()  # the runs in flight write their records
                raise
    return [rows[i] for i in images]
