"""The ``i2m`` command line."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape as _escape_markup
from rich.text import Text

from image2music.graph.state import NODE_IDS
from image2music.record import RunRecord
from image2music.tools.vlm.backends import BACKENDS

if TYPE_CHECKING:
    from image2music.batch import BatchRow
    from image2music.evaluation import EvalRow
    from image2music.graph.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

# lines are never cut: in a terminal rich wraps them between words at its width (the terminal's own wrap would
# break words: `compos|e`); piped output keeps one line per message (soft wrap). Panels and tables are printed
# with soft_wrap=False so they wrap inside their frame. Model text is always printed as Text or escaped, never
# as markup.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
err.soft_wrap, out.soft_wrap = not err.is_terminal, not out.is_terminal


def escape(text: str) -> str:
    """Text for a markup string: markup escaped, control characters and escape sequences shown, not obeyed
    (messages, file names and titles can hold what a model, a file or a server wrote)."""
    from image2music.display import terminal_safe

    return _escape_markup(terminal_safe(text))


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn known errors into one clear line and an exit code; never a traceback (unless I2M_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from image2music.tools.errors import I2MError

        try:
            return fn(*args, **kwargs)
        except I2MError as e:
            fail(str(e), e.exit_code)
        except ValidationError as e:  # settings made without load_settings
            from image2music.graph.config import setting_error

            fail(str(setting_error(e)), 2)
        except KeyboardInterrupt as e:
            from image2music.tools.errors import Terminated

            fail(
                "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted",
                143 if isinstance(e, Terminated) else 130,
            )
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
        click.option(
            "--vlm-backend",
            type=click.Choice(list(BACKENDS)),
            help="VLM backend [env I2M_VLM_BACKEND].",
        ),
        click.option("--vlm-model", help="VLM hub id or local folder (served name for openai) [env I2M_VLM_MODEL]."),
        click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL]."),
        click.option(
            "--replay",
            "replay_file",
            type=click.Path(path_type=Path),
            help="JSONL of recorded answers for the replay backend [env I2M_REPLAY_FILE].",
        ),
        click.option(
            "--refine-rounds",
            type=int,
            help="Most reflect rounds (feedback policy) or exactly this many (fixed); 0 skips reflect "
            "[env I2M_REFINE_ROUNDS, default 2].",
        ),
        click.option(
            "--refine-policy",
            type=click.Choice(["feedback", "fixed"]),
            help="feedback: reflect while the music misses measurable targets; fixed: always --refine-rounds "
            "rounds, as in the paper [env I2M_REFINE_POLICY, default feedback].",
        ),
        click.option(
            "--temperature", type=float, help="Sampling temperature, 0 = greedy [env I2M_TEMPERATURE, default 0.7]."
        ),
        click.option("--seed", type=int, help="Random seed of generation [env I2M_SEED, default 0]."),
        click.option(
            "--device", "vlm_device", help="cpu, cuda, cuda:1, mps or auto [env I2M_VLM_DEVICE, default auto]."
        ),
        click.option("--max-parse-retries", type=int, help="Retries after a parse error [env I2M_MAX_PARSE_RETRIES]."),
        click.option("--top-k", type=int, help="Hits per query (image and description) [env I2M_TOP_K]."),
        click.option(
            "--formats",
            help="Output files, comma-separated from abc,mid,musicxml,wav,svg,report (abc, mid and run.json are "
            "always written; e.g. abc,mid for a batch that needs only those) [env I2M_FORMATS, default all].",
        ),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def model_label(settings: Any) -> str:
    """What answers: ``replay:calls.jsonl``, ``transformers:Qwen/...`` or ``openai:name@url``."""
    from image2music.tools.vlm.backends import backend

    return backend(settings.vlm_backend).label(settings.vlm_model, settings.replay_file, settings.vlm_base_url)


def settings_from(**flags: Any) -> Any:
    from image2music.graph.config import load_settings

    if flags.get("replay_file") is not None and flags.get("vlm_backend") is None:
        flags["vlm_backend"] = "replay"
    return load_settings(**flags)


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path),
    help="Run dir (default: a new dir under I2M_HOME/runs). An earlier run there is replaced; a folder with "
    "other files is refused unless --force.",
)
@click.option("--force", is_flag=True, help="Let -o replace a non-empty folder that is not an earlier run.")
@model_options
@click.option(
    "--prompt", "prompt_files", multiple=True, metavar="NODE=FILE", help="Use FILE as the prompt of NODE (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print run.json to stdout (no live view of the answers).")
@click.option("-q", "--quiet", is_flag=True, help="No progress: only the result lines (and errors).")
@handle_errors
def compose(
    image: Path,
    output: Path | None,
    force: bool,
    prompt_files: tuple[str, ...],
    as_json: bool,
    quiet: bool,
    **flags: Any,
) -> None:
    """Turn IMAGE into music: describe, retrieve, compose, check, evaluate, refine, explain.

    Example: i2m compose photo.jpg -o out/  (writes run.json, music.abc, music.mid, attention.png ...)
    """
    from image2music import prompts
    from image2music.tools.images import load_image

    settings = settings_from(**flags)
    overrides = parse_prompt_overrides(prompt_files)
    from image2music.tools.files import plain_path

    image = plain_path(image)
    load_image(image)  # refused input (exit 2) is said first, before the banner
    prompts.load_all(overrides)
    require_model(settings)  # then a missing model (exit 1), before langgraph and the rest are imported
    from image2music.display import NodeProgress
    from image2music.runner import compose_image

    progress = None if quiet else NodeProgress(err)
    said: set[str] = set()

    def notify(message: str) -> None:
        said.add(message)
        err.print(f"[yellow]{escape(message)}[/yellow]")

    if progress is not None:
        err.print(f"[bold]i2m[/bold] composing for {escape(str(image))} with {escape(model_label(settings))}")
    with progress or contextlib.nullcontext():
        result = compose_image(
            image,
            settings,
            run_dir=output,
            prompt_overrides=overrides,
            on_event=progress,
            notify=notify,
            on_start=None if progress is None else _announce_run,
            force=force,
            on_text=progress.text if progress is not None and not as_json else None,
        )
    report_result(result, as_json, said)


def _announce_run(run_id: str, run_dir: Path) -> None:
    err.print(f"run [bold]{run_id}[/bold] (resume with `i2m runs resume {run_id}`)")


def require_model(settings: Settings) -> None:
    """A local VLM that is not on this machine (and cannot be downloaded) ends the command at once, with the
    command that fixes it (VLMError, exit 1), before the graph's libraries are imported."""
    from image2music.tools.vlm.backends import backend

    if backend(settings.vlm_backend).local:
        from image2music.tools.vlm import model_location

        model_location(settings.vlm_model)
        say_cpu_cost(settings)


