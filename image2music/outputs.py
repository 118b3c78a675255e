"""The outputs of a run: run.json (the run record), the final music files, attention overlays, the report."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from image2music.graph import services
from image2music.graph.context import RunContext
from image2music.graph.state import State, Version
from image2music.graph.versions import best_version, final_version
from image2music.record import FinalMusic, RunExtra, RunRecord, build_record
from image2music.rundb import public_settings
from image2music.tools.attention import save_overlay
from image2music.tools.files import atomic_write_json, atomic_write_text, safe_name
from image2music.tools.music.abcparse import Tune, read_tune
from image2music.tools.music.convert import ConversionError, mp3_bytes, write_midi, write_musicxml, write_svg, write_wav


@dataclass
class RunResult:
    """What a run produced; ``record`` is the content of run.json."""

    run_id: str
    run_dir: Path
    record: RunRecord
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


@dataclass
class MusicFiles:
    """The final music's files: its one reading (the report draws it), {key: file}, and notes on what failed."""

    tune: Tune | None
    files: dict[str, str]
    notes: list[str]


def render_files(ctx: RunContext, abc: str) -> MusicFiles:
    """music.mid, then the optional files the settings ask for (MusicXML, WAV, SVG; the report's audio preview
    is encoded from the WAV and kept for the report), each under its deadline. A tune that cannot be written as
    MIDI gets none of them (the note says why)."""
    run_dir, limit = ctx.run_dir, ctx.settings.convert_timeout_s
    out = MusicFiles(None, {}, [])
    try:
        tune = read_tune(abc, ctx.settings.abc_limits)  # the one reading the outputs share
        write_midi(tune, run_dir / "music.mid")
    except Exception as e:  # noqa: BLE001 - the record is written whatever a writer does
        out.notes.append(f"midi: {type(e).__name__}: {e}")
        return out
    out.tune, out.files["midi"] = tune, "music.mid"
    for key, fn, fname in (
        ("musicxml", lambda: write_musicxml(abc, run_dir / "music.musicxml", limit), "music.musicxml"),
        ("wav", lambda: write_wav(run_dir / "music.mid", run_dir / "music.wav", limit), "music.wav"),
        ("svg", lambda: write_svg(abc, run_dir / "music.svg", limit), "music.svg"),
    ):
        if not ctx.settings.writes(key):
            continue  # not asked for (I2M_FORMATS / --formats)
        try:
            fn()
            out.files[key] = fname
        except ConversionError as e:
            out.notes.append(f"{key}: {e}")
    if "wav" in out.files and ctx.settings.writes("report"):
        try:
            mp3_bytes(run_dir / "music.wav")  # kept for the report (see mp3_bytes)
        except ConversionError:
            pass  # the report links the WAV instead
    return out


