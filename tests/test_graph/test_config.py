"""Settings from env, .env and flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from image2music.graph.config import Settings, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("I2M_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = Settings()
    assert s.home == tmp_path / "xdg" / "image2music"
    assert s.vlm_backend == "transformers" and s.embed_model == "zer0int/LongCLIP-GmP-ViT-L-14"
    assert (s.max_parse_retries, s.refine_rounds, s.top_k, s.refine_policy) == (3, 2, 1, "feedback")


def test_env_dotenv_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Path(".env").write_text("I2M_REFINE_ROUNDS=3\nI2M_TOP_K=3\n")
    monkeypatch.setenv("I2M_TOP_K", "4")
    s = load_settings(max_parse_retries=5)
    assert (s.refine_rounds, s.top_k, s.max_parse_retries) == (3, 4, 5)


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I2M_VLM_BACKEND", "magic")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("I2M_VLM_BACKEND")
    from image2music.tools.errors import InputError

    with pytest.raises(InputError, match="I2M_REFINE_ROUNDS"):
        load_settings(refine_rounds=-1)


def test_env_example_documents_every_setting() -> None:
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"I2M_{name.upper()}" in text, name


def test_per_node_generation_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from image2music.graph.context import RunContext

    monkeypatch.setenv("I2M_NODE_GENERATION", '{"describe": {"temperature": 0.1}, "compose": {"max_new_tokens": 99}}')
    s = load_settings(temperature=0.7, max_new_tokens=500, describe_max_new_tokens=64)
    ctx = RunContext(settings=s, run_id="r", image_path=tmp_path / "i.png", run_dir=tmp_path)
    d, c, r = ctx.generation("describe"), ctx.generation("compose"), ctx.generation("reflect")
    assert (d.temperature, d.max_new_tokens) == (0.1, 64)
    assert (c.temperature, c.max_new_tokens) == (0.7, 99)
    assert (r.temperature, r.max_new_tokens) == (0.7, 500)
    monkeypatch.setenv("I2M_NODE_GENERATION", '{"composer": {"temperature": 0.1}}')
    with pytest.raises(ValidationError, match="unknown node 'composer'"):
        Settings()


def test_the_network_guard_refuses_non_loopback() -> None:
    import socket

    s = socket.socket()
    try:
        with pytest.raises(AssertionError, match="network connection"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_typos_in_settings_are_caught(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from image2music import compose
    from image2music.graph import config
    from image2music.tools.errors import InputError

    with pytest.raises(InputError, match="unknown setting 'vlm_bakend'; did you mean 'vlm_backend'"):
        compose("x.png", vlm_bakend="replay")
    monkeypatch.setattr(config, "_WARNED", set())
    monkeypatch.setenv("I2M_TOPK", "3")
    Path(".env").write_text("I2M_REFINE_ROUNDZ=2\nI2M_TOP_K=1\n")
    warnings = config.warn_unknown_variables()
    assert warnings == [
        "warning: unknown setting I2M_TOPK in the environment is ignored; did you mean I2M_TOP_K?",
        "warning: unknown setting I2M_REFINE_ROUNDZ in the .env is ignored; did you mean I2M_REFINE_ROUNDS?",
    ]
    assert config.warn_unknown_variables() == []  # once per process


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("I2M_VLM_TIMEOUT_S", "-1", "invalid setting I2M_VLM_TIMEOUT_S: Input should be greater than 0"),
        ("I2M_NODE_GENERATION", "{bad", "invalid setting I2M_NODE_GENERATION: not valid JSON"),
    ],
)
def test_bad_settings_are_one_input_error(monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str) -> None:
    # before: a negative timeout was accepted and bad JSON was an internal error (exit 1)
    from image2music.tools.errors import InputError

    monkeypatch.setenv(env, value)
    with pytest.raises(InputError, match=expected.replace("(", r"\(")):
        load_settings()


def test_the_api_raises_input_error_naming_the_setting() -> None:
    from image2music import compose
    from image2music.tools.errors import InputError

    with pytest.raises(InputError, match="I2M_VLM_BACKEND"):
        compose("no-such-image.png", vlm_backend="bogus")
