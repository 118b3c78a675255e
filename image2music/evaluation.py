"""Built-in evaluation: the paper's ablation (full, no-rag, no-refine, none) on any model and images.

Every configuration runs on every image with the same seed. The first configuration runs the whole graph;
the others start from its checkpoint after ``retrieve`` (``runs replay --from compose``), so the
description and the retrieval are shared where they are identical (no-rag configurations get no
references). Objective metrics need no judge; an optional VLM judge asks the paper's questions.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from image2music import prompts as prompt_lib
from image2music.graph import services
from image2music.graph.config import Settings
from image2music.graph.context import RunContext
from image2music.graph.state import State
from image2music.graph.versions import refine_rounds_run
from image2music.outputs import RunResult
from image2music.record import RunRecord
from image2music.resume import replay_run
from image2music.runner import compose_image
from image2music.tools.files import atomic_write_text, safe_name
from image2music.tools.music.metrics import METRICS, MUSPY_METRICS
from image2music.tools.music.targets import mode_agreement, tempo_agreement
from image2music.tools.vlm import VLMError, strip_think

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {},
    "fixed": {"refine_policy": "fixed", "refine_rounds": 1},
    "no-rag": {"top_k": 0},
    "no-refine": {"refine_rounds": 0},
    "none": {"top_k": 0, "refine_rounds": 0},
}
LABELS = {
    "full": "Ours (full)",
    "fixed": "Ours, one fixed round (paper)",
    "no-rag": "w/o RAG",
    "no-refine": "w/o Refinement",
    "none": "w/o RAG, Refinement",
}
QUALITY = ("overall", "melody", "rhythm", "authenticity", "harmony")
CONSISTENCY = ("consistency_overall", "semantics", "emotion")
EvalRow = dict[str, str | int | float | None]
"""One line of results.csv: image, configuration, run, the objective measures and the judge's scores."""

FINAL_METRICS = ("bar_consistency", *MUSPY_METRICS, "duration_seconds")
OBJECTIVE = ("first_try_ok", "ok_within_budget", "attempts", *FINAL_METRICS, "agreement")


class JudgeScores(BaseModel):
    """The paper's questions, scored 1-7."""

    overall: int = Field(ge=1, le=7)
    melody: int = Field(ge=1, le=7)
    rhythm: int = Field(ge=1, le=7)
    authenticity: int = Field(ge=1, le=7)
    harmony: int = Field(ge=1, le=7)
    consistency_overall: int = Field(ge=1, le=7)
    semantics: int = Field(ge=1, le=7)
    emotion: int = Field(ge=1, le=7)


class JudgeError(ValueError):
    """The judge's answer is not the expected structure."""


