"""Prompt templates: files in this folder with named ``$variables``, checked before a run starts."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from image2music.tools.errors import InputError

PROMPTS_DIR = Path(__file__).resolve().parent


class PromptError(InputError):
    """A prompt template is missing, or uses variables that are unknown or leaves out required ones."""


@dataclass(frozen=True)
class PromptSpec:
    """Which variables a node's prompt must use and which it may use."""

    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        return self.required | self.optional


SPECS: dict[str, PromptSpec] = {
    "describe": PromptSpec(frozenset()),
    "compose": PromptSpec(frozenset({"description", "examples"}), frozenset({"feedback"})),
    "reflect": PromptSpec(
        frozenset({"description", "abc", "metrics"}), frozenset({"targets", "warnings", "feedback", "user_feedback"})
    ),
    "explain": PromptSpec(frozenset({"description", "abc"}), frozenset({"commentary"})),
    "judge": PromptSpec(frozenset({"abc"}), frozenset({"description", "feedback"})),
}


@dataclass(frozen=True)
class Prompt:
    """A loaded, checked template."""

    name: str
    path: Path
    text: str

    def render(self, **values: str) -> str:
        spec = SPECS[self.name]
        missing = sorted(v for v in spec.required if v not in values)
        if missing:
            raise PromptError(f"prompt '{self.name}' needs values for: {', '.join(missing)}")
        full = {k: values.get(k, "") for k in spec.allowed}
        return string.Template(self.text).substitute(full).strip() + "\n"


def builtin_path(name: str) -> Path:
    if name not in SPECS:
        raise PromptError(f"unknown prompt '{name}': the prompts are {', '.join(SPECS)}")
    return PROMPTS_DIR / f"{name}.md"


def check_template(name: str, text: str, source: str = "") -> None:
    """Raise :class:`PromptError` naming unknown or missing variables."""
    spec = SPECS[name]
    where = f" ({source})" if source else ""
    tpl = string.Template(text)
    if not tpl.is_valid():
        raise PromptError(f"prompt '{name}'{where} has a malformed '$' placeholder; write $$ for a dollar sign")
    used = set(tpl.get_identifiers())
    unknown = sorted(used - spec.allowed)
    missing = sorted(spec.required - used)
    problems = []
    if unknown:
        problems.append(f"unknown variable(s) {', '.join('$' + u for u in unknown)}")
    if missing:
        problems.append(f"missing required variable(s) {', '.join('$' + m for m in missing)}")
    if problems:
        allowed = ", ".join("$" + a for a in sorted(spec.allowed)) or "none"
        raise PromptError(f"prompt '{name}'{where}: {'; '.join(problems)} (allowed: {allowed})")


MAX_PROMPT_BYTES = 256_000
"""A prompt template is a few kB; larger files are refused (they would be sent to the model every call)."""


def load(name: str, path: Path | None = None) -> Prompt:
    """Load the built-in template for ``name`` or the override at ``path``, checked."""
    p = Path(path) if path is not None else builtin_path(name)
    if name not in SPECS:
        raise PromptError(f"unknown prompt '{name}': the prompts are {', '.join(SPECS)}")
    try:
        if not p.is_file():  # a FIFO would block the run forever, a device never end
            if not p.exists():
                raise PromptError(f"cannot read prompt file {p}: no such file")
            raise PromptError(f"prompt file {p} is not a regular file (a folder, a pipe or a device)")
        if p.stat().st_size > MAX_PROMPT_BYTES:
            raise PromptError(
                f"prompt file {p} is {p.stat().st_size / 1e6:.1f} MB; a prompt may be at most "
                f"{MAX_PROMPT_BYTES // 1000} kB"
            )
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptError(f"prompt file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    except OSError as e:
        raise PromptError(f"cannot read prompt file {p}: {e.strerror or e}") from e
    if "\x00" in text:
        raise PromptError(f"prompt file {p} holds NUL bytes: it is not a text file")
    check_template(name, text, str(p))
    return Prompt(name=name, path=p, text=text)


def load_all(overrides: dict[str, Path] | None = None) -> dict[str, Prompt]:
    """All prompts, with per-node file overrides (``{"compose": Path("my.md")}``)."""
    overrides = overrides or {}
    for k in overrides:
        if k not in SPECS:
            raise PromptError(f"unknown prompt '{k}': the prompts are {', '.join(SPECS)}")
    return {n: load(n, overrides.get(n)) for n in SPECS}
