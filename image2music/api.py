"""The Python API, stable for notebooks and scripts.

from image2music import compose
result = compose("photo.jpg", vlm_model="Qwen/Qwen3-VL-4B-Instruct", refine_rounds=2)
print(result.status, result.abc)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image2music.graph.config import load_settings
from image2music.outputs import RunResult
from image2music.record import RunRecord
from image2music.runner import compose_image
from image2music.tools.music.metrics import Metrics


@dataclass(frozen=True)
class Result:
    """A finished run: status, the final music and where its files are."""

    run_id: str
    run_dir: Path
    status: str
    reason: str | None
    description: str | None
    abc: str | None
    metrics: Metrics | None
    motivation: str | None
    files: dict[str, Path]
    record: RunRecord

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def midi(self) -> Path | None:
        return self.files.get("midi")

    @classmethod
    def from_run(cls, run: RunResult) -> Result:
        rec = run.record
        final: dict[str, Any] = dict(rec.get("final") or {})
        return cls(
            run_id=run.run_id,
            run_dir=run.run_dir,
            status=rec["status"],
            reason=rec.get("reason"),
            description=rec.get("description"),
            abc=final.get("abc"),
            metrics=final.get("metrics"),
            motivation=rec.get("motivation"),
            files={k: run.run_dir / v for k, v in run.files.items()},
            record=rec,
        )


def compose(
    image: str | Path,
    *,
    output: str | Path | None = None,
    prompts: dict[str, str | Path] | None = None,
    user_feedback: str | None = None,
    on_text: Callable[[str, str], None] | None = None,
    **settings: Any,
) -> Result:
    """Turn ``image`` into music. ``settings`` are any Settings fields (e.g. ``vlm_model``, ``refine_rounds``,
    ``top_k``) on top of the environment and ``.env``. ``on_text(node, piece)`` receives each model answer as it
    is written (``compose``, ``reflect`` ...; the pieces of one call make its answer).

    Raises ``image2music.tools.errors.InputError`` for refused
    input and ``image2music.tools.errors.RunError`` when a model or the knowledge base cannot be used; a run that fails
    returns a Result with ``status == "failed"`` and a ``reason``.
    """
    s = load_settings(**settings)
    run = compose_image(
        image,
        s,
        run_dir=Path(output) if output is not None else None,
        prompt_overrides={k: Path(v) for k, v in (prompts or {}).items()},
        notify=lambda m: None,
        user_feedback=user_feedback,
        on_text=on_text,
    )
    return Result.from_run(run)
