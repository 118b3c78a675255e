"""Capture where a local model looks: stream the attention of generated tokens to the image and map it back
to the image grid.

Instead of keeping every ``output_attentions`` tensor of every generation step (as the paper's reference
code does), each decoder attention layer, at each decoding step, gives only the new token's attention to the
image positions, averaged over heads; layers are averaged as they arrive. Memory is O(tokens x image
positions), and the model keeps its own fused attention for its output.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

CAPTURE_PREFIX = "i2m-capture:"
"""Attention implementations registered with transformers: ``i2m-capture:sdpa`` runs ``sdpa`` for the output
(so tokens are the model's own) and adds the image columns of the new token's attention row."""

_ACTIVE: dict[int, AttentionRecorder] = {}
"""id(attention module) -> the recorder capturing it (one generate at a time per model: the VLM holds a lock)."""
_REGISTER = threading.Lock()


class AttentionRecorder:
    """Records, for each generated token after the first, its attention to the image positions, averaged over
    heads and over the layers whose keys hold the image.

    With a fused implementation (sdpa, flash, flex), the decoder's attention calls go through
    ``i2m-capture:<impl>``: the output is ``<impl>``'s own, and for a one-token query the recorder computes the
    query's softmax row over all keys (the normalisation the model uses: scaling, mask, soft-capping) and keeps
    its image columns -- one extra query row per layer, no switch to eager, no weights materialised. A model
    already running eager attention returns its weights; a forward hook reads their last row.
    The prompt pass has no row: the first generated token (produced by the prompt pass) has none.
    """

    def __init__(self, model: Any, image_positions: np.ndarray, prompt_len: int | None = None) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.positions = torch.as_tensor(image_positions, dtype=torch.long)
        self._first = int(image_positions[0]) if len(image_positions) else 0
        self._last = int(image_positions[-1]) if len(image_positions) else -1
        self.prompt_len = prompt_len
        self.layers = _attention_layers(model)
        self.rows: list[Any] = []
        self._acc: dict[int, list[Any]] = {}
        self._step_calls = 0
        self._steps = 0
        self._handles: list[Any] = []
        self._config: Any = None
        self._previous: str | None = None

    def __enter__(self) -> AttentionRecorder:
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        config = getattr(decoder, "config", None) or self.model.config
        previous = getattr(config, "_attn_implementation", None)
        if previous and previous != "eager" and not previous.startswith(CAPTURE_PREFIX):
            self._config, self._previous = config, previous
            config._attn_implementation_internal = _capture_key(previous)
            for layer in self.layers:
                _ACTIVE[id(layer)] = self
        else:
            for layer in self.layers:
                self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for layer in self.layers:
            if _ACTIVE.get(id(layer)) is self:
                del _ACTIVE[id(layer)]
        if self._config is not None:
            self._config._attn_implementation_internal = self._previous
            self._config = None

    # eager models: the weights come out of the layer
    def _hook(self, module: Any, args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None or weights.shape[-2] != 1:
            return  # the prompt pass: no row
        self._add(weights[0, :, -1, :].to(dtype=self._torch.float32, copy=True))  # summed into: never the model's

    # fused models: one softmax row of the new token over all keys
    def capture(self, query: Any, key: Any, mask: Any, scaling: Any, softcap: Any, window: Any) -> None:
        torch = self._torch
        if query.shape[-2] != 1:
            return  # the prompt pass: no row
        heads, dim = query.shape[1], query.shape[-1]
        kv_heads, k_len = key.shape[1], key.shape[-2]
        # grouped-query attention without repeating the keys: [kv, group, d] x [kv, d, k], times the scale after
        # the product as eager attention does
        q = query[0, :, 0, :].reshape(kv_heads, heads // kv_heads, dim)
        scale = float(scaling) if scaling is not None else dim**-0.5
        scores = torch.matmul(q, key[0].transpose(-1, -2)).mul_(scale).reshape(heads, k_len)
        if scores.dtype != torch.float32:
            scores = scores.float()  # as eager attention: the softmax in float32
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if isinstance(mask, torch.Tensor):
            # sdpa: [b, 1, q, k] (bool: True attends; float: added); flash: [b, k] padding (1 attends)
            m = mask[:1].reshape(1, -1, mask.shape[-1])[:, -1, :k_len]
            if m.is_floating_point():
                scores = scores + m.float()
            else:
                scores = scores.masked_fill(~m.bool(), float("-inf"))
        if window is not None and k_len > window and (not isinstance(mask, torch.Tensor) or mask.dim() == 2):
            scores[:, : k_len - int(window)] = float("-inf")  # no 4-D mask: the kernel keeps the last `window` keys
        self._add(torch.softmax(scores, dim=-1))

    def _add(self, probs: Any) -> None:
        """``probs`` [heads, keys]: one layer's attention of the token being generated at this step. Summed per key
        length (layers with a sliding window or chunks hold fewer keys) and reduced to the image once per step."""
        self._step_calls += 1
        k_len = int(probs.shape[-1])
        acc = self._acc.get(k_len)
        if acc is None:
            self._acc[k_len] = [probs, 1]
        else:
            acc[0] += probs
            acc[1] += 1
        if self._step_calls == len(self.layers):
            self._flush()

    def _flush(self) -> None:
        if self._step_calls:
            # exactly one row per generated token; zeros when no layer could see the image at this step
            total_sum, layers = None, 0
            for k_len, (acc, n) in self._acc.items():
                # a layer with a window holds the last k_len positions: key j is absolute position offset + j
                total = self.prompt_len + self._steps + 1 if self.prompt_len is not None else k_len
                offset = max(0, total - k_len)
                if self._last < 0 or self._first - offset < 0 or self._last - offset >= k_len:
                    continue  # only layers whose window holds the image count
                if self.positions.device != acc.device:
                    self.positions = self.positions.to(acc.device)
                vec = acc.mean(dim=0).index_select(0, self.positions - offset if offset else self.positions)
                total_sum = vec if total_sum is None else total_sum + vec
                layers += n
            if total_sum is None:
                total_sum, layers = self._torch.zeros(len(self.positions), device=self.positions.device), 1
            self.rows.append(total_sum / layers)
            self._steps += 1
        self._acc = {}
        self._step_calls = 0

    def result(self) -> np.ndarray:
        if not self.rows:
            return np.zeros((0, len(self.positions)), dtype=np.float32)
        return self._torch.stack(self.rows).cpu().numpy()


def _attention_layers(model: Any) -> list[Any]:
    """The self-attention module of every decoder layer of the language model."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    # the decoder itself, or the base model inside it (Llama 4's decoder is a causal LM: its layers are in .model)
    layers = getattr(decoder, "layers", None) or getattr(getattr(decoder, "model", None), "layers", None)
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


def _capture_key(previous: str) -> str:
    """Register (once) ``i2m-capture:<previous>`` with transformers' attention and mask interfaces."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    key = CAPTURE_PREFIX + previous
    with _REGISTER:
        if key not in ALL_ATTENTION_FUNCTIONS:

            def attention(module: Any, query: Any, keys: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
                # looked up at each call: the model's own implementation computes the output
                out = ALL_ATTENTION_FUNCTIONS[previous](module, query, keys, value, attention_mask, **kwargs)
                recorder = _ACTIVE.get(id(module))
                if recorder is not None:
                    recorder.capture(query, keys, attention_mask, kwargs.get("scaling"),
                                     kwargs.get("softcap"), kwargs.get("sliding_window"))  # fmt: skip
                return out

            AttentionInterface.register(key, attention)
            AttentionMaskInterface.register(key, ALL_MASK_ATTENTION_FUNCTIONS[previous])
    return key
