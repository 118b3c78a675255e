"""image2music.runner as units: what starting a run checks before anything is written (whole runs: test_runs.py,
test_reliability.py, test_swap.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from image2music.graph.config import load_settings
from image2music.runner import claim_output_dir, new_run_id, prepare_run
from image2music.tools.errors import InputError


def test_an_output_folder_is_new_empty_ours_or_refused(tmp_path: Path) -> None:
    assert claim_output_dir(tmp_path / "new", force=False) is False
    (tmp_path / "empty").mkdir()
    assert claim_output_dir(tmp_path / "empty", force=False) is False
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "run.json").write_text("{}")
    assert claim_output_dir(tmp_path / "ours", force=False) is True  # replaced once the new run has finished
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="is a folder with other files in it; .* or pass --force"):
        claim_output_dir(tmp_path / "theirs", force=False)
    assert claim_output_dir(tmp_path / "theirs", force=True) is True
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="is a file; give a folder"):
        claim_output_dir(tmp_path / "a-file", force=True)


def test_run_ids_sort_by_time_and_do_not_collide() -> None:
    ids = [new_run_id() for _ in range(200)]
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", i) for i in ids) and len(set(ids)) == 200


def test_a_run_that_cannot_start_writes_nothing(tmp_path: Path) -> None:
    """prepare_run checks the image, the prompts, the model and the knowledge base before it makes the folder."""
    (tmp_path / "not-an-image.png").write_text("plain text")
    s = load_settings(vlm_backend="replay", top_k=0)
    with pytest.raises(InputError, match="is not an image file PIL can read"):
        prepare_run(s, tmp_path / "not-an-image.png", tmp_path / "run", "r1", notify=lambda m: None)
    assert not (tmp_path / "run").exists()
