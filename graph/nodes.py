"""One node per step of the method. Nodes are thin: they call tools and return partial state."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, cast

from langgraph.runtime import Runtime
from langgraph.types import Overwrite, interrupt

from image2music.graph import services
from image2music.graph.context import RunContext, context_of
from image2music.graph.routing import decide_after_evaluate, decide_after_parse_check
from image2music.graph.state import AttentionMap, Draft, State, Version, upsert_versions
from image2music.graph.versions import (
    best_version,
    final_version,
    latest_valid,
    refine_base,
    render_findings,
    retry_feedback,
)
from image2music.tools.files import atomic_write_bytes, atomic_write_text
from image2music.tools.kb.retrieval import format_examples
from image2music.tools.music.abcparse import read_tune
from image2music.tools.music.check import CheckResult, check_abc
from image2music.tools.music.convert import midi_bytes
from image2music.tools.music.findings import Finding
from image2music.tools.music.metrics import describe_metrics, tune_metrics
from image2music.tools.music.sections import section_maps
from image2music.tools.music.targets import feedback_items, score, targets_for
from image2music.tools.vlm import strip_think

NodeFn = Callable[[State, Runtime[RunContext]], State]
MAX_WORDS_CHARS = 2000
"""A person's words for a refine round are cut to this many characters (they go into the prompt)."""


def timed(name: str) -> Callable[[NodeFn], NodeFn]:
    """Record the node id and its seconds in ``path`` / ``timings``."""

    def deco(fn: NodeFn) -> NodeFn:
        @functools.wraps(fn)
        def wrapper(state: State, runtime: Runtime[RunContext]) -> State:
            t0 = time.perf_counter()
            update = fn(state, runtime)
            path, timings = [name], [round(time.perf_counter() - t0, 4)]
            if isinstance(update.get("path"), Overwrite):  # the first step of a new run on the thread
                return cast(State, {**update, "path": Overwrite(path), "timings": Overwrite(timings)})
            return {**update, "path": path, "timings": timings}

        return wrapper

    return deco


def _internal(error: Exception, what: str) -> Finding:
    return Finding(f"{what} failed on this tune: {type(error).__name__}: {error}", code="internal")


FIXED_GUIDANCE = (
    "Use the measures as hints, not as targets: decide yourself which values suit this image (for example, calm "
    "scenes suit a narrow range and few empty beats; lively ones more pitches and rhythmic variety)."
)


def target_lines(version: Version, targets: dict[str, Any]) -> str:
    """The targeted measures of a version next to their target for this image, one per line."""
    metrics = version.get("metrics") or {}
    lines = []
    for name, t in targets.items():
        if name == "mode":
            lines.append(f"- key = {metrics.get('key')}; the description asks for a {t['mode']} mood")
        elif "low" in t:
            lines.append(f"- {name} = {metrics.get(name)}; target {t['low']:g} to {t['high']:g} ({t['source']})")
    return "\n".join(lines) or "(no measurable targets for this image)"


def miss_lines(version: Version) -> str:
    """What the version misses, as the reflect prompt's task list."""
    items = version.get("feedback") or []
    if not items:
        return "Every measure is within its target; improve the music where you hear fit, keep the measures in range."
    return "Fix these, measured against the targets for this image:\n" + "\n".join(f"- {it['message']}" for it in items)


def _vlm_facts(node: str, res: Any) -> State:
    """What a VLM call tells the run besides its text: vision-tower forwards, a note (e.g. no map, and why)."""
    meta = res.meta or {}
    out: State = {"calls": {node: 1}, "vision_encodes": int(meta.get("vision_forwards", 0))}
    if meta.get("note"):
        out["notes"] = [f"{node}: {meta['note']}"]
    return out


def _draft(node: str, res: Any) -> Draft:
    """A writer's answer, not yet checked, with its attention per section."""
    return {"node": node, "text": res.text, "attention": cast(dict[str, AttentionMap], section_maps(res))}


def _stream(runtime: Runtime[RunContext], node: str, call: int) -> Callable[[str], None]:
    """Where the model's text goes as it is written: LangGraph's ``custom`` stream (a no-op unless a client
    asked for it), one event per piece: ``{"kind": "text", "node", "call", "text"}``."""
    writer = runtime.stream_writer
    return lambda piece: writer({"kind": "text", "node": node, "call": call, "text": piece})


def _calls(state: State, node: str) -> int:
    return int(state.get("calls", {}).get(node, 0))


def _prompt(ctx: RunContext, node: str, **values: str) -> str:
    return services.get_prompts(ctx.prompt_paths)[node].render(**values)