def say_cpu_cost(settings: Settings) -> None:
    """On a machine without a GPU, what a local model will cost, before it is downloaded or loaded."""
    from image2music.tools.vlm import cpu_notice
    from image2music.tools.vlm.hf import pick_device, pick_dtype

    device = pick_device(settings.vlm_device)
    if device == "cpu":
        dtype = str(pick_dtype(device, settings.vlm_dtype)).removeprefix("torch.")
        err.print(f"[yellow]{escape(cpu_notice(settings.vlm_model, dtype))}[/yellow]")


def report_result(result: Any, as_json: bool, said: set[str] | None = None) -> None:
    """Print a finished run (run.json with --json) and exit 0 when ok, 1 when failed. Notes already printed
    while the run went on (``said``) are not printed again."""
    rec = result.record
    if as_json:
        out.print_json(json.dumps(rec, ensure_ascii=False))
    colour = "green" if result.ok else "red"
    err.print(f"[{colour}]{rec['status']}[/{colour}] run {result.run_id} -> {escape(str(result.run_dir))}")
    if rec.get("reason"):
        err.print(f"  reason: {escape(str(rec['reason']))}")
    for key, fname in result.files.items():
        err.print(f"  {key:<9} {escape(str(result.run_dir / fname))}")
    for note in rec.get("notes", []):
        if note not in (said or set()):
            err.print(f"  [dim]note: {escape(str(note))}[/dim]")
    sys.exit(0 if result.ok else 1)


# --- ABC tools -------------------------------------------------------------------------------------------


def _read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise click.BadParameter(f"file not found: {path}", param_hint="FILE")
    return p.read_text(encoding="utf-8-sig", errors="replace")


@main.group()
def abc() -> None:
    """Check and render ABC notation (model output with prose around it is fine)."""


@abc.command("check")
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='JSON: one object, or one object per line (with a "file" key) for several files.',
)
@handle_errors
def abc_check(files: tuple[str, ...], as_json: bool) -> None:
    """Check the tune in each FILE (- for stdin): located errors and warnings, each with a code.
    Exit 0 when every file is ok, 1 when one is not.

    Examples: i2m abc check answer.txt --json; i2m abc check tunes/*.abc
    """
    from image2music.graph.config import load_settings
    from image2music.tools.music.check import check_abc

    limits = load_settings().abc_limits
    all_ok = True
    for file in files:
        result = check_abc(_read_input(file), limits)
        all_ok = all_ok and result.ok
        if as_json:
            data = result.to_dict()
            if len(files) > 1:
                print(json.dumps({"file": file, **data}, ensure_ascii=False))
            else:
                out.print_json(json.dumps(data, ensure_ascii=False))
            continue
        verdict = "[green]ok[/green]" if result.ok else "[red]not ok[/red]"
        name = f"{escape(file)}  " if len(files) > 1 else ""
        out.print(f"{name}{verdict}  title: {escape(repr(result.title))}  voices: {result.parts}")
        for f in result.errors:
            out.print(f"  [red]error[/red]   [{f.code}] {escape(f.render())}")
        for f in result.warnings:
            out.print(f"  [yellow]warning[/yellow] [{f.code}] {escape(f.render())}")
    sys.exit(0 if all_ok else 1)


