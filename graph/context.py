"""The run context: plain data that every node of one run may read (not part of the checkpointed state).

Models, the image, prompts and the retriever are not in it: nodes get them from the cached factories in
:mod:`image2music.graph.services`, keyed by this data, as the LangGraph templates load their model from the
context.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from image2music.graph.config import Settings, load_settings
from image2music.graph.state import State
from image2music.tools.errors import InputError
from image2music.tools.files import safe_name
from image2music.tools.vlm import GenerationSettings


@dataclass(frozen=True)
class RunContext:
    """Settings, identity and files of one run (``Runtime[RunContext].context``). Every field has a default,
    because LangGraph's server (``langgraph dev``, Studio) builds the context from whatever JSON a client sends,
    often none: the settings then come from the environment, and :func:`context_of` fills the rest from the
    thread and the state."""

    settings: Settings = field(default_factory=load_settings)
    run_id: str = ""
    """Empty: a server run (see :func:`context_of`)."""
    image_path: Path = Path()
    """The input image (its copy in the run dir is what the report shows)."""
    run_dir: Path = Path()
    prompt_paths: dict[str, Path] = field(default_factory=dict)
    """Per-node prompt file overrides; nodes without one use the built-in template."""
    # what a client of LangGraph's server may choose for its run (Studio's assistant editor shows these):
    # options validated like the settings, prompts as text validated like prompt files; never a path
    refine_rounds: int | None = None
    """Most reflect rounds (feedback policy) or exactly this many (fixed)."""
    refine_policy: str | None = None
    """feedback | fixed."""
    top_k: int | None = None
    """Retrieved references per query (0: none)."""
    temperature: float | None = None
    """Sampling temperature (0: greedy)."""
    seed: int | None = None
    """Random seed of generation."""
    human_pause: bool | None = None
    """Pause before every refine round for a person's words."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Prompt templates as text, by node (describe, compose, reflect, explain): the prompt playground."""

    def __post_init__(self) -> None:
        # not fields: plain data for LangGraph's server and its schemas; objects of this run alone
        object.__setattr__(self, "_cancel", threading.Event())
        object.__setattr__(self, "_notify", notify_stderr)

    def listen(self, notify: Callable[[str], None]) -> RunContext:
        """Send this run's messages (a server's retries, for one) to ``notify`` (stderr until then)."""
        object.__setattr__(self, "_notify", notify)
        return self

    def notify(self, message: str) -> None:
        """A message for the person watching this run (the CLI's progress, the chat, stderr)."""
        self._notify(message)  # type: ignore[attr-defined]

    @property
    def cancel(self) -> threading.Event:
        """Set when the run is stopped (Ctrl-C, SIGTERM, its deadline, a batch's stop): a model call in flight
        ends at its next token or read, and its answer is not used (``services.RunAbandoned``)."""
        return self._cancel  # type: ignore[attr-defined,no-any-return]

    def generation(self, node: str) -> GenerationSettings:
        """Generation settings of a node: the global ones, per-node token caps, then I2M_NODE_GENERATION."""
        return self.settings.generation(node)


def notify_stderr(message: str) -> None:
    """Where a message goes when nobody listens: stderr (a run's, a factory's: building the starter base)."""
    print(message, file=sys.stderr)


MAX_INLINE_IMAGE_BYTES = 32 * 1024 * 1024
"""A ``data:`` URL or base64 image in a server run's input may hold at most this many bytes."""


LOCAL_CONTEXT_KEY = "__i2m_run_context"
"""Where this package's runner puts its run context in the run's config: a Python object that no JSON a server
client sends can be, so a client's context is never taken for one of ours (keys beginning ``__`` stay out of
checkpoint metadata)."""


def context_of(state: State, runtime: Runtime[RunContext]) -> RunContext:
    """The run context. Runs of this package pass their own (in the run's config, see LOCAL_CONTEXT_KEY); a run
    through LangGraph's server (``langgraph dev``, Studio, the SDK) has a client's context, which is data, never a
    path to follow: its settings come from the server's environment, its run id and folder from the thread (one
    folder per thread), and its image from the input (a ``data:`` URL or base64; a server path only where the
    server allows it). A client context that tries to choose a run id, a folder, an image path, prompt files or
    settings is refused in one line."""
    ctx = runtime.context
    config = _run_config()
    if config is None:  # a node called directly (no LangGraph run around it): the caller's own context
        if ctx is not None and ctx.run_id:
            return ctx
    else:
        local = (config.get("configurable") or {}).get(LOCAL_CONTEXT_KEY)
        if isinstance(local, RunContext):
            return local
        _refuse_client_choices(ctx)
    settings = _client_settings(ctx)
    image = state.get("image")
    if not image or not isinstance(image, str):
        raise InputError('the input needs an "image": a data: URL or a base64 string')
    thread = str(((config or {}).get("configurable") or {}).get("thread_id") or "default")
    run_id = f"studio-{safe_name(thread, default='thread')}"
    run_dir = settings.runs_dir / run_id
    served = _server_run_id(config or {})
    if served:  # each server run of the thread in a folder of its own: its vlm_calls.jsonl replays it alone
        run_dir = run_dir / safe_name(served, default="run")
    prompt_paths = _client_prompts(ctx, run_dir)
    return RunContext(
        settings=settings,
        run_id=run_id,
        image_path=_server_image(image, run_dir),
        run_dir=run_dir,
        prompt_paths=prompt_paths,
    )


