"""Attention maps: stream the attention of generated tokens to the image, map it to the image grid, draw it.

Instead of keeping every ``output_attentions`` tensor of every generation step (as the paper's reference
code does), a forward hook on each decoder attention layer keeps, for each new token, only its attention to
the image positions averaged over heads; layers are averaged as they arrive. Memory is O(tokens x image
positions).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tools.files import atomic_write_bytes


class AttentionRecorder:
    """Forward hooks on the language model's attention layers that accumulate attention to the image."""

    def __init__(self, model: Any, image_positions: np.ndarray) -> None:
        import torch

        self.torch = torch
        self.positions = torch.as_tensor(image_positions, dtype=torch.long)
        self.layers = _attention_layers(model)
        self.rows: list[np.ndarray] = []
        self._step_sum: Any = None
        self._step_layers = 0
        self._handles: list[Any] = []

    def __enter__(self) -> AttentionRecorder:
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            return
        # [batch, heads, q, k]: the last query row is the token being generated at this step
        last = weights[0, :, -1, :].float()
        if self.positions.numel() and int(self.positions.max()) >= last.shape[-1]:
            return
        vec = last[:, self.positions].mean(dim=0).detach().cpu()
        if self._step_layers and self._step_sum is not None and vec.shape != self._step_sum.shape:
            self._flush()
        self._step_sum = vec if self._step_sum is None else self._step_sum + vec
        self._step_layers += 1
        if self._step_layers == len(self.layers):
            self._flush()

    def _flush(self) -> None:
        if self._step_layers:
            self.rows.append((self._step_sum / self._step_layers).numpy())
        self._step_sum = None
        self._step_layers = 0

    def result(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, len(self.positions)), dtype=np.float32)


def _attention_layers(model: Any) -> list[Any]:
    """The self-attention module of every decoder layer of the language model."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        for name in ("language_model", "text_model", "model"):
            sub = getattr(getattr(model, "model", model), name, None)
            if sub is not None and hasattr(sub, "layers"):
                layers = sub.layers
                break
    if layers is None:
        return []
    return [getattr(layer, "self_attn", None) for layer in layers if getattr(layer, "self_attn", None) is not None]


def image_grid(
    n_positions: int, inputs: dict[str, Any], config: Any, merge_size: int | None = None, tile_tokens: int | None = None
) -> tuple[tuple[int, int], np.ndarray]:
    """(rows, cols) of the image grid for this architecture, and which of the ``n_positions`` to use.

    Qwen-VL: ``image_grid_thw`` patches merged ``merge_size`` x ``merge_size``. LLaVA: a square grid.
    Idefics3: tiles of ``tile_tokens`` each, the global view last (it covers the whole image).
    """
    idx = np.arange(n_positions)
    thw = inputs.get("image_grid_thw")
    if thw is not None:
        t, h, w = (int(x) for x in thw[0])
        m = merge_size or int(getattr(getattr(config, "vision_config", None), "spatial_merge_size", 2) or 2)
        rows, cols = h // m, w // m
        per_frame = rows * cols
        if per_frame and n_positions >= per_frame:
            return (rows, cols), idx[:per_frame]
    if tile_tokens and n_positions > tile_tokens and n_positions % tile_tokens == 0:
        side = math.isqrt(tile_tokens)
        if side * side == tile_tokens:
            return (side, side), idx[-tile_tokens:]
    side = math.isqrt(n_positions)
    if side * side == n_positions:
        return (side, side), idx
    if side * side == n_positions - 1:  # a leading CLS-like token
        return (side, side), idx[1:]
    return (1, n_positions), idx


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