@abc.command("grammar")
@click.option(
    "--start",
    type=click.Choice(["answer", "tune"]),
    default="answer",
    help="answer: prose, one fenced tune, commentary (what compose and reflect write); tune: the tune alone.",
)
@click.option(
    "--check", "check_file", metavar="FILE", help="Say whether FILE (- for stdin) is in the grammar (exit 0 / 1)."
)
@handle_errors
def abc_grammar(start: str, check_file: str | None) -> None:
    """Print the ABC answer grammar as GBNF (llama.cpp's `grammar`, SGLang's `ebnf`, vLLM's
    `structured_outputs.grammar`), the grammar that shapes compose and reflect answers (I2M_GRAMMAR).

    Examples: i2m abc grammar > abc.gbnf; i2m abc grammar --start tune --check music.abc
    """
    rule = "root" if start == "answer" else "tune"
    if check_file is not None:
        from image2music.tools.vlm.constrain import grammar_accepts

        inside = grammar_accepts(_read_input(check_file), rule)
        out.print("in the grammar" if inside else "[red]not in the grammar[/red]")
        sys.exit(0 if inside else 1)
    from image2music.tools.music.grammar import gbnf

    sys.stdout.write(gbnf(rule))


@abc.command("render")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["mid", "musicxml", "wav", "svg"]),
    required=True,
    help="Output format: MIDI, MusicXML (music21), WAV (FluidSynth) or SVG sheet music (abcm2ps).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output file for one FILE; with several files, or when it is an existing folder, each FILE becomes "
    "OUTPUT/<stem>.<suffix> (default: next to each FILE).",
)
@handle_errors
def abc_render(files: tuple[Path, ...], fmt: str, output: Path | None) -> None:
    """Render the tune in each FILE as MIDI, MusicXML, WAV (FluidSynth) or SVG (abcm2ps).
    Exit 1 when a file could not be rendered (the others still are).

    Examples: i2m abc render music.abc --to wav; i2m abc render a.abc b.abc --to mid -o out/
    """
    import tempfile

    from image2music.graph.config import load_settings
    from image2music.tools.music.check import check_abc
    from image2music.tools.music.convert import ConversionError, write_midi, write_musicxml, write_svg, write_wav

    limits = load_settings().abc_limits
    to_dir = output is not None and (len(files) > 1 or output.is_dir())
    if to_dir and output is not None:
        if output.exists() and not output.is_dir():
            fail(f"-o {output} is a file; give a folder for several inputs", 2)
        output.mkdir(parents=True, exist_ok=True)
    failed = 0
    for file in files:
        result = check_abc(_read_input(str(file)), limits)
        if not result.ok or result.tune is None:
            for f in result.errors:
                err.print(f"  error [{f.code}] {escape(f.render())}")
            err.print(f"[red]{escape(str(file))} has errors[/red]; fix them first (see `i2m abc check {file}`)")
            failed += 1
            continue
        if to_dir and output is not None:
            target = output / f"{file.stem}.{fmt}"
        else:
            target = output or file.with_suffix("." + fmt)
        try:
            if fmt == "mid":
                write_midi(result.tune, target)
            elif fmt == "musicxml":
                write_musicxml(result.abc, target)
            elif fmt == "svg":
                write_svg(result.abc, target)
            else:
                with tempfile.TemporaryDirectory(prefix="i2m-render-") as d:
                    mid = write_midi(result.tune, Path(d) / "tune.mid")
                    write_wav(mid, target)
        except ConversionError as e:
            err.print(f"[red]{escape(str(file))}:[/red] {escape(str(e))}")
            failed += 1
            continue
        err.print(f"wrote {escape(str(target))}")
    if failed:
        sys.exit(1)