class Renders:
    """:func:`render_files` for a tune in the background: the runner starts it when the graph heads to explain,
    so the conversions run while the model writes the explanation; :func:`write_outputs` takes the result if
    the final music is still that tune (else it renders again)."""

    def __init__(self, ctx: RunContext, abc: str) -> None:
        self.abc = abc
        self._out: MusicFiles | None = None
        self._ctx = ctx
        self._thread = threading.Thread(target=self._work, name=f"i2m-render-{ctx.run_id}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._out = render_files(self._ctx, self.abc)
        except Exception:  # noqa: BLE001 - write_outputs renders again and reports what fails
            self._out = None

    def result(self) -> MusicFiles | None:
        """What was rendered (waiting for it: each conversion has its deadline), or None if it failed."""
        self._thread.join()
        return self._out


def write_outputs(
    ctx: RunContext,
    state: State,
    error: str | None = None,
    extra: RunExtra | None = None,
    renders: Renders | None = None,
) -> RunResult:
    """Write run.json, the final music files and the attention maps from a (final or interrupted) state;
    ``renders``: the final music's files already being made in the background."""
    run_dir = ctx.run_dir
    # the background render is joined first, whatever the final music is: a render of a tune that is no longer
    # the final one must not write its files over the final one's after this returns
    rendered = renders.result() if renders is not None else None
    files: dict[str, str] = {}
    extra = extra or {}
    notes: list[str] = [*extra.get("start_notes", []), *state.get("notes", [])]
    versions = state.get("versions", [])
    best = best_version(versions)
    final: FinalMusic | None = None
    final_tune = None
    if best is not None and best["ok"]:
        final = final_version(best)
        atomic_write_text(run_dir / "music.abc", best["abc"])
        files["abc"] = "music.abc"
        done = rendered if renders is not None and renders.abc == best["abc"] else None
        music = done or render_files(ctx, best["abc"])
        final_tune = music.tune
        files.update(music.files)
        notes.extend(music.notes)
    attention_files = write_attention_maps(ctx, state, best if final is not None else None)
    if "describe" in attention_files:
        files["attention"] = "attention.png"
    prompt_paths = write_prompt_copies(ctx)
    if ctx.settings.writes("report"):
        files["report"] = "report.html"
    record = build_record(
        ctx.run_id,
        str(ctx.image_path),
        state,
        final=final,
        files=files,
        notes=notes,
        prompts=prompt_paths,
        attention_files=attention_files,
        settings=public_settings(ctx.settings),  # every public setting (never the key): what the database keeps
        server_retries=tidy_calls(run_dir / "vlm_calls.jsonl", dict(state.get("calls", {}))),
        error=error,
        extra=extra,
        secrets=ctx.settings.secret_values(),
    )
    atomic_write_json(run_dir / "run.json", record)
    if ctx.settings.writes("report"):
        from image2music.report import write_report

        write_report(record, run_dir, final_tune)
    return RunResult(run_id=ctx.run_id, run_dir=run_dir, record=record, files=files)


def write_attention_maps(ctx: RunContext, state: State, final: Version | None) -> dict[str, str]:
    """The run's attention maps over the image (whole answers, and the final version's sections), as PNG files:
    name -> file name."""
    out: dict[str, str] = {}
    maps = [(name, att, "attention.png" if name == "describe" else f"attention-{safe_name(name, default='map')}.png")
            for name, att in (state.get("attention") or {}).items()]  # fmt: skip
    maps += [(f"section: {section}", att, f"attention-section-{safe_name(section, default='part')}.png")
             for section, att in ((final.get("attention_maps") if final else None) or {}).items()]  # fmt: skip
    if maps:
        image = services.get_image(ctx.image_path)
        for name, att, fname in maps:
            save_overlay(image, np.asarray(att["grid"], dtype=np.float32), ctx.run_dir / fname)
            out[name] = fname
    return out


def write_prompt_copies(ctx: RunContext) -> dict[str, str]:
    """Copies of the prompts this run used (``prompts/NODE.md``), so a run can be read and re-run later: node ->
    where the prompt came from."""
    paths = {}
    for name, p in services.get_prompts(ctx.prompt_paths).items():
        atomic_write_text(ctx.run_dir / "prompts" / f"{name}.md", p.text)
        paths[name] = str(p.path)
    return paths


def tidy_calls(path: Path, counts: dict[str, int]) -> list[str]:
    """Make vlm_calls.jsonl match the checkpointed state: one line per (node, call index), none past what the
    state counted (an answer whose checkpoint a kill -9 lost is asked again on resume and must not be doubled),
    so the file always replays the run exactly. Returns the server retries it records."""
    import json

    if not path.exists():
        return []
    kept: dict[tuple[str, int], str] = {}
    order: list[tuple[str, int]] = []
    retries: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
            key = (str(obj["node"]), int(obj.get("call", 0)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if key[0] in counts and key[1] >= counts[key[0]]:
            continue
        if key not in kept:
            order.append(key)
        kept[key] = line
        retries += [f"{key[0]} call {key[1] + 1}: {r}" for r in obj.get("retries") or []]
    text = "".join(kept[k] + "\n" for k in order)
    if text != path.read_text(encoding="utf-8", errors="replace"):
        atomic_write_text(path, text)
    return retries


def load_record(run_dir: Path) -> RunRecord:
    """The run.json of a run dir."""
    import json

    record: RunRecord = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    return record
