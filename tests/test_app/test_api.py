"""image2music.api: ``compose()`` and its Result."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import replay_run

from image2music import Result, compose


def test_python_api(tmp_path: Path, image_path: Path) -> None:
    res = compose(image_path, output=tmp_path / "api", vlm_backend="replay", replay_file=replay_run(tmp_path), top_k=0)
    assert isinstance(res, Result) and res.ok and res.abc and "Calm Harbour" in res.abc
    assert res.midi is not None and res.midi.exists() and res.metrics and res.metrics["pitch_range"] == 20
    assert res.motivation == "Calm."


def test_python_api_streams_each_answer_as_it_is_written(tmp_path: Path, image_path: Path) -> None:
    """``on_text(node, piece)``: every model call's text arrives in pieces, node by node, in the run's order; the
    record (vlm_calls.jsonl) holds whole answers, once each."""
    pieces: list[tuple[str, str]] = []
    replay = replay_run(tmp_path)
    res = compose(
        image_path, output=tmp_path / "api", vlm_backend="replay", replay_file=replay, top_k=0,
        on_text=lambda node, piece: pieces.append((node, piece)),
    )  # fmt: skip
    assert res.ok
    calls = [json.loads(line) for line in (tmp_path / "api" / "vlm_calls.jsonl").read_text().splitlines()]
    nodes = [c["node"] for c in calls]
    assert [n for i, (n, _) in enumerate(pieces) if i == 0 or pieces[i - 1][0] != n] == nodes
    for node in set(nodes):
        shown = "".join(p for n, p in pieces if n == node)
        assert shown == "".join(c["text"] for c in calls if c["node"] == node)
    assert len(pieces) > len(calls)  # pieces, not whole answers


def test_a_result_is_made_from_the_run_alone(tmp_path: Path) -> None:
    """Unit: Result.from_run reads the record and the files (made absolute in the run folder); a failed run has
    no music and says why."""
    from image2music.outputs import RunResult

    rec = {"run_id": "r1", "status": "ok", "reason": None, "description": "a harbour", "motivation": "calm",
           "final": {"version": 2, "abc": "X:1\nK:C\nC|]\n", "metrics": {"pitch_range": 3}}}  # fmt: skip
    res = Result.from_run(RunResult(run_id="r1", run_dir=tmp_path, record=rec, files={"midi": "music.mid"}))  # type: ignore[arg-type]
    assert res.ok and res.abc == "X:1\nK:C\nC|]\n" and res.metrics == {"pitch_range": 3}
    assert res.midi == tmp_path / "music.mid" and res.description == "a harbour" and res.motivation == "calm"
    failed = {"run_id": "r2", "status": "failed", "reason": "no valid ABC", "final": None}
    res = Result.from_run(RunResult(run_id="r2", run_dir=tmp_path, record=failed))  # type: ignore[arg-type]
    assert not res.ok and res.abc is None and res.midi is None and res.reason == "no valid ABC"