@main.command("metrics")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@handle_errors
def metrics_cmd(file: Path, as_json: bool) -> None:
    """The 8 MusPy metrics (and checker facts for ABC) of an .abc or .mid FILE.

    Example: i2m metrics music.abc --json
    """
    from image2music.graph.config import load_settings
    from image2music.tools.music.check import check_abc
    from image2music.tools.music.metrics import METRIC_MEANINGS, Metrics, muspy_metrics, tune_metrics

    if not file.is_file():
        raise click.BadParameter(f"file not found: {file}", param_hint="FILE")
    values: Metrics | None
    if file.suffix.lower() in (".mid", ".midi"):
        try:
            values = dict(muspy_metrics(file))
        except (OSError, ValueError, EOFError) as e:
            fail(f"{file} is not a readable MIDI file: {e}", 2)
            return
    else:
        result = check_abc(_read_input(str(file)), load_settings().abc_limits)
        values = tune_metrics(result.tune) if result.ok and result.tune is not None else None
        if values is None:
            fail(f"metrics are not available: {file} has errors (see `i2m abc check {file}`)", 1)
    assert values is not None
    if as_json:
        out.print_json(json.dumps(values))
        return
    for k, v in values.items():
        shown = "not available" if v is None else v
        out.print(f"{k:<22} {shown!s:<10} [dim]{METRIC_MEANINGS.get(k, '')}[/dim]")


# --- knowledge base --------------------------------------------------------------------------------------


@main.group()
def kb() -> None:
    """Build, inspect and query the knowledge base of captioned music."""


@kb.command("build-starter")
@click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL].")
@click.option("--limit", type=int, help="Only the first N tunes (a quick, small base).")
@handle_errors
def kb_build_starter(embed_model: str | None, limit: int | None) -> None:
    """Build the starter base from the ~13,000 ABC tunes bundled with music21 (no download).

    Example: i2m kb build-starter --limit 2000
    """
    from image2music.tools.kb.ingest import build_starter

    settings = settings_from(embed_model=embed_model)
    err.print(f"building the starter knowledge base with {settings.embed_model} in {settings.kb_dir}")
    from image2music.graph.services import get_kb

    stats = build_starter(get_kb(settings), device=settings.vlm_device, limit=limit, progress=True)
    err.print(
        f"[green]done[/green]: {stats['added']} added, {stats['total']} in the base"
        + (
            f", {stats['truncated_captions']} caption(s) truncated to the model's text length"
            if stats["truncated_captions"]
            else ""
        )
    )


@kb.command("ingest-midicaps")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--limit", type=int, help="Only the first N records of train.json.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Processes converting MIDI to ABC.")
@click.option("--retry-skipped", is_flag=True, help="Convert again the records an earlier ingest skipped.")
@click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL].")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and every skip as JSON.")
@handle_errors
def kb_ingest_midicaps(
    directory: Path, limit: int | None, jobs: int, retry_skipped: bool, embed_model: str | None, as_json: bool
) -> None:
    """Add MidiCaps (train.json + MIDI files) to the base; resumes after an interruption, never duplicates.

    Each MIDI file becomes ABC of the whole piece (every track a voice); a record whose location is not a
    file inside DIRECTORY, whose fields are malformed, or whose MIDI is corrupt, empty or drums only is
    skipped with its line and reason.

    Example: i2m kb ingest-midicaps ~/data/midicaps --jobs 2 --limit 10000
    """
    from image2music.graph.services import get_kb
    from image2music.tools.kb.ingest import ingest_midicaps

    settings = settings_from(embed_model=embed_model)
    try:
        counts = ingest_midicaps(
            get_kb(settings), directory, device=settings.vlm_device, limit=limit, jobs=max(1, jobs),
            retry_skipped=retry_skipped,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        fail(str(e), 2)
        return
    if as_json:
        out.print_json(json.dumps(counts))
        return
    err.print(
        f"[green]done[/green]: {counts['added']} added, {counts['present']} already present, "
        f"{counts['skipped']} skipped, {counts['previously_skipped']} skipped by an earlier ingest "
        f"(--retry-skipped converts them again), {counts['total']} in the base"
    )
    for code, n in sorted(counts["reasons"].items(), key=lambda kv: -kv[1]):
        err.print(f"  skipped {n}: {code}")
        for s in [s for s in counts["skips"] if s["code"] == code][:3]:
            err.print(f"    line {s['line']} {escape(repr(s['location']))}: {escape(s['reason'])}", soft_wrap=True)


@kb.command("migrate")
@click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL].")
@handle_errors
def kb_migrate(embed_model: str | None) -> None:
    """Bring a knowledge base built by an earlier version up to date: recompute each entry's 8 MusPy metrics,
    tempo, meter, key and mode with this version's reader (the refine targets need them) and say how many
    entries changed. Safe to run again.

    Example: i2m kb migrate
    """
    from image2music.graph.services import get_kb
    from image2music.tools.kb.ingest import migrate_metrics

    settings = settings_from(embed_model=embed_model)
    kb_ = get_kb(settings)
    if not kb_.exists():
        fail(
            f"no knowledge base for {settings.embed_model} in {settings.kb_dir}; build one with `i2m kb build-starter`",
            1,
        )
    counts = migrate_metrics(kb_)
    err.print(
        f"{counts['updated']} of {counts['entries']} entries changed (metrics recomputed with this version's "
        f"reader; {counts['unreadable']} unreadable)"
    )


