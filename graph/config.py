"""One typed settings object, fed by environment variables (``I2M_*``), a ``.env`` file and CLI flags."""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from image2music.tools.files import plain_path
from image2music.tools.music.abcparse import Limits
from image2music.tools.music.targets import FALLBACK_BANDS, TARGET_METRICS
from image2music.tools.vlm.base import VLM_NODES, GenerationSettings


def default_home() -> Path:
    """Per-user data dir: ``$XDG_DATA_HOME/image2music`` (``~/.local/share/image2music``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "image2music"


OUTPUT_FORMATS = ("abc", "mid", "musicxml", "wav", "svg", "report")
ABC_NODES = ("compose", "reflect")
"""The nodes whose answers are a tune (the ABC answer grammar shapes them)."""


class Settings(BaseSettings):
    """Every setting of image2music. Each is documented in ``.env.example``."""

    model_config = SettingsConfigDict(env_prefix="I2M_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=default_home, description="data dir: knowledge base, run database, runs")

    # the vision-language model
    vlm_backend: Literal["transformers", "replay", "openai"] = "transformers"
    vlm_model: str = "Qwen/Qwen3-VL-4B-Instruct"
    replay_file: Path | None = None
    replay_delay_s: float = Field(0.0, ge=0)
    vlm_device: str = "auto"
    vlm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    image_max_pixels: int = 512 * 512
    vlm_feature_cache: int = Field(8, ge=1, le=1024)
    """Images whose vision features a local model keeps (``i2m batch --jobs N`` raises it to N)."""
    max_new_tokens: int = 1024
    describe_max_new_tokens: int = 256
    explain_max_new_tokens: int = 384
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    node_generation: dict[str, dict[str, float | int]] = Field(default_factory=dict)
    """Per-node overrides of max_new_tokens, temperature, top_p and seed, e.g. {"describe": {"temperature": 0.2}}."""
    attention_maps: bool = True
    vlm_base_url: str | None = None
    vlm_api_key: str | None = None
    vlm_timeout_s: float = Field(300.0, gt=0, description="whole-call deadline of one model call, seconds")
    vlm_server: Literal["openai", "vllm", "sglang", "llamacpp"] = "openai"
    """The kind of server behind I2M_VLM_BASE_URL: how the ABC grammar is sent (openai: not at all)."""
    vlm_stream: bool = True
    """Ask a served model to stream its answer (``stream: true``); a server that will not is asked again without."""
    grammar: Literal["on", "off"] = "on"
    """Constrain compose and reflect answers to the ABC answer grammar (a local model, or a served one that takes
    a grammar: I2M_VLM_SERVER)."""
    replay_token_delay_s: float = Field(0.0, ge=0, le=10)
    """The replay backend streams its answers a word at a time with this pause (demos, tests)."""

    # retrieval
    embed_model: str = "zer0int/LongCLIP-GmP-ViT-L-14"
    top_k: int = Field(1, ge=0)
    score_threshold: float | None = None
    example_max_chars: int = Field(1500, ge=100)
    kb_auto_build: bool = True
    chroma_url: str | None = None

    # loop bounds
    max_parse_retries: int = Field(3, ge=0, le=20)
    refine_rounds: int = Field(2, ge=0, le=20)
    """With the feedback policy, the most reflect rounds; with the fixed policy, exactly this many."""
    refine_policy: Literal["feedback", "fixed"] = "feedback"
    """feedback: reflect while the music misses measurable targets; fixed: always refine_rounds rounds (paper)."""
    target_margin: float = Field(0.25, ge=0, le=5)
    """Metric bands are the references' range widened by this share of its width (at least a minimum)."""
    target_fallback: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(FALLBACK_BANDS))
    """Metric bands used when nothing was retrieved."""
    server_image_paths: bool = False
    """Under LangGraph's server: may a client's input name an image file on the server (else only data: URLs or
    base64 images are taken)."""
    human_pause: bool = False
    """Pause before every refine round for a person's words (LangGraph's ``interrupt()``: the chat, Studio and
    the SDK answer it with ``Command(resume=words)``; empty words let the model decide)."""
    max_human_rounds: int = Field(20, ge=0, le=100)
    """Extra reflect rounds a person may ask for in ``i2m chat`` (counted in the step budget)."""

    # ABC guards
    abc_max_chars: int = Field(100_000, ge=100)
    abc_max_notes: int = Field(20_000, ge=1)
    abc_max_note_whole_notes: int = Field(16, ge=1)
    abc_max_seconds: float = Field(1800.0, gt=0)
    convert_timeout_s: float = Field(120.0, gt=0)
    """Deadline of each file conversion (MusicXML, WAV, SVG), each in a child process."""
    run_deadline_s: float = Field(900.0, gt=0)
    """Deadline of a whole run: past it the run stops (even inside a node) and ends failed with its record."""
    formats: str = "abc,mid,musicxml,wav,svg,report"
    """The output files a run writes, comma-separated; music.abc, music.mid and run.json always are (a batch that
    needs only those saves the conversions: ``abc,mid``)."""
    abc_max_voices: int = Field(32, ge=1, le=256)
    abc_max_overlays: int = Field(256, ge=0)

    @field_validator("formats", mode="after")
    @classmethod
    def _check_formats(cls, v: str) -> str:
        names = [x.strip() for x in v.split(",") if x.strip()]
        unknown = sorted(set(names) - set(OUTPUT_FORMATS))
        if unknown:
            raise ValueError(f"unknown format(s) {', '.join(unknown)}: use {', '.join(OUTPUT_FORMATS)}")
        return ",".join(dict.fromkeys(["abc", "mid", *names]))

    def writes(self, fmt: str) -> bool:
        """Whether a run writes this output (``musicxml``, ``wav``, ``svg``, ``report``...)."""
        return fmt in self.formats.split(",")

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return plain_path(v)

    @field_validator("replay_file", mode="after")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        """Stored absolute (a run replayed or resumed from another folder finds it)."""
        return None if v is None else plain_path(v)

    @field_validator("vlm_base_url", "chroma_url", mode="after")
    @classmethod
    def _http_only(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {v!r}")
        return v.strip()

    @field_validator("target_fallback", mode="after")
    @classmethod
    def _check_fallback(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if name not in TARGET_METRICS:
                raise ValueError(f"unknown metric '{name}' (use {', '.join(TARGET_METRICS)})")
            if lo > hi:
                raise ValueError(f"the band of {name} is empty ({lo} > {hi})")
        return v

    @field_validator("node_generation", mode="after")
    @classmethod
    def _check_node_generation(cls, v: dict[str, dict[str, float | int]]) -> dict[str, dict[str, float | int]]:
        nodes = set(VLM_NODES)
        keys = {"max_new_tokens", "temperature", "top_p", "seed"}
        for node, opts in v.items():
            if node not in nodes:
                raise ValueError(f"unknown node '{node}' (use {', '.join(sorted(nodes))})")
            bad = set(opts) - keys
            if bad:
                raise ValueError(
                    f"unknown generation setting(s) {', '.join(sorted(bad))} for {node} (use {', '.join(sorted(keys))})"
                )
        return v

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def kb_dir(self) -> Path:
        return self.home / "kb"

    @property
    def db_path(self) -> Path:
        return self.home / "runs.sqlite"

    @property
    def abc_limits(self) -> Limits:
        return Limits(
            max_chars=self.abc_max_chars,
            max_notes=self.abc_max_notes,
            max_note_whole_notes=Fraction(self.abc_max_note_whole_notes),
            max_seconds=self.abc_max_seconds,
            max_voices=self.abc_max_voices,
            max_overlays=self.abc_max_overlays,
        )

    def generation(self, node: str) -> GenerationSettings:
        """Generation settings of a VLM node (judge included): the global ones, per-node token caps (the judge
        scores deterministically in 256 tokens), then ``I2M_NODE_GENERATION``."""
        max_new = {"describe": self.describe_max_new_tokens, "explain": self.explain_max_new_tokens, "judge": 256}
        base: dict[str, float | int] = {
            "max_new_tokens": max_new.get(node, self.max_new_tokens),
            "temperature": 0.0 if node == "judge" else self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        base.update(self.node_generation.get(node, {}))
        return GenerationSettings(
            max_new_tokens=int(base["max_new_tokens"]),
            temperature=float(base["temperature"]),
            top_p=float(base["top_p"]),
            seed=int(base["seed"]),
            grammar=self.grammar == "on" and node in ABC_NODES,
        )

    @property
    def recursion_limit(self) -> int:
        """LangGraph's step budget, computed from the loop bounds so it can never cut a legal run short:
        describe, retrieve, explain, plus per writer (compose and each refine round, and a person's extra
        rounds) its retries × (writer + check), plus evaluate per round; with a margin."""
        writers = 1 + self.refine_rounds + self.max_human_rounds
        return 3 + writers * (2 * (self.max_parse_retries + 1) + 1) + 10

    def secret_values(self) -> list[str]:
        """The configured secrets (the API key, credentials in a server URL): scrubbed from every message,
        record, log and checkpoint."""
        from image2music.tools.errors import url_secrets

        found = [self.vlm_api_key] if self.vlm_api_key else []
        return found + url_secrets(self.vlm_base_url) + url_secrets(self.chroma_url)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-None ``overrides`` applied and validated (CLI flags win over env)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if not clean:
            return self
        data = self.model_dump()
        data.update(clean)
        return Settings.model_validate(data)


NOT_SETTINGS = frozenset({"I2M_DEBUG"})
"""I2M_* variables that are read elsewhere, not settings."""
_WARNED: set[str] = set()


def closest_setting(name: str) -> str | None:
    """The setting whose name is closest to ``name`` (a typo), or None."""
    import difflib

    found = difflib.get_close_matches(name.lower(), list(Settings.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None


def check_names(names: dict[str, Any]) -> None:
    """Unknown keyword settings are an error naming the closest setting (``vlm_bakend`` -> ``vlm_backend``)."""
    from image2music.tools.errors import InputError

    for key in names:
        if key not in Settings.model_fields:
            near = closest_setting(key)
            hint = f"; did you mean '{near}'?" if near else "; see .env.example for every setting"
            raise InputError(f"unknown setting '{key}'{hint}")


def warn_unknown_variables(env_file: Path = Path(".env")) -> list[str]:
    """One warning per unknown ``I2M_*`` variable in the environment or in ``.env`` (a typo is otherwise
    silently ignored), naming the closest setting. Returns the warnings (printed once per process)."""
    import sys

    seen: list[tuple[str, str]] = [(k, "environment") for k in os.environ if k.startswith("I2M_")]
    try:
        for line in env_file.read_text(encoding="utf-8-sig").splitlines():
            key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
            if key.startswith("I2M_") and "=" in line:
                seen.append((key, str(env_file)))
    except OSError:
        pass
    out = []
    for key, where in seen:
        name = key[4:].lower()
        if key in NOT_SETTINGS or name in Settings.model_fields or key in _WARNED:
            continue
        _WARNED.add(key)
        near = closest_setting(name)
        msg = f"warning: unknown setting {key} in the {where} is ignored" + (
            f"; did you mean I2M_{near.upper()}?" if near else ""
        )
        print(msg, file=sys.stderr)
        out.append(msg)
    return out


def setting_error(e: Any) -> Exception:
    """A pydantic ValidationError of the settings as one InputError line naming the setting."""
    from image2music.tools.errors import InputError

    first = e.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ()))
    return InputError(f"invalid setting I2M_{loc.upper()}: {first.get('msg')}")


def load_settings(**overrides: Any) -> Settings:
    """Settings from env and ``.env``, then ``overrides`` (e.g. CLI flags) on top. Unknown override names are
    an error; unknown ``I2M_*`` variables a warning."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from image2music.tools.errors import InputError

    check_names(overrides)
    warn_unknown_variables()
    try:
        # every field from the environment and .env (pyright sees only the constructor's required arguments)
        return Settings().with_overrides(**overrides)  # pyright: ignore[reportCallIssue]
    except ValidationError as e:  # one line naming the setting, for the CLI and the Python API alike
        raise setting_error(e) from None
    except SettingsError as e:  # a variable that is not JSON where JSON is needed (I2M_NODE_GENERATION='{bad')
        m = re.search(r'field "(\w+)"', str(e))
        name = f"I2M_{m.group(1).upper()}" if m else "an I2M_* variable"
        raise InputError(f"invalid setting {name}: not valid JSON; write it as a JSON object") from None
