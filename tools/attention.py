"""Attention maps as pictures: heat-map overlays on the image, and the model-agnostic CLIP occlusion map used
when a served model exposes no attentions. Capturing attentions lives with the transformers backend
(:mod:`image2music.tools.vlm.capture`); maps per section of an answer with the music tools
(:mod:`image2music.tools.music.sections`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from image2music.tools.files import atomic_write_bytes


def _colormap(x: np.ndarray) -> np.ndarray:
    """A perceptual dark-to-bright heat colormap (black, purple, red, orange, yellow) without matplotlib."""
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(stops) - 1)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[hi] * frac).astype(np.uint8)


def normalise(grid: np.ndarray) -> np.ndarray:
    g = np.asarray(grid, dtype=np.float32)
    lo, hi = float(g.min()), float(g.max())
    return (g - lo) / (hi - lo) if hi > lo else np.zeros_like(g)


def overlay(image: Image.Image, grid: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The image with the attention grid drawn over it as a heat map."""
    base = image.convert("RGB")
    g = normalise(grid)
    heat = Image.fromarray((g * 255).astype(np.uint8), mode="L").resize(base.size, Image.Resampling.BILINEAR)
    colored = Image.fromarray(_colormap(np.asarray(heat, dtype=np.float32) / 255.0), mode="RGB")
    return Image.blend(base, colored, alpha)


def save_overlay(image: Image.Image, grid: np.ndarray, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    overlay(image, grid).save(buf, format="PNG")
    return atomic_write_bytes(Path(path), buf.getvalue())


def clip_occlusion_map(embedder: Any, image: Image.Image, text: str, grid: tuple[int, int] = (6, 6)) -> np.ndarray:
    """Model-agnostic map: how much hiding each region lowers the image's CLIP similarity to ``text``.

    Used when the VLM exposes no attentions (served models). Higher = the region matters more for the text.
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    rows, cols = grid
    fill = tuple(int(c) for c in np.asarray(rgb, dtype=np.float32).reshape(-1, 3).mean(axis=0))
    variants = [rgb]
    for r in range(rows):
        for c in range(cols):
            occluded = rgb.copy()
            box = (c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows)
            occluded.paste(fill, box)
            variants.append(occluded)
    img_vecs = embedder.embed_images(variants)
    txt = embedder.embed_texts([text])[0]
    sims = img_vecs @ txt
    drop = sims[0] - sims[1:]
    return np.asarray(drop, dtype=np.float32).reshape(rows, cols)