@kb.command("stats")
@click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (for scripts).")
@handle_errors
def kb_stats(embed_model: str | None, as_json: bool) -> None:
    """How many entries the base holds for the embedding model, and where.

    Example: i2m kb stats --json
    """
    from image2music.tools.kb.store import KnowledgeBase

    settings = settings_from(embed_model=embed_model)
    info = KnowledgeBase(settings.kb_dir, settings.embed_model, url=settings.chroma_url).info()
    if as_json:
        out.print_json(json.dumps(info))
    else:
        for k, v in info.items():
            out.print(f"{k:<14} {v}")


@kb.command("query")
@click.option("--text", help="Find music whose caption matches this text.")
@click.option("--image", type=click.Path(path_type=Path), help="Find music that matches this image.")
@click.option("-k", "k", type=int, default=3, show_default=True, help="Hits per query.")
@click.option("--embed-model", help="CLIP hub id or local folder [env I2M_EMBED_MODEL].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (for scripts).")
@handle_errors
def kb_query(text: str | None, image: Path | None, k: int, embed_model: str | None, as_json: bool) -> None:
    """Query the base by text and/or image.

    Example: i2m kb query --text "a slow melancholic air in D minor" -k 5
    """
    from image2music.tools.embedder import get_embedder
    from image2music.tools.images import load_image
    from image2music.tools.kb.retrieval import retrieve
    from image2music.tools.kb.store import KnowledgeBase

    if not text and image is None:
        raise click.UsageError("give --text, --image or both")
    settings = settings_from(embed_model=embed_model)
    base = KnowledgeBase(settings.kb_dir, settings.embed_model, url=settings.chroma_url)
    img = load_image(image) if image is not None else None
    refs = retrieve(
        base, get_embedder(settings.embed_model, settings.vlm_device), img, text, k, settings.score_threshold
    )
    if as_json:
        out.print_json(json.dumps(refs, ensure_ascii=False))
        return
    from rich.table import Table

    from image2music.display import safe

    table = Table("score", "via", "id", "caption")
    for r in refs:
        table.add_row(f"{r['score']:.3f}", safe(r["via"]), safe(r["id"]), safe(r["caption"]))
    out.print(table, soft_wrap=False)


# --- runs ------------------------------------------------------------------------------------------------


@main.group()
def runs() -> None:
    """List, show, resume, replay and compare runs (they live in I2M_HOME/runs.sqlite).

    RUN_ID is a run id as `i2m runs list` prints it (e.g. 20261126-130241-fbeb89), or a literal prefix of at
    least 4 characters that matches exactly one run (e.g. 20261126-1302).
    """


@runs.command("list")
@click.option("-n", "limit", type=int, default=20, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (for scripts).")
@handle_errors
def runs_list(limit: int, as_json: bool) -> None:
    """The latest runs.

    Example: i2m runs list -n 5
    """
    import time as _time

    from image2music.rundb import connect_db, list_runs

    conn = connect_db(settings_from())
    try:
        infos = list_runs(conn, limit)
    finally:
        conn.close()
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "run_id": i.run_id,
                        "status": i.status,
                        "image": i.image,
                        "run_dir": str(i.run_dir),
                        "created": i.created,
                        "parent": i.parent,
                    }
                    for i in infos
                ]
            )
        )
        return
    from rich.table import Column, Table

    from image2music.display import safe

    # the run id is never cut (it is what people copy); long paths fold instead
    table = Table(
        Column("run id", no_wrap=True, min_width=22),
        Column("status", no_wrap=True),
        Column("created", no_wrap=True),
        Column("image", overflow="fold"),
        Column("run dir", overflow="fold"),
    )
    for i in infos:
        colour = {"ok": "green", "failed": "red"}.get(i.status, "yellow")
        table.add_row(
            i.run_id,
            f"[{colour}]{i.status}[/{colour}]",
            _time.strftime("%Y-%m-%d %H:%M", _time.localtime(i.created)),
            safe(Path(i.image).name),
            safe(str(i.run_dir)),
        )
    out.print(table, soft_wrap=False)


