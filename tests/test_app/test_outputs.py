"""The run's files: the final music's files are the final music's, whatever a background render did."""

from __future__ import annotations

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
