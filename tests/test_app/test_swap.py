"""-o onto an earlier run: a kill at any step of the replacement leaves a complete run at the named folder
after the next command; a run stopped mid-way is swapped in when its resume finishes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import GOOD_ABC, cli, fenced, write_replay

from image2music import swap
from image2music.cli import main
from image2music.graph.config import load_settings
from image2music.resume import resume_run
from image2music.runner import compose_image

CALLS = [("describe", "A harbour."), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC)), ("explain", "Calm.")]


class Killed(BaseException):
    """Stands for SIGKILL at one point: nothing after it runs."""


def _settings(tmp_path: Path) -> Any:
    return load_settings(vlm_backend="replay", replay_file=write_replay(tmp_path / "c.jsonl", CALLS), top_k=0)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.mark.parametrize("step", ["aside", "into place", "remove the earlier", "end the journal"])
def test_a_kill_at_each_step_of_the_swap(step: str, tmp_path: Path, image_path: Path) -> None:
    s = _settings(tmp_path)
    out = tmp_path / "out"
    first = compose_image(image_path, s, run_dir=out, notify=lambda m: None)
    assert first.ok
    real_rename, real_rmtree, real_unlink = Path.rename, shutil.rmtree, Path.unlink
    calls = {"rename": 0}

    def rename(self: Path, target: Any) -> Any:
        calls["rename"] += self.parent == out.parent
        if (step == "aside" and calls["rename"] == 1) or (step == "into place" and calls["rename"] == 2):
            raise Killed
        return real_rename(self, target)

    def rmtree(path: Any, *a: Any, **k: Any) -> None:
        if step == "remove the earlier" and ".old-" in str(path):
            raise Killed
        real_rmtree(path, *a, **k)

    def unlink(self: Path, *a: Any, **k: Any) -> None:
        if step == "end the journal" and self.name.endswith(".i2m-swap.json"):
            raise Killed
        real_unlink(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(swap.Path, "rename", rename)
        mp.setattr(swap.shutil, "rmtree", rmtree)
        mp.setattr(swap.Path, "unlink", unlink)
        compose_image(image_path, s, run_dir=out, notify=lambda m: None)
    # the named folder holds one complete run at every point: the earlier, or after the swap the new one
    if (out / "run.json").exists():
        assert json.loads((out / "run.json").read_text())["status"] == "ok"
    listing = cli("runs", "list", "--json")
    second = next((r for r in json.loads(listing.stdout) if r["run_id"] != first.run_id), None)
    assert second is not None, listing.output
    # the next command that touches the run finishes the swap
    shown = cli("runs", "show", second["run_id"], "--json")
    assert shown.exit_code == 0, shown.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["run_id"] == second["run_id"] and rec["status"] == "ok"
    assert _hidden(out) == []  # nothing left beside it
    old = cli("runs", "show", first.run_id)
    assert old.exit_code == 1 and f"replaced by run {second['run_id']}" in old.output
    listed = {r["run_id"]: r for r in json.loads(cli("runs", "list", "--json").stdout)}
    assert listed[first.run_id]["status"] == "replaced" and listed[second["run_id"]]["status"] == "ok"


def test_a_run_stopped_before_the_swap_is_swapped_in_when_resumed(tmp_path: Path, image_path: Path) -> None:
    s = _settings(tmp_path)
    out = tmp_path / "out"
    first = compose_image(image_path, s, run_dir=out, notify=lambda m: None)
    from image2music.graph import nodes

    def killed(*a: Any, **k: Any) -> Any:
        raise Killed  # mid-run: no record, the earlier run still at the name

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(nodes, "explain", killed)
        compose_image(image_path, s, run_dir=out, notify=lambda m: None)
    assert json.loads((out / "run.json").read_text())["run_id"] == first.run_id  # the earlier run, untouched
    second = next(r for r in json.loads(cli("runs", "list", "--json").stdout) if r["run_id"] != first.run_id)
    done = resume_run(second["run_id"], s, notify=lambda m: None)
    assert done.run_dir == out and done.record["status"] == "ok"
    assert json.loads((out / "run.json").read_text())["run_id"] == second["run_id"] and _hidden(out) == []


PLANTED = {"final": "X", "new": ".X.new-aaaaaa", "old": "..", "run_id": "r", "earlier": None}


@pytest.mark.parametrize(
    "journal",
    [
        PLANTED,  # the case found: "old" is the parent folder
        {**PLANTED, "new": "..", "old": ".X.old-aaaaaa"},
        {**PLANTED, "new": "/tmp", "old": "/"},
        {**PLANTED, "final": "..", "new": "...new-aaaaaa", "old": "...old-aaaaaa"},
        {**PLANTED, "new": ".X.new-aaaaaa/../..", "old": ".X.old-aaaaaa"},
        {**PLANTED, "old": ".X.old-bbbbbb"},  # tokens that do not pair
        "not a journal",
    ],
)
@pytest.mark.parametrize("command", ["compose", "batch"])
def test_a_planted_journal_deletes_nothing(command: str, journal: Any, tmp_path: Path, image_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "keep.txt").write_text("a neighbour's file")
    (tmp_path / "keep-above.txt").write_text("above")
    if command == "compose":
        final, args = shared / "X", ["compose", str(image_path), "-o", str(shared / "X")]
    else:
        images = tmp_path / "images"
        images.mkdir()
        shutil.copy(image_path, images / "X.png")
        final, args = shared / "X", ["batch", str(images), "-o", str(shared)]
    final.mkdir()
    (final / "mine.txt").write_text("x")
    (shared / ".X.new-aaaaaa").mkdir()
    (shared / ".X.new-aaaaaa" / "run.json").write_text(json.dumps({"status": "ok"}))
    swap.journal_path(final).write_text(json.dumps(journal) if isinstance(journal, dict) else journal)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "i2m-home" not in str(p))
    s = _settings(tmp_path)
    r = CliRunner().invoke(main, [*args, "--replay", str(s.replay_file), "--top-k", "0"], catch_exceptions=False)
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "i2m-home" not in str(p))
    assert [p for p in before if p not in after] == []  # nothing removed or moved
    assert (shared / "keep.txt").read_text() == "a neighbour's file" and (final / "mine.txt").exists()
    assert "is not a swap journal of i2m" in r.output and "nothing was changed" in r.output, r.output
    assert r.exit_code != 0 and "Traceback" not in r.output


def test_a_journal_that_is_a_link_is_refused(tmp_path: Path, image_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({**PLANTED, "final": "out", "new": ".out.new-aaaaaa", "old": ".out.old-aaaaaa"}))
    swap.journal_path(out).symlink_to(target)
    with pytest.raises(swap.BadJournal, match="it is a link"):
        compose_image(image_path, _settings(tmp_path), run_dir=out, notify=lambda m: None)
