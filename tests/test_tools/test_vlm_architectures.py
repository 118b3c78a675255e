"""Tiny random models of two architectures through the normal loading path: attention grids, one vision encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from image2music.graph.config import load_settings
from image2music.tools.music.sections import abc_sections, section_maps
from image2music.tools.vlm import GenerationSettings, VLMResult, make_vlm
from PIL import Image

from image2music.runner import compose_image


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("models") / "tiny-qwen25vl")


@pytest.mark.parametrize(
    ("fixture", "image_size", "grid"),
    [
        ("tiny_qwen", (100, 80), (3, 4)),  # resized to 112x84: 8x6 patches of 14, merged 2x2 -> 4 wide, 3 high
        ("tiny_llava", (100, 80), (4, 4)),  # 32x32 input, 8x8 patches
    ],
)
def test_attention_grid_and_one_vision_encode(
    request: pytest.FixtureRequest, fixture: str, image_size: tuple[int, int], grid: tuple[int, int]
) -> None:
    vlm = make_vlm("transformers", str(request.getfixturevalue(fixture)))
    image = Image.new("RGB", image_size, (30, 90, 150))
    before = vlm.vision_calls  # type: ignore[attr-defined]
    s = GenerationSettings(max_new_tokens=8, temperature=0.0)
    res = vlm.generate(
        node="describe", prompt="Describe it.", image=image, call_index=0, settings=s, capture_attention=True
    )
    assert res.grid == grid
    assert res.token_attention is not None and res.token_attention.shape[1] == grid[0] * grid[1]
    assert np.isfinite(res.token_attention).all()
    for node in ("compose", "reflect", "explain"):
        vlm.generate(node=node, prompt=f"{node} it.", image=image, call_index=0, settings=s)
    assert vlm.vision_calls - before == 1  # type: ignore[attr-defined]


def test_a_whole_run_encodes_the_image_once(tmp_path: Path, image_path: Path, tiny_llava: Path) -> None:
    vlm = make_vlm("transformers", str(tiny_llava))
    vlm._vision_cache = None  # type: ignore[attr-defined]
    before = vlm.vision_calls  # type: ignore[attr-defined]
    s = load_settings(
        vlm_model=str(tiny_llava),
        top_k=0,
        max_new_tokens=8,
        describe_max_new_tokens=8,
        explain_max_new_tokens=8,
        max_parse_retries=2,
    )
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    assert sum(rec["vlm_calls"].values()) >= 4  # describe + 3 compose attempts
    assert vlm.vision_calls - before == 1  # type: ignore[attr-defined]


def test_section_maps_follow_the_tokens_of_each_part() -> None:
    text = "```abc\nX:1\nK:C\n% [intro]\nCDEF|\n% [theme]\nGABc|\n```"
    secs = abc_sections(text)
    assert [n for n, _, _ in secs] == ["intro", "theme"]
    # one token per character; the intro's tokens look at cell 0, the theme's at cell 3
    rows = np.zeros((len(text), 4), dtype=np.float32)
    intro, theme = secs[0], secs[1]
    rows[intro[1] : intro[2], 0] = 1.0
    rows[theme[1] : theme[2], 3] = 1.0
    res = VLMResult(text=text, token_attention=rows, grid=(2, 2), token_offsets=list(range(1, len(text) + 1)))
    maps = section_maps(res)
    assert set(maps) == {"intro", "theme"}
    assert np.argmax(maps["intro"]["grid"]) == 0 and np.argmax(maps["theme"]["grid"]) == 3
