"""Capture where a local model looks: stream the attention of generated tokens to the image and map it back
to the image grid.

Instead of keeping every ``output_attentions`` tensor of every generation step (as the paper's reference
code does), a forward hook on each decoder attention layer keeps, for each new token, only its attention to
the image positions averaged over heads; layers are averaged as they arrive. Memory is O(tokens x image
positions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class AttentionRecorder:
    """Forward hooks on the language model's attention layers that accumulate attention to the image.

    The prompt pass runs with the model's own (fused, memory-light) attention; from the first decoding step
    on, the model switches to eager attention, whose weights for one new query row are tiny. So the prompt
    pass never materialises a full attention matrix, and only one vector per generated token is kept.
    The first generated token (produced by the prompt pass) therefore has no row.
    """

    def __init__(self, model: Any, image_positions: np.ndarray, prompt_len: int | None = None) -> None:
        import torch

        self.model = model
        self.positions = torch.as_tensor(image_positions, dtype=torch.long)
        self.prompt_len = prompt_len
        self.layers = _attention_layers(model)
        self.rows: list[Any] = []
        self._step_sum: Any = None
        self._step_layers = 0
        self._step_calls = 0
        self._steps = 0
        self._handles: list[Any] = []
        self._previous: str | None = None
        self._switched = False

    def __enter__(self) -> AttentionRecorder:
        self._previous = getattr(self.model.config, "_attn_implementation", None)
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        if decoder is not None and self._previous != "eager":
            self._handles.append(decoder.register_forward_pre_hook(self._maybe_switch, with_kwargs=True))
        elif self._previous == "eager":
            self._switched = True
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._switched and self._previous and self._previous != "eager":
            self.model.set_attn_implementation(self._previous)

    def _maybe_switch(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        if not self._switched and x is not None and x.shape[1] == 1:
            self.model.set_attn_implementation("eager")
            self._switched = True

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            return  # the prompt pass (fused attention): no weights, no row
        self._step_calls += 1
        # [batch, heads, q, k]: the last query row is the token being generated at this step. A sliding-window
        # or chunked layer returns weights over its window only: key j is absolute position offset + j.
        last = weights[0, :, -1, :]
        k_len = int(last.shape[-1])
        total = self.prompt_len + self._steps + 1 if self.prompt_len is not None else k_len
        offset = max(0, total - k_len)
        if self.positions.device != last.device:
            self.positions = self.positions.to(last.device)
        inside = self.positions - offset
        if self.positions.numel() and int(inside[0]) >= 0 and int(inside[-1]) < k_len:
            vec = last.index_select(-1, inside).float().mean(dim=0)
            self._step_sum = vec if self._step_sum is None else self._step_sum + vec
            self._step_layers += 1  # only layers whose window holds the image count
        if self._step_calls == len(self.layers):
            self._flush()

    def _flush(self) -> None:
        if self._step_calls:
            import torch

            # exactly one row per generated token; zeros when no layer could see the image at this step
            zeros = torch.zeros(len(self.positions), device=self.positions.device)
            row = self._step_sum / self._step_layers if self._step_layers else zeros
            self.rows.append(row)
            self._steps += 1
        self._step_sum = None
        self._step_layers = 0
        self._step_calls = 0

    def result(self) -> np.ndarray:
        if not self.rows:
            return np.zeros((0, len(self.positions)), dtype=np.float32)
        import torch

        return torch.stack(self.rows).cpu().numpy()


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
    n_positions: int,
    inputs: dict[str, Any],
    config: Any,
    merge_size: int | None = None,
    tile_tokens: int | None = None,
    image_size: tuple[int, int] | None = None,
) -> tuple[tuple[int, int], np.ndarray] | None:
    """(rows, cols) of the image grid for this architecture, and which of the ``n_positions`` to use; None
    when the layout is not known (a 1 x N strip would be meaningless, so there is no map).

    Qwen-VL / GLM-4V: ``image_grid_thw`` patches merged ``merge_size`` x ``merge_size``. Mistral3 / Pixtral:
    ``image_sizes`` // (patch x spatial merge) rows of columns (the ``[IMG_BREAK]`` separators are not image
    tokens). LLaVA-NeXT / OneVision: the base view (a square of ``image_size // patch_size`` per side) comes
    first, then high-resolution tiles with a newline token per row: the base view is the map. Idefics3 /
    SmolVLM / InternVL: tiles of ``tile_tokens`` each, in rows, then the global view; the tiles are stitched
    into one grid (rows x cols chosen to match the image's aspect), else the global view is used. LLaVA-1.5,
    Gemma 3, PaliGemma: a square grid.
    """
    idx = np.arange(n_positions)
    vision = getattr(config, "vision_config", None)
    sizes = inputs.get("image_sizes")
    merge = getattr(config, "spatial_merge_size", None)
    patch = getattr(vision, "patch_size", None)
    if sizes is not None and merge and patch:  # Mistral3 / Pixtral
        h, w = (int(x) for x in sizes[0])
        rows, cols = h // (int(patch) * int(merge)), w // (int(patch) * int(merge))
        if rows * cols == n_positions and rows and cols:
            return (rows, cols), idx
    if sizes is not None and str(getattr(config, "model_type", "")).startswith(("llava_next", "llava_onevision")):
        side = int(getattr(vision, "image_size", 0) or 0) // int(patch or 1)
        if side and n_positions > side * side:
            return (side, side), idx[: side * side]
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
            tiles = n_positions // tile_tokens - 1  # the tiles, then the global view
            shape = _tile_layout(tiles, image_size)
            if shape is None:
                return (side, side), idx[-tile_tokens:]
            rows, cols = shape
            order = np.empty(tiles * tile_tokens, dtype=int)
            width = cols * side
            for r in range(rows):
                for c in range(cols):
                    for i in range(side):
                        for j in range(side):
                            order[(r * side + i) * width + c * side + j] = (r * cols + c) * tile_tokens + i * side + j
            return (rows * side, cols * side), order
    side = math.isqrt(n_positions)
    if side * side == n_positions:
        return (side, side), idx
    if side * side == n_positions - 1:  # a leading CLS-like token
        return (side, side), idx[1:]
    return None


def _tile_layout(tiles: int, image_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """(rows, cols) with rows * cols == tiles whose shape best matches the image (width, height)."""
    if tiles < 1:
        return None
    options = [(r, tiles // r) for r in range(1, tiles + 1) if tiles % r == 0]
    if image_size is None:
        return None if len(options) > 1 and tiles > 1 else options[0]
    w, h = image_size
    return min(options, key=lambda rc: abs(math.log((rc[1] / rc[0]) / (w / h))))