@timed("describe")
def describe(state: State, runtime: Runtime[RunContext]) -> State:
    """Describe the image (and capture where the model looked while doing it)."""
    ctx = context_of(state, runtime)
    prompt = _prompt(ctx, "describe")
    capture = ctx.settings.attention_maps
    # describe starts every run; a state that already has steps is an earlier run on the same thread (LangGraph's
    # server, Studio): this run starts afresh, the earlier one's versions, decisions and counters are replaced
    again = bool(state.get("path"))
    call = 0 if again else _calls(state, "describe")
    res = services.ask(
        ctx, "describe", prompt, call, capture_attention=capture, on_text=_stream(runtime, "describe", call)
    )
    update: State = {"description": strip_think(res.text), **_vlm_facts("describe", res)}
    grid = res.attention_map()
    method = "vlm-attention"
    fallback = services.get_fallback_map(ctx.settings)
    description = update["description"]
    if grid is None and fallback is not None and description:
        grid, method = fallback(services.get_image(ctx.image_path), description), "clip-occlusion"
    if grid is not None:
        update["attention"] = {
            "describe": {"grid": grid.round(6).tolist(), "shape": list(grid.shape), "method": method}
        }
    return _fresh_run(update) if again else update


def _fresh_run(update: State) -> State:
    """``update`` as the first step of a new run on a thread: what accumulates is replaced, not added to."""
    fresh = {
        "versions": Overwrite([]),
        "decisions": Overwrite([]),
        "path": Overwrite([]),
        "calls": Overwrite(update.get("calls", {})),
        "vision_encodes": Overwrite(update.get("vision_encodes", 0)),
        "notes": Overwrite(update.get("notes", [])),
        "attention": Overwrite(update.get("attention", {})),
    }
    cleared: State = {"references": [], "parse_failures": 0, "refine_round": 0, "status": "running", "reason": None}
    return cast(State, {**update, **cleared, **fresh})  # Overwrite: LangGraph's word to a reducer, not a value


@timed("retrieve")
def retrieve(state: State, runtime: Runtime[RunContext]) -> State:
    """Find reference music similar to the image and to its description."""
    ctx = context_of(state, runtime)
    retriever = services.get_retriever(ctx.settings)
    description = state.get("description", "")
    refs = retriever(services.get_image(ctx.image_path), description) if retriever else []
    s = ctx.settings
    return {"references": refs, "targets": targets_for(refs, description, s.target_margin, s.target_fallback)}


@timed("compose")
def compose(state: State, runtime: Runtime[RunContext]) -> State:
    """Write music for the image, guided by the references (and by the checker's errors on a retry)."""
    ctx = context_of(state, runtime)
    versions = state.get("versions", [])
    feedback = retry_feedback(versions[-1]) if state.get("parse_failures", 0) and versions else ""
    prompt = _prompt(
        ctx,
        "compose",
        description=state.get("description", ""),
        examples=format_examples(state.get("references", []), ctx.settings.example_max_chars),
        feedback=feedback,
    )
    call = _calls(state, "compose")
    res = services.ask(
        ctx, "compose", prompt, call, ctx.settings.attention_maps, on_text=_stream(runtime, "compose", call)
    )
    return {"draft": _draft("compose", res), **_vlm_facts("compose", res)}


@timed("parse_check")
def parse_check(state: State, runtime: Runtime[RunContext]) -> State:
    """Extract and check the draft; write its ABC and MIDI; count failures against the budget."""
    ctx = context_of(state, runtime)
    draft = state.get("draft")
    assert draft is not None, "parse_check runs after a writer's draft"
    versions = state.get("versions", [])
    try:
        result = check_abc(draft["text"], ctx.settings.abc_limits)
        midi = midi_bytes(result.tune) if result.ok and result.tune is not None else None
    except Exception as e:  # noqa: BLE001 - a music tool failing on model output is a finding, not a crash
        result = CheckResult(True, draft["text"], "", None, errors=[_internal(e, "checking and MIDI")])
        midi = None
    index = len(versions)
    version: Version = {
        "index": index,
        "node": draft["node"],
        "abc": result.abc,
        "ok": result.ok,
        "errors": [f.to_dict() for f in result.errors],  # type: ignore[misc]
        "warnings": [f.to_dict() for f in result.warnings],  # type: ignore[misc]
        "metrics": None,
        "commentary": result.commentary,
        "title": result.title,
        "attention_maps": draft.get("attention") or {},
    }
    files: dict[str, str] = {}
    if result.abc:
        files["abc"] = f"versions/v{index + 1}.abc"
        atomic_write_text(ctx.run_dir / files["abc"], result.abc)
    if midi is not None:
        files["midi"] = f"versions/v{index + 1}.mid"
        atomic_write_bytes(ctx.run_dir / files["midi"], midi)
    version["files"] = files
    failures = 0 if result.ok else int(state.get("parse_failures", 0)) + 1
    update: State = {"versions": [version], "parse_failures": failures}
    # the decision is made once, on the state this update leaves (merged by the state's own reducer)
    decision = decide_after_parse_check(
        {**state, **update, "versions": upsert_versions(versions, [version])}, ctx.settings
    )
    update["decisions"] = [decision]
    if decision["to"] == "__end__":
        kept = latest_valid(versions)
        where = "compose" if draft["node"] == "compose" else f"reflect round {state.get('refine_round', 0)}"
        update["status"] = "failed"
        update["reason"] = (
            f"no valid ABC after {failures} attempt(s) in {where} (I2M_MAX_PARSE_RETRIES="
            f"{ctx.settings.max_parse_retries}); last errors: "
            + "; ".join(Finding.from_dict(e).render() for e in version["errors"][:3])
            + (f"; kept version {kept['index'] + 1}" if kept else "")
        )
    return update