def parse_judge(text: str) -> JudgeScores:
    """The last JSON object in the answer, validated; JudgeError with what was wrong."""
    visible = strip_think(text)
    objs = re.findall(r"\{[^{}]*\}", visible, re.S)
    if not objs:
        raise JudgeError("no JSON object in the answer")
    try:
        return JudgeScores.model_validate(json.loads(objs[-1]))
    except json.JSONDecodeError as e:
        raise JudgeError(f"not valid JSON: {e.msg}") from e
    except ValidationError as e:
        raise JudgeError(
            "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        ) from e


# --- objective agreement rules ---------------------------------------------------------------------------


def objective_row(rec: RunRecord) -> EvalRow:
    versions = rec.get("versions") or []
    final: dict[str, Any] = dict(rec.get("final") or {})
    metrics = final.get("metrics") or {}
    text = " ".join(x for x in (rec.get("description"), rec.get("motivation")) if x)
    qpm, key = metrics.get("tempo_qpm"), metrics.get("key")
    tempo = tempo_agreement(text, float(qpm) if isinstance(qpm, int | float) else None)
    mode = mode_agreement(text, key if isinstance(key, str) else None)
    known = [x for x in (tempo, mode) if x is not None]
    row: EvalRow = {
        "first_try_ok": float(bool(versions) and bool(versions[0]["ok"])),
        "ok_within_budget": float(bool(final)),
        "attempts": len(versions),
        "agreement_tempo": tempo,
        "agreement_mode": mode,
        "agreement": sum(known) / len(known) if known else None,
    }
    for k in FINAL_METRICS:
        row[k] = metrics.get(k)
    return row


# --- running ---------------------------------------------------------------------------------------------


@dataclass
class Judge:
    """Scores a run's final music with a VLM; its calls go through ``services.ask`` into the run's
    ``vlm_calls.jsonl`` (node ``judge``), so they are recorded and replayable like the run's own."""

    settings: Settings
    """The run's settings with the judge's model."""
    prompt: prompt_lib.Prompt
    retries: int
    calls: dict[str, int] = field(default_factory=dict)
    """Judge calls made so far per run: a run's k-th is its call k (a replay file's k-th judge line, as a
    run's other nodes count theirs)."""

    def score(self, run: RunResult, image: Path, description: str, abc: str) -> tuple[JudgeScores | None, str | None]:
        ctx = RunContext(settings=self.settings, run_id=run.run_id, image_path=Path(image), run_dir=run.run_dir)
        feedback = ""
        last_error = None
        for _ in range(self.retries + 1):
            text = self.prompt.render(abc=abc.strip(), description=description or "", feedback=feedback)
            call = self.calls.get(run.run_id, 0)
            res = services.ask(ctx, "judge", text, call)
            self.calls[run.run_id] = call + 1
            try:
                return parse_judge(res.text), None
            except JudgeError as e:
                last_error = str(e)
                feedback = (
                    f"\nYour previous answer could not be read ({last_error}). Answer with exactly one JSON "
                    "object with the eight integer scores from 1 to 7.\n"
                )
        return None, f"judge answer unusable after {self.retries + 1} attempt(s): {last_error}"


def make_judge(spec: str, settings: Settings, retries: int) -> Judge | None:
    """``none``: no judge; ``self``: the run's model; else a hub id or folder (served: a model of the server)."""
    if spec == "none":
        return None
    prompt = prompt_lib.load("judge")
    if spec != "self":
        from image2music.tools.vlm.backends import backend

        # a named judge is a model of the same server, or a local model (recorded answers hold no other model)
        judge_backend = settings.vlm_backend if not backend(settings.vlm_backend).recorded else "transformers"
        settings = settings.with_overrides(vlm_backend=judge_backend, vlm_model=spec)
    services.get_vlm(settings)  # a judge that cannot load fails before any run starts
    return Judge(settings=settings, prompt=prompt, retries=retries)


def run_eval(
    images: list[Path],
    out_dir: Path,
    settings: Settings,
    *,
    ablation: list[str],
    judge: str = "none",
    judge_retries: int = 2,
    on_row: Callable[[EvalRow], None] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Run every configuration on every image; write results.csv, summary.md and plots. Returns the summary."""
    unknown = [a for a in ablation if a not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}: use {', '.join(CONFIGS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jdg = make_judge(judge, settings, judge_retries)
    rows: list[EvalRow] = []
    # configurations with retrieval run first, so the base run's references can be shared
    order = sorted(ablation, key=lambda c: CONFIGS[c].get("top_k") == 0)
    for img in images:
        name = safe_name(Path(img).stem, default="image")
        base: RunResult | None = None
        for cfg in order:
            run_dir = out_dir / "runs" / name / cfg
            if base is None:
                # the first configuration runs the whole graph; the others reuse its describe and retrieve
                base = compose_image(
                    img, settings.with_overrides(**CONFIGS[cfg]), run_dir=run_dir, notify=lambda m: None
                )
                result = base
            else:
                state: State | None = {"references": []} if CONFIGS[cfg].get("top_k") == 0 else None
                result = replay_run(
                    base.run_id,
                    "compose",
                    settings,
                    run_dir=run_dir,
                    notify=lambda m: None,
                    state_overrides=state,
                    **CONFIGS[cfg],
                )
            rec = result.record
            row: EvalRow = {
                "image": str(img),
                "config": cfg,
                "status": rec["status"],
                "run_id": result.run_id,
                "run_dir": str(result.run_dir),
                "references": len(rec.get("references") or []),
                "reflect_rounds": refine_rounds_run(rec["path"]),
            }
            row.update(objective_row(rec))
            final = rec.get("final")
            if jdg is not None and final:
                try:
                    scores, problem = jdg.score(result, img, rec.get("description") or "", final["abc"])
                except VLMError as e:
                    scores, problem = None, str(e)
                row["judge_error"] = problem
                if scores is not None:
                    row.update(scores.model_dump())
            rows.append(row)
            if on_row is not None:
                on_row(row)
    summary = summarise(rows, ablation)
    write_csv(rows, out_dir / "results.csv")
    errors = [(str(r["image"]), str(r["config"]), str(r["judge_error"])) for r in rows if r.get("judge_error")]
    atomic_write_text(
        out_dir / "summary.md", summary_markdown(summary, ablation, judge != "none", settings.top_k, errors)
    )
    plot(rows, ablation, out_dir)
    return summary


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if v is not None]
    return round(statistics.fmean(nums), 3) if nums else None


def summarise(rows: list[EvalRow], ablation: list[str]) -> dict[str, dict[str, float | None]]:
    """Mean of every metric per configuration (None where nothing was measured)."""
    out: dict[str, dict[str, float | None]] = {}
    for cfg in ablation:
        sub = [r for r in rows if r["config"] == cfg]
        means = {k: _mean([r.get(k) for r in sub]) for k in (*QUALITY, *CONSISTENCY, *OBJECTIVE)}
        q = [means[k] for k in QUALITY]
        c = [means[k] for k in CONSISTENCY]
        means["quality_average"] = round(statistics.fmean(q), 3) if all(x is not None for x in q) else None  # type: ignore[arg-type]
        means["consistency_average"] = round(statistics.fmean(c), 3) if all(x is not None for x in c) else None  # type: ignore[arg-type]
        out[cfg] = means
    return out


def write_csv(rows: list[EvalRow], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    atomic_write_text(path, buf.getvalue())


def _table(
    summary: dict[str, dict[str, float | None]],
    ablation: list[str],
    cols: list[tuple[str, str]],
    higher_is_better: set[str],
) -> str:
    head = "| Method | " + " | ".join(label for _, label in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    best: dict[str, float] = {}
    for key, _ in cols:
        vals = [v for c in ablation if (v := summary[c][key]) is not None]
        if vals and key in higher_is_better and len(set(vals)) > 1:  # all equal: nothing is best
            best[key] = max(vals)
    lines = [head, sep]
    for cfg in ablation:
        cells = []
        for key, _ in cols:
            v = summary[cfg][key]
            text = "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
            if v is not None and key in best and v == best[key] and len(ablation) > 1:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {LABELS.get(cfg, cfg)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(
    summary: dict[str, dict[str, float | None]],
    ablation: list[str],
    judged: bool,
    top_k: int = 1,
    judge_errors: list[tuple[str, str, str]] | None = None,
) -> str:
    parts = ["# Evaluation summary", ""]
    if judge_errors:
        parts += [
            f"> **The judge could not score {len(judge_errors)} run(s)**; their rows have no judge scores "
            "(`judge_error` in results.csv):",
            "",
            *[f"> - {Path(img).name}, {cfg}: {why}" for img, cfg, why in judge_errors[:10]],
            "",
        ]
    if top_k <= 0 and {"full", "no-rag"} & set(ablation):
        parts += [
            "> **The RAG comparison is empty:** with `--top-k 0` no configuration retrieves references, so `full`"
            " and `no-rag` (and `no-refine` and `none`) run the same setting; their rows can only differ by chance.",
            "",
        ]
    if judged:
        cols = [(k, k.replace("_", " ").title()) for k in QUALITY] + [("quality_average", "Average")]
        cols += [
            ("consistency_overall", "Overall"),
            ("semantics", "Semantics"),
            ("emotion", "Emotion"),
            ("consistency_average", "Average"),
        ]
        judge_keys = {k for k, _ in cols}
        parts += [
            "## VLM judge (1–7; as the paper's Table II)",
            "",
            "Columns 1–6: music quality; 7–10: music-image consistency. Mean per configuration, best in bold.",
            "",
            _table(summary, ablation, cols, judge_keys),
            "",
        ]
    obj_cols = [
        ("first_try_ok", "Parse ok 1st try"),
        ("ok_within_budget", "Ok within budget"),
        ("attempts", "Attempts"),
        ("bar_consistency", METRICS["bar_consistency"].label),
        ("agreement", "Text-ABC agreement"),
        *((n, METRICS[n].label) for n in ("scale_consistency", "pitch_class_entropy", "empty_beat_rate")),
        ("duration_seconds", METRICS["duration_seconds"].label),
    ]
    parts += [
        "## Objective metrics (no judge)",
        "",
        "Mean per configuration; bold marks the best where higher is better (parse success, bar consistency,"
        " agreement). The MusPy metrics are style-dependent: reported, not ranked.",
        "",
        _table(summary, ablation, obj_cols, {"first_try_ok", "ok_within_budget", "bar_consistency", "agreement"}),
        "",
        "Agreement rules: tempo words in the description or motivation (slow, calm, adagio ... vs fast, lively,"
        " allegro ...) must match Q: (< 90 vs >= 110 quarter notes per minute); mood words (minor, sad, dark ..."
        " vs major, bright, happy ...) must match the mode of K: (m, dor, phr, aeo, loc count as minor)."
        " Texts that name neither, or both, are not scored.",
        "",
    ]
    return "\n".join(parts)


def plot(rows: list[EvalRow], ablation: list[str], out_dir: Path) -> list[Path]:
    """Box plots of the metric distributions per configuration (matplotlib, Agg)."""
    from image2music.tools.music.metrics import scratch_caches

    scratch_caches()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        k
        for k in (
            "bar_consistency",
            "scale_consistency",
            "pitch_entropy",
            "pitch_class_entropy",
            "empty_beat_rate",
            "duration_seconds",
            "overall",
            "consistency_overall",
        )
        if any(r.get(k) is not None for r in rows)
    ]
    if not keys:
        return []
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        data = [
            [float(v) for r in rows if r["config"] == c and isinstance(v := r.get(key), int | float)] for c in ablation
        ]
        ax.boxplot([d if d else [float("nan")] for d in data])
        ax.set_xticks(range(1, len(ablation) + 1), ablation, rotation=30, fontsize=8)
        ax.set_title(key.replace("_", " "), fontsize=9)
    fig.tight_layout()
    path = out_dir / "metrics.png"
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from image2music.tools.files import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())
    return [path]
