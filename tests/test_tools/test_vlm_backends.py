"""The backend table: every place asks it what a backend can do; its names are the settings' and the CLI's."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from image2music.graph.config import Settings, load_settings
from image2music.tools.vlm import make_vlm
from image2music.tools.vlm.backends import BACKENDS, backend
from image2music.tools.vlm.base import VLMError


def test_the_names_are_one_list() -> None:
    from image2music.cli import main

    literal = Settings.model_fields["vlm_backend"].annotation
    assert set(get_args(literal)) == set(BACKENDS)
    option = next(p for c in [main.commands["compose"]] for p in c.params if p.name == "vlm_backend")
    assert list(option.type.choices) == list(BACKENDS)  # type: ignore[attr-defined]


def test_each_backend_says_what_it_can_do(tmp_path: Path) -> None:
    assert backend("transformers").local and backend("transformers").attention
    assert backend("openai").served and not backend("openai").attention and backend("openai").grammar == "server"
    assert backend("replay").recorded and backend("replay").grammar == "none"
    assert backend("replay").label("m", tmp_path / "calls.jsonl") == "replay:calls.jsonl"
    assert backend("openai").label("qwen", base_url="http://h:8000/v1") == "openai:qwen@http://h:8000/v1"
    assert backend("transformers").label("Qwen/Qwen3-VL-4B-Instruct") == "transformers:Qwen/Qwen3-VL-4B-Instruct"
    with pytest.raises(VLMError, match="unknown VLM backend 'ollama': use one of transformers, openai, replay"):
        backend("ollama")


def test_every_backend_is_made_by_the_factory(tmp_path: Path) -> None:
    replay = tmp_path / "calls.jsonl"
    replay.write_text('{"node": "describe", "text": "x"}\n')
    assert make_vlm("replay", "m", replay_file=replay) is not None
    assert make_vlm("openai", "m", base_url="http://127.0.0.1:9/v1") is not None
    with pytest.raises(VLMError):
        make_vlm("ollama", "m")


def test_a_fallback_map_wherever_a_model_looked(tiny_clip: Path) -> None:
    """The CLIP occlusion map stands in for a served model and for a local one without a map (mllama); recorded
    answers get none (no model looked at anything)."""
    from image2music.graph import services

    for name, expected in (("transformers", True), ("openai", True), ("replay", False)):
        s = load_settings(vlm_backend=name, embed_model=str(tiny_clip), attention_maps=True)
        assert (services.get_fallback_map(s) is not None) is expected, name
