"""Multimodal retrieval: top-k by image and top-k by description, merged without duplicates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from image2music.tools.embedder import ClipEmbedder
from image2music.tools.kb.store import KnowledgeBase


def retrieve(
    kb: KnowledgeBase,
    embedder: ClipEmbedder,
    image: Image.Image | None,
    description: str | None,
    k: int,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """References ``{id, caption, abc, score, via, metadata}``; ``via`` is image, text or both.

    A hit found by both queries keeps the higher score. Sorted by score, best first.
    """
    if k <= 0:
        return []
    merged: dict[str, dict[str, Any]] = {}
    queries = []
    if image is not None:
        queries.append(("image", embedder.embed_images([image])[0]))
    if description:
        queries.append(("text", embedder.embed_texts([description])[0]))
    for via, vec in queries:
        for h in kb.query(vec, k):
            if threshold is not None and h.score < threshold:
                continue
            if h.id in merged:
                ref = merged[h.id]
                ref["via"] = "both" if ref["via"] != via else via
                ref["score"] = max(ref["score"], h.score)
            else:
                merged[h.id] = {
                    "id": h.id,
                    "caption": h.caption,
                    "abc": h.abc,
                    "score": h.score,
                    "via": via,
                    "metadata": h.metadata,
                }
    return sorted(merged.values(), key=lambda r: -r["score"])


def format_examples(refs: Sequence[Mapping[str, Any]], max_chars: int) -> str:
    """The references as prompt text; an ABC longer than ``max_chars`` is shown as a bar-aligned excerpt
    (the header and the first whole bars of every voice that fits), and the prompt says so."""
    from image2music.tools.music.excerpt import excerpt
    from image2music.tools.music.midi2abc import KB_LIMITS

    if not refs:
        return "(no reference music is available; rely on your own knowledge of ABC notation)"
    parts = []
    for n, r in enumerate(refs, start=1):
        ex = excerpt(str(r["abc"]), max_chars, KB_LIMITS)
        what = "" if ex.whole else f" ({ex.describe()})"
        music = f"\n```abc\n{ex.abc.strip()}\n```" if ex.abc else ""
        parts.append(f"Reference {n}{what}: {r['caption']}{music}")
    return "\n\n".join(parts)
