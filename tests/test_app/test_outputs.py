"""The run's files: the final music's files are the final music's, whatever a background render did."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import GOOD_ABC

from image2music import outputs
from image2music.graph.config import load_settings
from image2music.graph.context import RunContext
from image2music.tools.music.check import check_abc
from image2music.tools.music.convert import midi_bytes
from image2music.tools.music.differential import midi_notes


def test_a_render_of_music_no_longer_final_is_joined_before_the_files(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the runner starts rendering the music it expects to be final while the model explains; when the
    final music was another version, write_outputs rendered that one and returned without joining the first
    render, which then wrote its music.mid over the final one's."""
    old = GOOD_ABC.replace("Calm Harbour", "Old Harbour").replace("|", "| c", 1)
    held, real = threading.Event(), outputs.render_files

    def render(ctx: RunContext, abc: str) -> Any:
        if abc == old:
            held.wait(timeout=3)  # the old render finishes after the final one's (as a slow conversion would)
        out = real(ctx, abc)
        if abc != old:
            held.set()
        return out

    monkeypatch.setattr(outputs, "render_files", render)
    settings = load_settings(vlm_backend="replay", top_k=0, formats="abc,mid")
    ctx = RunContext(settings=settings, run_id="r", image_path=image_path, run_dir=tmp_path / "run")
    ctx.run_dir.mkdir()
    renders = outputs.Renders(ctx, old)
    final = {"index": 0, "node": "compose", "abc": GOOD_ABC, "ok": True, "errors": [], "warnings": []}
    result = outputs.write_outputs(ctx, {"versions": [final], "path": ["compose"]}, renders=renders)
    assert not renders._thread.is_alive()  # nothing of the run is written after write_outputs returns
    written = midi_notes((ctx.run_dir / "music.mid").read_bytes())
    assert written == midi_notes(midi_bytes(check_abc(GOOD_ABC).tune))  # type: ignore[arg-type]
    assert result.record["final"] is not None and result.record["final"]["abc"] == GOOD_ABC


def test_a_run_whose_outputs_fail_still_ends_with_its_record(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever fails, a run ends with its run.json: when writing the outputs itself fails, the same record
    builder writes it without the run's files, failed, with the reason and the error note."""
    from conftest import replay_run

    from image2music import execution, runner

    def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("the outputs broke")

    monkeypatch.setattr(execution, "write_outputs", broken)
    settings = load_settings(vlm_backend="replay", replay_file=replay_run(tmp_path), top_k=0)
    rec = runner.compose_image(image_path, settings, run_dir=tmp_path / "run", notify=lambda m: None).record
    on_disk = json.loads((tmp_path / "run" / "run.json").read_text())
    assert on_disk == rec and rec["status"] == "failed" and rec["files"] == {} and rec["final"] is None
    assert rec["reason"].startswith("writing the outputs failed") and "the outputs broke" in rec["reason"]
    assert rec["errors"][-1]["error"] == "RuntimeError" and rec["path"][0] == "describe"
    assert "vlm_api_key" not in rec["settings"] and all("abc" not in r for r in rec["references"])


def test_attention_maps_are_files_named_from_data_never_paths(tmp_path: Path, image_path: Path) -> None:
    """Unit: each whole-answer map and each section map of the final version is a PNG over the image, its file
    name made from the (untrusted: a model names the sections) name inside the run folder."""
    from PIL import Image

    grid = [[0.0, 0.5], [1.0, 0.25]]
    amap = {"grid": grid, "shape": [2, 2], "method": "vlm-attention"}
    ctx = RunContext(settings=load_settings(vlm_backend="replay"), run_id="r", image_path=image_path, run_dir=tmp_path)
    state: Any = {"attention": {"describe": amap, "reflect": amap}}
    final: Any = {"attention_maps": {"A part": amap, "../../../evil": amap}}
    files = outputs.write_attention_maps(ctx, state, final)
    assert files["describe"] == "attention.png" and files["reflect"] == "attention-reflect.png"
    assert files["section: A part"].startswith("attention-section-") and len(files) == 4
    for name in files.values():
        assert "/" not in name and Image.open(tmp_path / name).size == Image.open(image_path).size
    assert not list(tmp_path.parent.glob("*.png")) and outputs.write_attention_maps(ctx, {}, None) == {}


def test_the_prompts_a_run_used_are_copied_into_its_folder(tmp_path: Path) -> None:
    mine = tmp_path / "mine.md"
    mine.write_text("Write a tune for $description.\n$examples\n$feedback\n")
    ctx = RunContext(settings=load_settings(vlm_backend="replay"), run_id="r", run_dir=tmp_path / "run",
                     prompt_paths={"compose": mine})  # fmt: skip
    where = outputs.write_prompt_copies(ctx)
    assert where["compose"] == str(mine) and set(where) == {"describe", "compose", "reflect", "explain", "judge"}
    assert (tmp_path / "run" / "prompts" / "compose.md").read_text() == mine.read_text()