def _load_run(run_id: str) -> tuple[Any, RunRecord]:
    from image2music.outputs import load_record
    from image2music.resume import recovered_run
    from image2music.rundb import connect_db

    conn = connect_db(settings_from())
    try:
        info = recovered_run(conn, run_id)
    finally:
        conn.close()
    try:
        rec = load_record(info.run_dir)
    except (OSError, ValueError) as e:
        fail(
            f"run {info.run_id} has no readable run.json in {info.run_dir} ({e}); "
            f"if it was interrupted, `i2m runs resume {info.run_id}`",
            1,
        )
        raise
    if rec.get("run_id") != info.run_id:  # its folder was given to a later run (-o)
        fail(
            f"run {info.run_id} was replaced by run {rec.get('run_id')} in {info.run_dir} (-o onto the same "
            f"folder); its files are gone: `i2m runs show {rec.get('run_id')}`",
            1,
        )
    return info, rec


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print run.json.")
@handle_errors
def runs_show(run_id: str, as_json: bool) -> None:
    """A run's description, references, versions with metrics, final ABC and motivation.

    Example: i2m runs show 20261126-130241-fbeb89   (or its first characters: i2m runs show 20261126-1302)
    """
    info, rec = _load_run(run_id)
    if as_json:
        out.print_json(json.dumps(rec, ensure_ascii=False))
        return
    from image2music.display import show_record

    show_record(out, rec, info.run_dir)


@runs.command("resume")
@click.argument("run_id")
@click.option(
    "--base-url",
    help="Serve the rest of the run from this OpenAI-compatible server (default: the server the run was started "
    "with; the environment's I2M_VLM_BASE_URL does not change a stored run).",
)
@click.option("--json", "as_json", is_flag=True, help="Print run.json to stdout.")
@handle_errors
def runs_resume(run_id: str, base_url: str | None, as_json: bool) -> None:
    """Continue an interrupted run; nodes that had finished are not run again. The run goes on with the settings
    it was started with (the API key comes from the environment); --base-url moves it to another server.

    Example: i2m runs resume 20261126-130241-fbeb89 --base-url http://gpu-box:8000/v1
    """
    from image2music.display import NodeProgress
    from image2music.resume import resume_run

    with NodeProgress(err) as progress:
        result = resume_run(
            run_id,
            settings_from(),
            on_event=progress,
            notify=lambda m: err.print(f"[yellow]{escape(m)}[/yellow]"),
            on_text=None if as_json else progress.text,
            **({"vlm_base_url": base_url} if base_url else {}),
        )
    report_result(result, as_json)


@runs.command("replay")
@click.argument("run_id")
@click.option(
    "--from",
    "from_node",
    required=True,
    type=click.Choice(NODE_IDS),
    help="Re-run from this node; the nodes before it come from the record.",
)
@click.option("--prompt", "prompt_files", multiple=True, metavar="NODE=FILE", help="Use FILE as the prompt of NODE.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Run dir of the new run.")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print run.json to stdout.")
@handle_errors
def runs_replay(
    run_id: str, from_node: str, prompt_files: tuple[str, ...], output: Path | None, as_json: bool, **flags: Any
) -> None:
    """A new run from a checkpoint of RUN_ID, e.g. to try another prompt for compose.

    Example: i2m runs replay 20261126-130241-fbeb89 --from compose --prompt compose=my_compose.md
    """
    from image2music.display import NodeProgress
    from image2music.resume import replay_run

    overrides = {k: v for k, v in flags.items() if v is not None}
    if overrides.get("replay_file") is not None and overrides.get("vlm_backend") is None:
        overrides["vlm_backend"] = "replay"
    with NodeProgress(err) as progress:
        result = replay_run(
            run_id,
            from_node,
            settings_from(),
            prompt_overrides=parse_prompt_overrides(prompt_files),
            on_event=progress,
            notify=lambda m: err.print(f"[yellow]{escape(m)}[/yellow]"),
            run_dir=output,
            on_text=None if as_json else progress.text,
            **overrides,
        )
    report_result(result, as_json)


