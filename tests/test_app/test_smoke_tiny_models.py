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


def _compose(tmp_path: Path, image_path: Path, vlm: Path, clip: Path, **env: str) -> tuple[int, dict, Path]:
    """``i2m compose`` with the tiny models, greedy (its outcome is fixed)."""
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "I2M_DESCRIBE_MAX_NEW_TOKENS": "16",
        "I2M_EXPLAIN_MAX_NEW_TOKENS": "16",
        "I2M_MAX_PARSE_RETRIES": "1",
        "I2M_TEMPERATURE": "0",
        **env,
    }
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "image2music.cli", "compose", str(image_path), "--vlm-backend", "transformers",
           "--vlm-model", str(vlm), "--embed-model", str(clip), "-o", str(out), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), out


def test_random_weights_without_the_grammar_fail_cleanly_within_bounds(
    tmp_path: Path, image_path: Path, tiny_llava: Path, tiny_clip: Path
) -> None:
    """Random weights write no music: the run ends failed, within its retry budget, with its record."""
    code, rec, out = _compose(tmp_path, image_path, tiny_llava, tiny_clip, I2M_GRAMMAR="off", I2M_MAX_NEW_TOKENS="24")
    assert code == 1 and rec["status"] == "failed"
    assert rec["path"] == ["describe", "retrieve", "compose", "parse_check", "compose", "parse_check"]
    assert rec["reason"].startswith("no valid ABC after 2 attempt(s) in compose")
    assert rec["description"] is not None
    assert rec["attention"]["files"] == {"describe": "attention.png"}
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    calls = [json.loads(x) for x in (out / "vlm_calls.jsonl").read_text().splitlines()]
    assert calls[0]["node"] == "describe" and "prompt" in calls[0]


def test_random_weights_with_the_grammar_write_valid_music(
    tmp_path: Path, image_path: Path, tiny_llava: Path, tiny_clip: Path
) -> None:
    """The ABC grammar holds even a random model to valid ABC: the run ends ok, every written version valid."""
    code, rec, out = _compose(tmp_path, image_path, tiny_llava, tiny_clip, I2M_GRAMMAR="on", I2M_MAX_NEW_TOKENS="400")
    assert code == 0 and rec["status"] == "ok", rec["reason"]
    assert rec["path"][:4] == ["describe", "retrieve", "compose", "parse_check"]  # valid on the first try
    assert all(v["ok"] for v in rec["versions"]) and rec["final"]["abc"].startswith("X:")
    assert (out / "music.mid").read_bytes()[:4] == b"MThd"
