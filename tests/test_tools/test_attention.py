"""Attention grids and the heat-map overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from image2music.tools.attention import normalise, overlay, save_overlay
from image2music.tools.vlm.capture import image_grid


def test_grid_for_qwen_llava_and_tiles() -> None:
    (r, c), idx = image_grid(12, {"image_grid_thw": torch.tensor([[1, 6, 8]])}, None, merge_size=2)
    assert (r, c) == (3, 4) and len(idx) == 12
    (r, c), idx = image_grid(16, {}, None)
    assert (r, c) == (4, 4)
    (r, c), idx = image_grid(5 * 9, {}, None, tile_tokens=9)  # 4 tiles + the global view
    assert (r, c) == (3, 3) and list(idx) == list(range(36, 45))
    # Idefics3 tiles stitched in rows: 2x2 tiles of 2x2 tokens -> a 4x4 grid
    (r, c), idx = image_grid(5 * 4, {}, None, tile_tokens=4, image_size=(60, 40))
    assert (r, c) == (4, 4) and idx.reshape(4, 4)[0].tolist() == [0, 1, 4, 5] and idx.reshape(4, 4)[1, 0] == 2
    (r, c), idx = image_grid(3 * 4, {}, None, tile_tokens=4, image_size=(90, 40))  # 1x2 tiles of a wide image
    assert (r, c) == (2, 4)
    assert image_grid(7, {}, None) is None  # an unknown layout gives no map, never a 1 x N strip


def test_overlay_png(tmp_path: Path) -> None:
    img = Image.new("RGB", (64, 48), (100, 100, 100))
    grid = np.zeros((4, 4))
    grid[0, 0] = 1.0
    out = overlay(img, grid)
    assert out.size == img.size and out.getpixel((2, 2)) != out.getpixel((60, 44))
    p = save_overlay(img, grid, tmp_path / "a.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert normalise(np.ones((2, 2))).max() == 0


def test_grids_of_tiled_and_broken_layouts() -> None:
    """Mistral3 rows from image_sizes (no strip); LLaVA-NeXT / OneVision maps use the base view."""
    from types import SimpleNamespace

    import torch

    mistral = SimpleNamespace(spatial_merge_size=2, vision_config=SimpleNamespace(patch_size=4), model_type="mistral3")
    (r, c), idx = image_grid(6 * 8, {"image_sizes": torch.tensor([[48, 64]])}, mistral)  # type: ignore[misc]
    assert (r, c) == (6, 8) and len(idx) == 48
    vision = SimpleNamespace(image_size=16, patch_size=4)
    onevision = SimpleNamespace(model_type="llava_onevision", vision_config=vision)
    (r, c), idx = image_grid(70, {"image_sizes": torch.tensor([[40, 60]])}, onevision)  # type: ignore[misc]
    assert (r, c) == (4, 4) and list(idx) == list(range(16))
    assert image_grid(70, {}, None) is None  # the same tokens without knowing the family: no strip, no map
