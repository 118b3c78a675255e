"""Benchmark: does `i2m batch` keep a served model busy?

  .venv/bin/python bench/batch.py [--images 16] [--rounds 3] [--formats abc,mid] [--profile]

A bounded fake OpenAI-compatible server on 127.0.0.1 answers every request in exactly 1 s (describe, compose,
reflect, explain). For `--jobs 1, 2, 4, 8` over the same images it prints the wall time, the speedup over one
job, the client's CPU-seconds per run (the `i2m` process and its children: conversions, metrics, report) and
the server's mean number of requests in flight while the batch ran. Rounds repeat the four batches one after
the other, each speedup against its own round's one job; the medians over the rounds come last (a machine
that slows for a minute would otherwise decide one ratio). A client that keeps the server busy has a
speedup near the job count and a mean in-flight near it too. `--profile` first shows where the client's CPU
goes (one job under yappi: CPU per package, and the child processes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = (1, 2, 4, 8)
ABC = "X:1\nT:Harbour\nM:4/4\nL:1/8\nQ:1/4=80\nK:G\nGABc d2B2|c2A2 G4|B2d2 g2f2|e2c2 A4|]\n"
ANSWERS = {
    "Look carefully": "A lighthouse at sunset over a calm sea, warm light, slow waves.",
    "You are a composer who writes": f"```abc\n{ABC}```",
    "revising your own piece": f"```abc\n{ABC}```",
    "Explain the motivation": "The calm sea suggested a slow tune in G major.",
}


class Server:
    def __init__(self, delay_s: float = 1.0) -> None:
        self.busy_s = 0.0
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                t0 = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"][1]["text"]
                text = next((a for k, a in ANSWERS.items() if k in prompt), "Fine.")
                time.sleep(delay_s)
                data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with outer.lock:
                    outer.busy_s += time.perf_counter() - t0
                    outer.requests += 1

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def profile(imgs: Path, out: Path, env: dict[str, str], formats: str | None) -> None:
    """Where the client's CPU goes in one `i2m batch` of the images with one job: the i2m process under yappi
    (CPU time of every thread, own time grouped by package) and its child processes (conversions) from the
    kernel's accounting. yappi is a development dependency (`make install-dev`)."""
    cmd = [sys.executable, __file__, "--profile-child", str(imgs), str(out), formats or ""]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"profiled batch failed: {r.stderr[-1500:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    n = res["runs"]
    print(
        f"profile of one job over {n} images (CPU-s per run): the i2m process {res['self'] / n:.2f} "
        f"(profiled, so slower), its children {res['children'] / n:.2f} (music21, fluidsynth, abcm2ps, abc2midi)"
    )
    for key, secs in res["groups"][:16]:
        print(f"  {key:<48} {secs / n:6.3f}")


def profile_child(imgs: str, out: str, formats: str) -> None:
    try:
        import yappi
    except ImportError:
        sys.exit("--profile needs yappi (a development dependency): make install-dev")
    from image2music.cli import main as cli

    args = ["batch", imgs, "-o", out, "--jobs", "1"] + (["--formats", formats] if formats else [])
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    try:
        cli.main(args, standalone_mode=False)
    except SystemExit as e:  # the command's exit status: 0, or 1 when an image failed
        if e.code:
            sys.exit(f"the profiled batch failed (exit {e.code})")
    finally:
        yappi.stop()
    groups: dict[str, float] = {}
    for f in yappi.get_func_stats():
        key = _group(f.module, f.name)
        groups[key] = groups.get(key, 0.0) + f.tsub
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "runs": len(list(Path(imgs).iterdir())),
        "self": me.ru_utime + me.ru_stime,
        "children": kids.ru_utime + kids.ru_stime,
        "groups": sorted(groups.items(), key=lambda kv: -kv[1]),
    }))  # fmt: skip


def _group(file: str, name: str) -> str:
    """A package (site-packages/<pkg>), one of our modules, the interpreter's own (imports) or a builtin."""
    if "site-packages/" in file:
        parts = file.split("site-packages/")[1].split("/")
        return "/".join(parts[:2]) if parts[0] in ("image2music", "music21") else parts[0]
    if "/work/" in file or "image2music" in file:
        parts = Path(file).parts
        return "/".join(parts[-2:])
    if file == "~":
        return f"builtin {name}"[:44]
    return "python " + Path(file).parent.name + "/" + Path(file).name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16, help="a batch's steady state, not only its start")
    ap.add_argument("--formats", default=None, help="passed to i2m batch --formats (default: all outputs)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over jobs 1, 2, 4, 8; medians at the end")
    ap.add_argument("--profile", action="store_true", help="also profile one job: where the client's CPU goes")
    ap.add_argument("--profile-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile_child:
        profile_child(*args.profile_child)
        return
    i2m = str(Path(sys.executable).with_name("i2m"))
    server = Server()
    with tempfile.TemporaryDirectory() as d:
        imgs = Path(d) / "imgs"
        imgs.mkdir()
        for i in range(args.images):
            shutil.copy(ROOT / "examples/sunset_lighthouse.png", imgs / f"img{i}.png")
        env = {
            **os.environ,
            "I2M_HOME": str(Path(d) / "home"),
            "I2M_VLM_BACKEND": "openai",
            "I2M_VLM_BASE_URL": server.url,
            "I2M_VLM_MODEL": "fake",
            "I2M_TOP_K": "0",
        }
        if args.profile:
            profile(imgs, Path(d) / "profiled", env, args.formats)
        walls: dict[int, list[float]] = {j: [] for j in JOBS}
        head = ("round", "jobs", "wall s", "speedup", "client CPU-s/run", "server in flight")
        print(" ".join(f"{h:>{w}}" for h, w in zip(head, (5, 4, 7, 8, 17, 17), strict=True)))
        for rnd in range(1, args.rounds + 1):  # rounds interleave the job counts: a slow patch hits them all
            for jobs in JOBS:
                out = Path(d) / f"out{rnd}-{jobs}"
                cmd = [i2m, "batch", str(imgs), "-o", str(out), "--jobs", str(jobs)]
                if args.formats:
                    cmd += ["--formats", args.formats]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                busy0 = server.busy_s
                t0 = time.perf_counter()
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if r.returncode != 0:
                    sys.exit(f"batch failed: {r.stderr[-1000:]}")
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                walls[jobs].append(wall)
                in_flight = (server.busy_s - busy0) / wall
                speedup = walls[1][-1] / wall
                print(f"{rnd:>5} {jobs:>4} {wall:>7.1f} {speedup:>8.2f} {cpu / args.images:>17.2f} {in_flight:>17.2f}")
                shutil.rmtree(out)
        if args.rounds > 1:
            med = {j: statistics.median(w) for j, w in walls.items()}
            per_round = {j: [a / b for a, b in zip(walls[1], walls[j], strict=True)] for j in JOBS}
            print(f"median of {args.rounds} rounds:")
            for jobs in JOBS[1:]:
                lo, hi = min(per_round[jobs]), max(per_round[jobs])
                print(
                    f"  jobs {jobs}: wall {med[jobs]:.1f} s, speedup {med[1] / med[jobs]:.2f} "
                    f"(rounds {lo:.2f}-{hi:.2f})"
                )
    server.httpd.shutdown()


if __name__ == "__main__":
    main()