CLIENT_OPTIONS = ("refine_rounds", "refine_policy", "top_k", "temperature", "seed", "human_pause")
"""The settings a server client may choose for its run (the rest are the server's)."""
MAX_CLIENT_PROMPTS = 8


def _client_settings(ctx: RunContext | None) -> Settings:
    """The server's settings with the client's safe options on top, validated (one line when one is wrong)."""
    settings = load_settings()
    chosen = {k: getattr(ctx, k) for k in CLIENT_OPTIONS if ctx is not None and getattr(ctx, k) is not None}
    if not chosen:
        return settings
    try:
        return settings.with_overrides(**chosen)
    except Exception as e:  # pydantic's ValidationError: one line naming the option as the client wrote it
        from pydantic import ValidationError

        found = e.errors() if isinstance(e, ValidationError) else []
        first: dict[str, Any] = dict(found[0]) if found else {"loc": (), "msg": str(e)}
        name = ".".join(str(x) for x in first.get("loc", ())) or "options"
        raise InputError(f"the context's {name}: {str(first.get('msg'))[:200]}") from None


def _client_prompts(ctx: RunContext | None, run_dir: Path) -> dict[str, Path]:
    """A client's prompt texts, checked like prompt files (known node, size, UTF-8 text, its $variables) and
    kept in the run's folder: the files the run then uses are ours."""
    texts = ctx.prompts if ctx is not None else {}
    if not texts:
        return {}
    from image2music import prompts as prompt_lib
    from image2music.tools.files import atomic_write_text

    if not isinstance(texts, dict) or len(texts) > MAX_CLIENT_PROMPTS:
        raise InputError("the context's prompts must be an object of a few node: text pairs")
    out: dict[str, Path] = {}
    for node, text in texts.items():
        if node not in prompt_lib.SPECS:
            raise InputError(
                f"unknown prompt '{str(node)[:40]}' in the context: the prompts are {', '.join(prompt_lib.SPECS)}"
            )
        if (
            not isinstance(text, str)
            or len(text.encode("utf-8", "replace")) > prompt_lib.MAX_PROMPT_BYTES
            or "\0" in text
        ):
            raise InputError(
                f"the context's prompt for {node} must be text of at most {prompt_lib.MAX_PROMPT_BYTES // 1000} kB"
            )
        prompt_lib.check_template(node, text, "in the context")
        out[node] = atomic_write_text(run_dir / "prompts-client" / f"{node}.md", text)
    return out


def _server_run_id(config: dict[str, Any]) -> str | None:
    """The id LangGraph's server gave this run (several runs share a thread: enqueued, interrupting, resumed)."""
    for where in (config.get("metadata") or {}, config.get("configurable") or {}, config):
        value = where.get("run_id") if isinstance(where, dict) else None
        if value:
            return str(value)
    return None


def _run_config() -> dict[str, Any] | None:
    try:
        from langgraph.config import get_config

        return dict(get_config())
    except RuntimeError:  # outside a runnable
        return None


def _refuse_client_choices(ctx: RunContext | None) -> None:
    """A server client's context may not choose where files go or come from, nor the server's settings."""
    if ctx is None:
        return
    chosen = [
        name
        for name, given in (
            ("run_id", ctx.run_id),
            ("image_path", ctx.image_path != Path()),
            ("run_dir", ctx.run_dir != Path()),
            ("prompt_paths", ctx.prompt_paths),
            ("settings", not isinstance(ctx.settings, Settings)),
        )
        if given
    ]
    if chosen:
        raise InputError(
            f"a client's context cannot set {', '.join(chosen)}: the server chooses its run folder, files and "
            "settings; give the image in the input"
        )


def _server_image(image: str, run_dir: Path) -> Path:
    """The image of a server run as a file: a path as given; a ``data:`` URL or base64 text decoded once into
    the run folder (the image loader then validates it like any file)."""
    import base64
    import binascii
    import hashlib

    text = image.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise InputError("a data: URL image must be base64 (data:image/png;base64,...)")
    elif len(text) < 256:  # a path (a base64 image is longer than any path)
        if not load_settings().server_image_paths:
            raise InputError(
                "give the image as a data: URL or base64 (this server reads no files: I2M_SERVER_IMAGE_PATHS=false)"
            )
        path = Path(image)
        from image2music.tools.images import ImageError, load_image

        try:
            load_image(path)
        except (ImageError, OSError):  # one answer for every file that is not an image: no server file described
            raise InputError("the image is not a readable image") from None
        return path
    if len(text) > MAX_INLINE_IMAGE_BYTES * 4 // 3 + 4:
        raise InputError(f"the inline image is larger than {MAX_INLINE_IMAGE_BYTES >> 20} MB; give a path instead")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"the image is neither a path nor valid base64 ({e})") from e
    path = run_dir / f"upload-{hashlib.sha256(data).hexdigest()[:16]}"
    if not path.exists():
        from image2music.tools.files import atomic_write_bytes

        atomic_write_bytes(path, data)
    return path
