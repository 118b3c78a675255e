"""The run context: this package's own is trusted; a server client's is data (checked in process here; the same
through `langgraph dev` and the SDK in test_langgraph_server.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from image2music.graph.builder import build_graph
from image2music.graph.context import RunContext


def _first_error(context: RunContext, image: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    monkeypatch.setenv("I2M_VLM_BACKEND", "replay")
    monkeypatch.setenv("I2M_REPLAY_FILE", str(Path(__file__)))  # never read: the context is refused first
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Exception) as info:  # noqa: PT011 - the InputError as LangGraph raises it
        for _ in build_graph().stream({"image": image}, {"configurable": {"thread_id": "t"}}, context=context):
            pass
    return str(info.value)


def test_a_server_path_is_refused_unless_the_server_allows_it(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = _first_error(RunContext(), str(image_path), monkeypatch)
    assert "give the image as a data: URL or base64" in said


@pytest.mark.parametrize("target", ["missing", "folder", "text"])
def test_a_file_that_is_not_an_image_is_one_answer(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the path exists, is a folder or a text file, the client learns only "not a readable image"."""
    paths = {"missing": tmp_path / "nope.png", "folder": tmp_path, "text": tmp_path / "notes.txt"}
    (tmp_path / "notes.txt").write_text("secret notes")
    said = _first_error(RunContext(), str(paths[target]), monkeypatch, I2M_SERVER_IMAGE_PATHS="true")
    assert "the image is not a readable image" in said and str(tmp_path) not in said


def test_a_client_context_cannot_choose_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    inline = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    hostile: Any = RunContext(run_id="x", run_dir=tmp_path / "elsewhere", prompt_paths={"describe": Path("/etc")})
    said = _first_error(hostile, inline, monkeypatch)
    assert "cannot set run_id, run_dir, prompt_paths" in said and not (tmp_path / "elsewhere").exists()
