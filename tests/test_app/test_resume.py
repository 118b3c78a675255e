"""image2music.resume as units: what a resumed or replayed run takes from its record (the whole runs are in
test_reliability.py, test_runs.py and test_swap.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from image2music.graph.config import load_settings
from image2music.resume import predecessor, recorded_calls, scrub_url, stored_settings
from image2music.rundb import RunInfo, public_settings
from image2music.tools.errors import InputError


def test_a_replay_takes_each_nodes_first_recorded_calls_and_skips_junk(tmp_path: Path) -> None:
    lines = [{"node": "describe", "text": "d1"}, {"node": "compose", "text": "c1"}, {"node": "compose", "text": "c2"},
             {"node": "reflect", "text": "r1"}]  # fmt: skip
    text = (
        "\n".join(json.dumps(x) for x in lines[:2])
        + "\nnot json\n[1, 2]\n"
        + "\n".join(json.dumps(x) for x in lines[2:])
    )
    (tmp_path / "vlm_calls.jsonl").write_text(text + "\n")
    kept = [json.loads(x)["text"] for x in recorded_calls(tmp_path, {"describe": 1, "compose": 1}).splitlines()]
    assert kept == ["d1", "c1"]  # up to the replayed node's checkpoint: compose's second call is made again
    assert recorded_calls(tmp_path / "nowhere", {"describe": 1}) == ""


def test_a_replay_starts_only_where_the_graph_has_an_edge() -> None:
    assert predecessor([], "describe") is None
    assert predecessor(["describe", "retrieve"], "compose") == "retrieve"
    with pytest.raises(InputError, match="went describe -> explain, which this graph cannot replay"):
        predecessor(["describe"], "explain")


def test_a_resumed_run_keeps_its_settings_and_takes_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database keeps public settings (no key, URLs without credentials); a resume takes them, the key and
    a URL's credentials from the environment when the URL is the same, then the command's overrides."""
    started = load_settings(
        vlm_backend="openai", vlm_base_url="https://user:pw@models.example/v1", vlm_model="m", refine_rounds=3
    )
    info = RunInfo("r1", Path("/runs/r1"), "/img.png", 0.0, "cancelled", public_settings(started), {})
    assert "pw" not in json.dumps(info.settings)
    monkeypatch.setenv("I2M_VLM_API_KEY", "sk-now")
    here = load_settings(vlm_base_url="https://user:pw@models.example/v1", refine_rounds=1)
    s = stored_settings(info, here, {"temperature": 0.3})
    assert s.refine_rounds == 3 and s.temperature == 0.3 and s.vlm_model == "m"  # the run's, then the override
    assert s.vlm_base_url == "https://user:pw@models.example/v1" and s.secret_values()  # credentials from here
    elsewhere = load_settings(vlm_base_url="https://user:pw@other.example/v1")
    assert "pw" not in str(stored_settings(info, elsewhere, {}).vlm_base_url)  # another server's are not lent


def test_urls_are_shown_without_credentials() -> None:
    assert scrub_url("https://user:pw@h.example:8443/v1") == "https://h.example:8443/v1"
    assert scrub_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
    assert scrub_url("not a url [") == "not a url ["
