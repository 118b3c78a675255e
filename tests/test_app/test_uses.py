"""The ways people use it from the command line: prompt commands and scripted runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, cli, replay_run


def test_prompt_commands() -> None:
    r = cli("prompts", "list")
    assert "compose" in r.stdout and "$description" in r.stdout
    assert "ABC notation" in cli("prompts", "show", "compose").stdout
    path = Path(cli("prompts", "path", "reflect").stdout.strip())
    assert path == ROOT / "prompts" / "reflect.md" and path.exists()
    assert cli("prompts", "show", "nope").exit_code == 2


def test_scripted_runs_store_absolute_paths_say_things_once_and_leave_only_outputs(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative --replay and --prompt are stored absolute (`runs replay` from another folder works); image
    paths print normalised (no `..`); a batch says once why it has no references, not once per image; a run
    folder holds only what README lists (no lock file)."""
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    shutil.copy(image_path, work / "photos" / "a.png")
    shutil.copy(image_path, work / "photos" / "b.png")
    replay_run(work)
    (work / "my_compose.md").write_text(Path(cli("prompts", "path", "compose").stdout.strip()).read_text())
    monkeypatch.chdir(work)
    r = cli("compose", "photos/../photos/a.png", "-o", "run", "--replay", "calls.jsonl", "--top-k", "0",
            "--prompt", "compose=my_compose.md", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["image"] == str(work / "photos" / "a.png") and ".." not in r.output
    assert rec["settings"]["replay_file"] == str(work / "calls.jsonl")
    assert sorted(p.name for p in (work / "run").iterdir() if p.name.startswith(".")) == []  # no lock, no temp
    monkeypatch.chdir(tmp_path)
    again = cli("runs", "replay", rec["run_id"], "--from", "compose", "-o", str(tmp_path / "again"))
    assert again.exit_code == 0, again.output
    # a batch without an embedder: the reason there are no references is said once
    monkeypatch.chdir(work)
    b = cli("batch", "photos", "-o", str(tmp_path / "out"), "--replay", "calls.jsonl", "--top-k", "1",
            "--embed-model", "no-such-org/no-such-embedder-123")  # fmt: skip
    assert b.exit_code == 0, b.output
    assert b.output.count("composing without examples") == 1
