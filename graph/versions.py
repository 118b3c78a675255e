"""Versions and steps: which version to keep, what a writer is told after a failed check, and how the steps
of a run are labelled (retries and refine rounds). One implementation, used by nodes, outputs, progress,
drawing and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from image2music.graph.state import FinalVersion, Version
from image2music.tools.music.findings import Finding


def best_version(versions: Sequence[Version]) -> Version | None:
    """The version to keep: valid first, then fewest warnings, then the latest."""
    if not versions:
        return None
    _, best = max(enumerate(versions), key=lambda iv: (bool(iv[1]["ok"]), -len(iv[1]["warnings"]), iv[0]))
    return best


def final_version(best: Version) -> FinalVersion:
    """The chosen version as the state and run.json hold it (``version`` 1-based)."""
    index, title, metrics = best["index"], best.get("title"), best.get("metrics")
    return {"version": index + 1, "abc": best["abc"], "title": title, "metrics": metrics}


def latest_valid(versions: Sequence[Version]) -> Version | None:
    """The newest version that passed the check, or None."""
    for v in reversed(versions):
        if v["ok"]:
            return v
    return None


def refine_base(versions: Sequence[Version], policy: str = "feedback") -> Version | None:
    """The version a reflect round revises: the latest valid one (fixed policy, as in the paper), or the
    best-scoring valid one (feedback policy; the latest among equals), so a round that made things worse is
    not built on."""
    if policy == "fixed":
        return latest_valid(versions)
    valid = [v for v in versions if v["ok"]]
    if not valid:
        return None
    return max(reversed(valid), key=lambda v: (v.get("score") is not None, v.get("score") or 0.0))


def render_findings(findings: Sequence[Any], limit: int = 20) -> str:
    """Findings as a bulleted list for a prompt (at most ``limit`` lines)."""
    lines = [f"- {Finding.from_dict(f).render()}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"- ... and {len(findings) - limit} more")
    return "\n".join(lines)


def retry_feedback(version: Version) -> str:
    """What a writer is told after its answer failed the check."""
    abc = version["abc"].strip()
    shown = f"\n```abc\n{abc}\n```\n" if abc else "\n(no ABC was found in your answer)\n"
    return (
        "\nYour previous answer could not be used. It was:"
        + shown
        + "The checker reported these errors:\n"
        + render_findings(version["errors"])
        + "\nWrite the complete tune again with these errors fixed.\n"
    )


@dataclass(frozen=True)
class Step:
    """One entry of a run's path, labelled."""

    number: int
    node: str
    seconds: float
    round: int
    """Refine round this step belongs to (0 before the first reflect)."""
    retry: int
    """0 for a writer's first answer in its round; n for its n-th retry after parse errors."""

    @property
    def label(self) -> str:
        """e.g. ``retry 1``, ``round 2``, ``round 2, retry after parse errors`` ('' when nothing to say)."""
        if self.node == "compose":
            return f"retry {self.retry}" if self.retry else ""
        if self.node == "reflect":
            return f"round {self.round}, retry after parse errors" if self.retry else f"round {self.round}"
        return ""


def steps(path: Sequence[str], timings: Sequence[float] = ()) -> list[Step]:
    """Label the steps of a run: a writer that follows ``parse_check`` is a retry; a reflect that follows
    anything else (evaluate, or explain for a person's extra round) starts a new refine round."""
    out: list[Step] = []
    rnd = retry = 0
    for i, node in enumerate(path):
        prev = path[i - 1] if i else None
        if node in ("compose", "reflect"):
            if prev == "parse_check":
                retry += 1
            else:
                retry = 0
                if node == "reflect":
                    rnd += 1
        secs = float(timings[i]) if i < len(timings) else 0.0
        out.append(Step(number=i + 1, node=node, seconds=secs, round=rnd, retry=retry))
    return out


def refine_rounds_run(path: Sequence[str]) -> int:
    """How many refine rounds a run started (parse retries inside a round are not rounds)."""
    return max((s.round for s in steps(path)), default=0)
