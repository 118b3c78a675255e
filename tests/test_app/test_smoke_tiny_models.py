"""Smoke test: tiny random VLM and CLIP built offline, through the real transformers loading path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_compose_with_tiny_models_fails_cleanly_within_bounds(
    tmp_path: Path, image_path: Path, tiny_llava: Path, tiny_clip: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "I2M_MAX_NEW_TOKENS": "24",
        "I2M_DESCRIBE_MAX_NEW_TOKENS": "16",
        "I2M_EXPLAIN_MAX_NEW_TOKENS": "16",
        "I2M_MAX_PARSE_RETRIES": "1",
    }
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "image2music.cli",
            "compose",
            str(image_path),
            "--vlm-backend",
            "transformers",
            "--vlm-model",
            str(tiny_llava),
            "--embed-model",
            str(tiny_clip),
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    rec = json.loads(proc.stdout)
    # random weights write no music: the run must end failed, cleanly, within the retry budget
    assert proc.returncode == (0 if rec["status"] == "ok" else 1)
    if rec["status"] == "failed":
        assert rec["path"].count("compose") <= 2 and "no valid ABC" in rec["reason"]
    assert rec["description"] is not None
    assert rec["attention"]["files"] == {"describe": "attention.png"}
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    calls = [json.loads(x) for x in (out / "vlm_calls.jsonl").read_text().splitlines()]
    assert calls[0]["node"] == "describe" and "prompt" in calls[0]
