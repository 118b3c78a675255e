"""Benchmark: does `i2m batch` keep a served model busy?

  .venv/bin/python bench/batch.py [--images 8] [--formats abc,mid]

A bounded fake OpenAI-compatible server on 127.0.0.1 answers every request in exactly 1 s (describe, compose,
reflect, explain). For `--jobs 1, 2, 4, 8` over the same images it prints the wall time, the speedup over one
job, the client's CPU-seconds per run (the `i2m` process and its children: conversions, metrics, report) and
the server's mean number of requests in flight while the batch ran. A client that keeps the server busy has a
speedup near the job count and a mean in-flight near it too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--formats", default=None, help="passed to i2m batch --formats (default: all outputs)")
    args = ap.parse_args()
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
        base: float | None = None
        print(f"{'jobs':>4} {'wall s':>7} {'speedup':>8} {'client CPU-s/run':>17} {'server in flight':>17}")
        for jobs in (1, 2, 4, 8):
            cmd = [i2m, "batch", str(imgs), "-o", str(Path(d) / f"out{jobs}"), "--jobs", str(jobs)]
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
            base = base or wall
            in_flight = (server.busy_s - busy0) / wall
            print(f"{jobs:>4} {wall:>7.1f} {base / wall:>8.2f} {cpu / args.images:>17.2f} {in_flight:>17.2f}")
    server.httpd.shutdown()


if __name__ == "__main__":
    main()
