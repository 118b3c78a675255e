"""The ``i2m`` command line."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

NODE_DETAILS: dict[str, Callable[[dict[str, Any]], str]] = {
    "describe": lambda u: f"{len((u.get('description') or '').split())} words",
    "retrieve": lambda u: f"{len(u.get('references') or [])} reference(s)",
    "parse_check": lambda u: _parse_detail(u),
    "evaluate": lambda u: "metrics ready",
}


def _parse_detail(u: dict[str, Any]) -> str:
    v = (u.get("versions") or [{}])[-1]
    if v.get("ok"):
        return f"valid, {len(v.get('warnings') or [])} warning(s)"
    return f"[red]{len(v.get('errors') or [])} error(s)[/red]"


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/bold red] {message}")
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn known errors into one clear line and an exit code; never a traceback (unless I2M_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from graph.runner import InputError, RunError
        from prompts import PromptError
        from tools.images import ImageError
        from tools.store import StoreError
        from tools.vlm import VLMError

        try:
            return fn(*args, **kwargs)
        except (InputError, ImageError, PromptError) as e:
            fail(str(e), 2)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ()))
            fail(f"invalid setting {('I2M_' + loc.upper()) if loc else ''}: {first.get('msg')}", 2)
        except (RunError, VLMError, StoreError) as e:
            fail(str(e), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as e:
            if os.environ.get("I2M_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} (set I2M_DEBUG=1 to see the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def parse_prompt_overrides(values: tuple[str, ...]) -> dict[str, Path]:
    overrides: dict[str, Path] = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"'{v}': use NODE=FILE, e.g. compose=my_compose.md", param_hint="--prompt")
        node, path = v.split("=", 1)
        overrides[node.strip()] = Path(path).expanduser()
    return overrides


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="image2music", prog_name="i2m")
def main() -> None:
    """image2music: turn a picture into music you can read, play and understand.

    A vision-language model describes the image, retrieves similar captioned music, writes ABC notation,
    checks it, measures it, refines it and explains it (text and an attention heat map).

    Settings come from I2M_* environment variables, a .env file, and the flags below (see .env.example).
    """


def model_options(fn: F) -> F:
    opts = [
        click.option("--vlm-backend", type=click.Choice(["transformers", "replay", "openai"]),
                     help="VLM backend [env I2M_VLM_BACKEND]."),
        click.option("--vlm-model", help="VLM hub id or local folder (served name for openai) [env I2M_VLM_MODEL]."),
        click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL]."),
        click.option("--replay", "replay_file", type=click.Path(path_type=Path),
                     help="JSONL of recorded answers for the replay backend [env I2M_REPLAY_FILE]."),
        click.option("--refine-rounds", type=int, help="Reflect rounds, 0 skips reflect [env I2M_REFINE_ROUNDS]."),
        click.option("--max-parse-retries", type=int, help="Retries after a parse error [env I2M_MAX_PARSE_RETRIES]."),
        click.option("--top-k", type=int, help="Hits per query (image and description) [env I2M_TOP_K]."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def settings_from(**flags: Any) -> Any:
    from graph.config import load_settings

    if flags.get("replay_file") is not None and flags.get("vlm_backend") is None:
        flags["vlm_backend"] = "replay"
    return load_settings(**flags)


class NodeProgress:
    """Rich progress: one line per finished node with its time, a spinner while the run goes on."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status = console.status("describing the image...")

    def __enter__(self) -> NodeProgress:
        self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.status.__exit__(None, None, None)

    NEXT = {"describe": "retrieving references", "retrieve": "composing", "compose": "checking the ABC",
            "parse_check": "working", "evaluate": "working", "reflect": "checking the ABC", "explain": "writing files"}

    def __call__(self, node: str, update: dict[str, Any]) -> None:
        secs = (update.get("timings") or [0.0])[-1]
        detail = NODE_DETAILS.get(node, lambda u: "")(update)
        self.console.print(f"  [green]✓[/green] {node:<12} {secs:7.2f}s  {detail}")
        self.status.update(self.NEXT.get(node, "working") + "...")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), help="Run dir (default: a new dir under I2M_HOME/runs).")
@model_options
@click.option("--prompt", "prompt_files", multiple=True, metavar="NODE=FILE", help="Use FILE as the prompt of NODE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print run.json to stdout.")
@handle_errors
def compose(image: Path, output: Path | None, prompt_files: tuple[str, ...], as_json: bool, **flags: Any) -> None:
    """Turn IMAGE into music: describe, retrieve, compose, check, evaluate, refine, explain.

    Example: i2m compose photo.jpg -o out/  (writes run.json, music.abc, music.mid, attention.png ...)
    """
    from graph.runner import compose_image

    settings = settings_from(**flags)
    overrides = parse_prompt_overrides(prompt_files)
    err.print(f"[bold]i2m[/bold] composing for {image} with {settings.vlm_backend}:{settings.vlm_model}")
    with NodeProgress(err) as progress:
        result = compose_image(image, settings, run_dir=output, prompt_overrides=overrides, on_event=progress,
                               notify=lambda m: err.print(f"[yellow]{m}[/yellow]"))
    rec = result.record
    if as_json:
        out.print_json(json.dumps(rec, ensure_ascii=False))
    colour = "green" if result.ok else "red"
    err.print(f"[{colour}]{rec['status']}[/{colour}] run {result.run_id} -> {result.run_dir}")
    if rec.get("reason"):
        err.print(f"  reason: {rec['reason']}")
    for key, fname in result.files.items():
        err.print(f"  {key:<9} {result.run_dir / fname}")
    for note in rec.get("notes", []):
        err.print(f"  [dim]note: {note}[/dim]")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
