"""Tiny random models of two architectures through the normal loading path: attention grids, one vision encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image2music.graph.config import load_settings
from image2music.runner import compose_image
from image2music.tools.music.sections import abc_sections, section_maps
from image2music.tools.vlm import GenerationSettings, VLMResult, make_vlm


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
    vlm._vision_cache.clear()  # type: ignore[attr-defined]
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


def test_mllama_says_why_it_has_no_map_and_counts_its_tower(tmp_path: Path, image_path: Path, tiny_clip: Path) -> None:
    """Llama 3.2 Vision reads the image through cross-attention layers, with one ``<|image|>`` placeholder in
    its text: before, a meaningless 1x1 map and 0 vision encodes; now no map, the reason in run.json's notes, and
    every forward of its tower counted (it encodes the image inside its forward: no cache, once per call)."""
    from tiny_models import build_tiny_mllama

    model = build_tiny_mllama(tmp_path / "tiny-mllama")
    s = load_settings(
        vlm_model=str(model), top_k=0, max_new_tokens=8, describe_max_new_tokens=8, explain_max_new_tokens=8,
        max_parse_retries=0, refine_rounds=0, embed_model=str(tiny_clip),
    )  # fmt: skip
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    assert rec["attention"]["method"] == "clip-occlusion"  # the map that stands in (was a 1x1 "map")
    assert any("reads the image through cross-attention layers" in n for n in rec["notes"]), rec["notes"]
    assert rec["vision_encodes"] == sum(rec["vlm_calls"].values()) >= 2


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
    # exactly each part's tokens: not the first token of the next part (its mark), nor the closing fence
    assert maps["intro"]["grid"] == [[1.0, 0.0], [0.0, 0.0]] and maps["theme"]["grid"] == [[0.0, 0.0], [0.0, 1.0]]


def test_batch_jobs_encode_each_image_once(tmp_path: Path, tiny_llava: Path) -> None:
    """Parallel runs share the model: the feature cache holds several images, so each run encodes its image
    once (run.json ``vision_encodes``), and calls on the one model are serialised."""
    from image2music.batch import run_batch

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        Image.new("RGB", (40, 30), colour).save(imgs / f"{name}.png")
    vlm = make_vlm("transformers", str(tiny_llava))
    vlm._vision_cache.clear()  # type: ignore[attr-defined]
    s = load_settings(
        vlm_model=str(tiny_llava), top_k=0, max_new_tokens=6, describe_max_new_tokens=6, explain_max_new_tokens=6,
        max_parse_retries=1, refine_rounds=0,
    )  # fmt: skip
    rows = run_batch([imgs], tmp_path / "out", s, jobs=2)
    for row in rows:
        rec = __import__("json").loads((Path(row["run_dir"]) / "run.json").read_text())
        assert rec["vision_encodes"] == 1 and sum(rec["vlm_calls"].values()) >= 3, rec["vlm_calls"]


def test_a_processor_error_ends_the_run_failed_with_its_record(
    tmp_path: Path, tiny_llava: Path, image_path: Path
) -> None:
    """A chat template that emits the wrong image token: transformers raises inside the processor."""
    import json
    import shutil

    from click.testing import CliRunner

    from image2music.cli import main

    broken = tmp_path / "broken-llava"
    shutil.copytree(tiny_llava, broken)
    for name in ("chat_template.jinja", "chat_template.json"):
        p = broken / name
        if p.exists():
            p.write_text(p.read_text().replace("<image>", "<|system|>"))
    cfg = broken / "processor_config.json"
    if cfg.exists() and "<image>" in cfg.read_text() and "chat_template" in cfg.read_text():
        data = json.loads(cfg.read_text())
        data["chat_template"] = data["chat_template"].replace("<image>", "<|system|>")
        cfg.write_text(json.dumps(data))
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main, ["compose", str(image_path), "--vlm-model", str(broken), "--top-k", "0", "-o", str(out)]
    )
    assert r.exit_code == 1
    assert "internal error" not in r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "failed" and str(broken) in rec["reason"] and "describe" in rec["reason"]
    assert (out / "report.html").exists()