@runs.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@handle_errors
def runs_diff(run_a: str, run_b: str) -> None:
    """Two runs side by side: prompts, final ABC and metrics.

    Example: i2m runs diff 20261126-130241-fbeb89 20261126-131502-0c4d2a
    """
    import difflib

    from rich.table import Table

    from image2music.display import safe, terminal_safe
    from image2music.tools.music.metrics import METRIC_MEANINGS

    (ia, ra), (ib, rb) = _load_run(run_a), _load_run(run_b)
    out.print(f"[bold]{ra['run_id']}[/bold] ({ra['status']})  vs  [bold]{rb['run_id']}[/bold] ({rb['status']})")
    for node in sorted(set(ra.get("prompts", {})) | set(rb.get("prompts", {}))):
        pa = ia.run_dir / "prompts" / f"{node}.md"
        pb = ib.run_dir / "prompts" / f"{node}.md"
        ta = pa.read_text(encoding="utf-8") if pa.exists() else ""
        tb = pb.read_text(encoding="utf-8") if pb.exists() else ""
        if ta == tb:
            out.print(f"prompt {node}: same")
            continue
        out.print(f"[bold]prompt {node}[/bold]: differs")
        for line in difflib.unified_diff(ta.splitlines(), tb.splitlines(), "A", "B", lineterm="", n=1):
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            out.print(Text(terminal_safe(line), style=style), highlight=False)
    final_a: dict[str, Any] = dict(ra.get("final") or {})
    final_b: dict[str, Any] = dict(rb.get("final") or {})
    fa, fb = final_a.get("abc", ""), final_b.get("abc", "")
    t = Table("final ABC of A", "final ABC of B")
    t.add_row(safe(fa or "(none)"), safe(fb or "(none)"))
    out.print(t, soft_wrap=False)
    m = Table("metric", "A", "B", title="final metrics")
    ma = final_a.get("metrics") or {}
    mb = final_b.get("metrics") or {}
    for name in METRIC_MEANINGS:
        a, b = ma.get(name), mb.get(name)
        mark = "" if a == b else " *"
        m.add_row(name + mark, "-" if a is None else str(a), "-" if b is None else str(b))
    out.print(m, soft_wrap=False)


# --- graph, prompts, batch -------------------------------------------------------------------------------


@main.command("graph")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "ascii", "png"]),
    default="mermaid",
    show_default=True,
    help="mermaid (paste into any mermaid viewer), ascii (a vertical list), png (needs graphviz).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to FILE (PNG needs it).")
@click.option("--run", "run_id", help="Draw the path this run actually took (retries, rounds, seconds).")
@handle_errors
def graph_cmd(fmt: str, output: Path | None, run_id: str | None) -> None:
    """Draw the graph (mermaid text, ASCII, or PNG with graphviz, offline).

    Examples: i2m graph --format ascii;  i2m graph --format png -o graph.png;  i2m graph --run 20261126-130241-fbeb89
    """
    from image2music import viz
    from image2music.tools.files import atomic_write_bytes, atomic_write_text

    record = _load_run(run_id)[1] if run_id else None
    try:
        if fmt == "png":
            if output is None:
                raise click.UsageError("--format png needs -o FILE")
            text_dot = viz.run_path_dot(record) if record else viz.dot()
            atomic_write_bytes(output, viz.render_png(text_dot))
            err.print(f"wrote {output}")
            return
    except viz.VizError as e:
        fail(str(e), 1)
    if record:
        text = viz.run_path_mermaid(record) if fmt == "mermaid" else viz.run_path_ascii(record)
    else:
        text = viz.mermaid() if fmt == "mermaid" else viz.ascii_art()
    if output is not None:
        atomic_write_text(output, text)
        err.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@main.group("prompts")
def prompts_cmd() -> None:
    """The prompt templates (files with $variables) and how to override them per run."""


@prompts_cmd.command("list")
def prompts_list() -> None:
    """Every prompt with its variables (required, optional).

    Example: i2m prompts list
    """
    from image2music import prompts as p

    for name, spec in p.SPECS.items():
        req = ", ".join("$" + v for v in sorted(spec.required)) or "-"
        opt = ", ".join("$" + v for v in sorted(spec.optional)) or "-"
        out.print(f"{name:<9} required: {req:<40} optional: {opt}")


@prompts_cmd.command("show")
@click.argument("name")
@handle_errors
def prompts_show(name: str) -> None:
    """Print a built-in prompt.

    Example: i2m prompts show compose
    """
    from image2music import prompts as p

    click.echo(p.load(name).text, nl=False)


