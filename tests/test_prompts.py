"""Prompt templates with checked variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from image2music import prompts
from image2music.prompts import PromptError


def test_builtin_prompts_load_and_render() -> None:
    loaded = prompts.load_all()
    assert set(loaded) == {"describe", "compose", "reflect", "explain", "judge"}
    text = loaded["compose"].render(description="a lake", examples="(none)", feedback="")
    assert "a lake" in text and "$" not in text


def test_override_with_unknown_and_missing_variables(tmp_path: Path) -> None:
    f = tmp_path / "c.md"
    f.write_text("Write music for $descripton with $examples")
    with pytest.raises(PromptError) as e:
        prompts.load_all({"compose": f})
    assert "unknown variable(s) $descripton" in str(e.value)
    assert "missing required variable(s) $description" in str(e.value)


def test_override_ok_and_unknown_node(tmp_path: Path) -> None:
    f = tmp_path / "c.md"
    f.write_text("Music for $description, see $examples. Price: $$5")
    p = prompts.load_all({"compose": f})["compose"]
    assert p.path == f and p.render(description="x", examples="y").startswith("Music for x, see y. Price: $5")
    with pytest.raises(PromptError, match="unknown prompt 'composer'"):
        prompts.load_all({"composer": f})
    with pytest.raises(PromptError, match="cannot read prompt file"):
        prompts.load("compose", tmp_path / "missing.md")


def test_prompt_specs_are_the_vlm_nodes() -> None:
    from image2music.prompts import SPECS
    from image2music.tools.vlm.base import VLM_NODES

    assert set(SPECS) == set(VLM_NODES)