@timed("evaluate")
def evaluate(state: State, runtime: Runtime[RunContext]) -> State:
    """Measure the latest version with the MusPy metrics and what the checker knows."""
    ctx = context_of(state, runtime)
    versions = state.get("versions", [])
    version = versions[-1]
    try:
        metrics = tune_metrics(read_tune(version["abc"], ctx.settings.abc_limits)) or {}
        warnings = list(version["warnings"])
    except Exception as e:  # noqa: BLE001 - a metric failing on model output must not end the run
        metrics, warnings = {}, [*version["warnings"], _internal(e, "the metrics").to_dict()]  # type: ignore[list-item]
    targets = state.get("targets") or {}
    items = feedback_items(metrics, warnings, targets)
    measured: Version = {**version, "metrics": metrics, "warnings": warnings, "feedback": items}  # type: ignore[typeddict-item]
    measured["score"] = score(items, targets)
    decision = decide_after_evaluate({**state, "versions": upsert_versions(versions, [measured])}, ctx.settings)
    return {"versions": [measured], "decisions": [decision]}


@timed("reflect")
def reflect(state: State, runtime: Runtime[RunContext]) -> State:
    """Revise the latest valid version using its metrics and warnings (and a person's words, if any)."""
    ctx = context_of(state, runtime)
    versions = state.get("versions", [])
    policy = ctx.settings.refine_policy
    base = refine_base(versions, policy)
    assert base is not None, "reflect runs only after a valid version was evaluated"
    failures = int(state.get("parse_failures", 0))
    feedback = retry_feedback(versions[-1]) if failures else ""
    user = state.get("user_feedback") or ""
    if not failures and not user and (ctx.settings.human_pause or state.get("human_pause")):
        # the run waits for a person (LangGraph's interrupt: the node runs again from here when resumed with
        # Command(resume=words)); nothing above has side effects
        answer = interrupt(
            {
                "kind": "refine",
                "round": int(state.get("refine_round", 0)) + 1,
                "question": "your words for the composer (empty: let the model decide)",
            }
        )
        user = answer.strip()[:MAX_WORDS_CHARS] if isinstance(answer, str) else ""
    if policy == "fixed":
        metrics, targets = describe_metrics(base.get("metrics") or {}), FIXED_GUIDANCE
    else:
        metrics, targets = target_lines(base, state.get("targets") or {}), miss_lines(base)
    prompt = _prompt(
        ctx,
        "reflect",
        description=state.get("description", ""),
        abc=base["abc"].strip(),
        metrics=metrics,
        targets=targets,
        warnings=render_findings(base["warnings"]) or "(none)",
        user_feedback=f"The listener asks for this change: {user}\n" if user else "",
        feedback=feedback,
    )
    call = _calls(state, "reflect")
    res = services.ask(
        ctx, "reflect", prompt, call, ctx.settings.attention_maps, on_text=_stream(runtime, "reflect", call)
    )
    update: State = {"draft": _draft("reflect", res), **_vlm_facts("reflect", res)}
    if not failures:
        update["refine_round"] = int(state.get("refine_round", 0)) + 1
    if user:
        update["user_feedback"] = ""
    return update


@timed("explain")
def explain(state: State, runtime: Runtime[RunContext]) -> State:
    """Explain in words why the final music sounds as it does."""
    ctx = context_of(state, runtime)
    best = best_version(state.get("versions", []))
    assert best is not None and best["ok"], "explain runs only with a valid version"
    prompt = _prompt(
        ctx,
        "explain",
        description=state.get("description", ""),
        abc=best["abc"].strip(),
        commentary=best.get("commentary", ""),
    )
    call = _calls(state, "explain")
    res = services.ask(ctx, "explain", prompt, call, on_text=_stream(runtime, "explain", call))
    return {
        "motivation": strip_think(res.text),
        "status": "ok",
        "reason": None,
        "final": final_version(best),
        **_vlm_facts("explain", res),
    }
