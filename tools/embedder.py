"""CLIP-family embeddings of images and texts (LongCLIP: 248 text positions, plain CLIP: 77)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from image2music.tools.errors import RunError
from image2music.tools.vlm.hf import load_error, pick_device


class EmbedderError(RunError):
    """The embedding model could not be loaded or used."""


def model_location(model_id: str) -> str:
    """Where an embedding model's files are (a folder, a cached snapshot), or its hub id when the hub can be
    reached; ModelNotFound (saying how to get it) when it is absent. Decided without importing torch or
    transformers: the retriever asks before opening the base, the loader asks again (cached)."""
    from image2music.tools.models import resolve_model

    return resolve_model(model_id, "embedding model", "I2M_EMBED_MODEL", "--embed-model")


class ClipEmbedder:
    """Unit-length embeddings from a ``CLIPModel`` checkpoint (hub id or local folder)."""

    def __init__(self, model_id: str, device: str = "auto", batch_size: int = 32) -> None:
        from image2music.tools.models import ModelNotFound

        # whether the model is there (a folder, the Hugging Face cache, the hub when online) is decided before
        # torch and transformers are imported: an absent model costs no import time
        try:
            where = model_location(model_id)
        except ModelNotFound as e:
            raise EmbedderError(str(e)) from e
        import torch
        from transformers import AutoProcessor, CLIPModel

        self.model_id = model_id
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.truncated = 0
        try:
            self.processor = AutoProcessor.from_pretrained(where)
            self.model = CLIPModel.from_pretrained(where)
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise EmbedderError(load_error("embedding model", model_id, "I2M_EMBED_MODEL", "--embed-model", e)) from e
        model: Any = self.model
        model.to(self.device).eval()
        self._torch = torch
        self.max_positions = int(model.config.text_config.max_position_embeddings)
        self.dim = int(model.config.projection_dim)

    @staticmethod
    def _features(out: Any) -> Any:
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def _normalise(self, x: Any) -> np.ndarray:
        arr = x.float().cpu().numpy()
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        return arr / np.maximum(norms, 1e-12)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """[n, dim] unit vectors; texts longer than the model's positions are truncated (counted)."""
        torch = self._torch
        tok = self.processor.tokenizer
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[i : i + self.batch_size]]
            full = tok(batch, truncation=False, verbose=False)["input_ids"]
            self.truncated += sum(1 for ids in full if len(ids) > self.max_positions)
            enc = tok(batch, padding=True, truncation=True, max_length=self.max_positions, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                out.append(self._normalise(self._features(self.model.get_text_features(**enc))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        torch = self._torch
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            enc = self.processor.image_processor(images=batch, return_tensors="pt")
            with torch.inference_mode():
                feats = self.model.get_image_features(pixel_values=enc["pixel_values"].to(self.device))
            out.append(self._normalise(self._features(feats)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


_CACHE: dict[tuple[str, str], ClipEmbedder] = {}
_LOCK = threading.Lock()


def get_embedder(model_id: str, device: str = "auto") -> ClipEmbedder:
    """The embedder for ``model_id``, loaded once per process."""
    with _LOCK:
        key = (model_id, device)
        if key not in _CACHE:
            _CACHE[key] = ClipEmbedder(model_id, device=device)
        return _CACHE[key]