@prompts_cmd.command("path")
@click.argument("name")
@handle_errors
def prompts_path(name: str) -> None:
    """Where a built-in prompt file is (copy it, edit it, pass it with --prompt NAME=FILE).

    Example: cp $(i2m prompts path compose) my_compose.md
    """
    from image2music import prompts as p

    click.echo(str(p.builtin_path(name)))


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="DIR|FILES...")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="One sub-folder per image.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Images composed at the same time.")
@model_options
@click.option("--prompt", "prompt_files", multiple=True, metavar="NODE=FILE", help="Use FILE as the prompt of NODE.")
@click.option("--json", "as_json", is_flag=True, help="Print the results.jsonl rows as a JSON list.")
@handle_errors
def batch(
    inputs: tuple[str, ...], output: Path, jobs: int, prompt_files: tuple[str, ...], as_json: bool, **flags: Any
) -> None:
    """Compose music for many images; one failure never stops the batch. Exit 1 if any image failed.

    Example: i2m batch photos/ -o out/ --jobs 2
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from image2music.batch import collect_images, run_batch

    settings = settings_from(**flags)
    overrides = parse_prompt_overrides(prompt_files)
    from image2music import prompts as p

    p.load_all(overrides)  # a bad prompt file stops the batch before any image
    missing = [i for i in inputs if not Path(i).expanduser().exists()]
    if len(missing) == len(inputs):  # nothing to do at all: refused before a run starts
        fail("no such file or folder: " + ", ".join(missing), 2)
    images = collect_images(inputs)
    if not images:
        fail("no images found in " + ", ".join(inputs), 2)
    require_model(settings)  # once, not a failure per image
    with Progress(
        TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("images", total=len(images))

        def done(row: BatchRow) -> None:
            colour = "green" if row["status"] == "ok" else "red"
            err.print(
                f"  [{colour}]{row['status']:<8}[/{colour}] {escape(row['path'])}"
                + (f"  ({escape(row['reason'])})" if row["reason"] else "")
            )
            bar.advance(task)

        try:
            rows = run_batch(
                images, output, settings, jobs=max(1, jobs), prompt_overrides=overrides, on_done=done,
                notify=lambda m: err.print(f"[yellow]{escape(m)}[/yellow]"),
            )  # fmt: skip
        except KeyboardInterrupt:  # every run in flight was stopped with its record; each image has its line
            err.print(f"stopped; results in {output / 'results.jsonl'} (the cancelled runs: `i2m runs resume ID`)")
            raise
    n_ok = sum(r["status"] == "ok" for r in rows)
    err.print(f"{n_ok}/{len(rows)} ok; results in {output / 'results.jsonl'}")
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
    sys.exit(0 if n_ok == len(rows) else 1)


@main.command("eval")
@click.argument("images", nargs=-1, required=True, metavar="IMAGES...")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where results go.")
@click.option(
    "--ablation",
    default="full,fixed,no-rag,no-refine,none",
    show_default=True,
    help="Configurations, comma-separated: full (the refine policy of your settings, feedback by default), fixed "
    "(one fixed refine round, as in the paper), no-rag, no-refine, none.",
)
@click.option(
    "--judge", default="none", show_default=True, help="none | self (the run's model) | a VLM hub id or local folder."
)
@click.option(
    "--judge-retries", type=int, default=2, show_default=True, help="Retries after an unreadable judge answer."
)
@model_options
@handle_errors
def eval_cmd(
    images: tuple[str, ...], output: Path, ablation: str, judge: str, judge_retries: int, **flags: Any
) -> None:
    """Reproduce the paper's ablation on any model: every configuration on every image, same seed.

    Writes results.csv (image x configuration), summary.md (Table II shape) and metrics.png.

    Example: i2m eval photos/*.jpg -o eval/ --judge self
    """
    from image2music.batch import collect_images
    from image2music.evaluation import run_eval

    settings = settings_from(**flags)
    imgs = collect_images(images)
    if not imgs:
        fail("no images given", 2)
    configs = [c.strip() for c in ablation.split(",") if c.strip()]

    def row(r: EvalRow) -> None:
        colour = "green" if r["status"] == "ok" else "red"
        line = f"  [{colour}]{r['status']:<6}[/{colour}] {r['config']:<10} {escape(Path(str(r['image'])).name)}"
        if r.get("judge_error"):  # the run is fine, its judging is not: said here, not only in results.csv
            line += f"  [yellow]judge: {escape(str(r['judge_error']))}[/yellow]"
        err.print(line)

    try:
        run_eval(imgs, output, settings, ablation=configs, judge=judge, judge_retries=judge_retries, on_row=row)
    except ValueError as e:
        fail(str(e), 2)
    err.print(f"wrote {output / 'results.csv'}, {output / 'summary.md'}, {output / 'metrics.png'}")
    click.echo((output / "summary.md").read_text(encoding="utf-8"))


@main.command()
@model_options
@handle_errors
def chat(**flags: Any) -> None:
    """An interactive session: give an image, watch the graph run, then accept, refine with your own
    words, play, open another image or quit. Ctrl-C cancels the current run, not the session.

    Example: i2m chat --vlm-model Qwen/Qwen3-VL-4B-Instruct
    """
    from image2music.chat import ChatSession, enable_path_completion

    settings = settings_from(**flags)
    require_model(settings)
    enable_path_completion()
    ChatSession(settings, err).loop()


def run() -> None:
    """The ``i2m`` program: the CLI with SIGTERM handled as a stop (not installed when embedded)."""
    from image2music.tools.errors import stop_on_sigterm

    stop_on_sigterm()
    try:
        main()
    finally:
        # Exit without a last collection over everything the imports and the command built (0.3 s at every
        # exit, after the last output): those objects are left to the end of the process. The atexit
        # handlers still run, and objects freed by reference counting are finalized as before.
        import gc

        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    run()
