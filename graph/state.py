"""The graph's state: what each node reads and the partial updates it returns, with typed records."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, Required, get_args

from typing_extensions import TypedDict  # pydantic builds JSON schemas from these (LangGraph server, Studio)

from image2music.tools.music.metrics import Metrics

NodeId = Literal["describe", "retrieve", "compose", "parse_check", "evaluate", "reflect", "explain"]
NODE_IDS: tuple[NodeId, ...] = get_args(NodeId)
"""Every node of the graph, in the order of a run without retries (the one list of node ids)."""


class FindingRecord(TypedDict):
    """One checker finding as stored: where, a stable ``code`` that code reacts to, and the message."""

    line: int | None
    column: int | None
    bar: int | None
    voice: str | None
    code: str
    message: str


class AttentionMap(TypedDict):
    """Where the model looked: a rows × cols grid of weights over the image."""

    grid: list[list[float]]
    shape: list[int]
    method: str
    """vlm-attention | clip-occlusion"""


class FeedbackItem(TypedDict):
    """One measurable miss: a checker finding or a metric outside its target band."""

    code: str
    """bar-length, pickup-mismatch, voice-length, truncated (findings), off-target (a metric), mode."""
    metric: str | None
    value: Any
    target: Any
    message: str


class Decision(TypedDict):
    """One routing step and why it went where it went."""

    after: str
    to: str
    because: list[str]


class Reference(TypedDict, total=False):
    """One retrieved piece of music."""

    id: Required[str]
    caption: Required[str]
    abc: str
    """The tune (run.json keeps a reference without it)."""
    score: Required[float]
    via: Required[str]
    """image | text | both: which query found it"""
    metadata: dict[str, Any]


class Draft(TypedDict, total=False):
    """The latest answer of compose or reflect, not yet checked."""

    node: Required[str]
    text: Required[str]
    attention: dict[str, AttentionMap]
    """Attention per `% [section]` / voice of the answer."""


class Version(TypedDict, total=False):
    """One checked answer of compose or reflect."""

    index: Required[int]
    node: Required[str]
    abc: Required[str]
    ok: Required[bool]
    errors: Required[list[FindingRecord]]
    warnings: Required[list[FindingRecord]]
    metrics: Metrics | None
    files: dict[str, str]
    """This version's files, relative to the run folder: ``abc`` (when an answer had ABC), ``midi`` (valid)."""
    commentary: str
    title: str | None
    attention_maps: dict[str, AttentionMap]
    feedback: list[FeedbackItem]
    """What misses its target for this image (evaluate)."""
    score: float
    """1.0 when every target is met, lower the more and farther things miss (evaluate)."""


def upsert_versions(old: list[Version], new: list[Version]) -> list[Version]:
    """Versions keyed by ``index``: a new index appends, a known index replaces (evaluate adds metrics)."""
    out = list(old or [])
    for v in new or []:
        i = int(v["index"])
        if i < len(out):
            out[i] = v
        else:
            out.append(v)
    return out


def add_counts(old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """Per-node VLM call counters: added, so the k-th call of a node is known from the state."""
    out = dict(old or {})
    for k, v in (new or {}).items():
        out[k] = out.get(k, 0) + v
    return out


def merge_dicts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge: keys of ``new`` win."""
    return {**(old or {}), **(new or {})}


class InputState(TypedDict, total=False):
    """What a run starts from."""

    image: str
    """Path of the input image."""
    user_feedback: str
    """A person's words for the next reflect round (interactive refine)."""
    human_pause: bool
    """Pause before every refine round for a person's words (as I2M_HUMAN_PAUSE, for this run)."""


class State(InputState, total=False):
    """Everything a run knows. Nodes return partial updates; reducers say how lists and counters merge."""

    description: str
    """The VLM's description of the image (describe)."""
    references: list[Reference]
    """Retrieved music."""
    draft: Draft
    """The latest answer of compose or reflect, not yet checked."""
    versions: Annotated[list[Version], upsert_versions]
    """Every checked version."""
    parse_failures: int
    """Failed checks in a row for the current writer (compose or a reflect round)."""
    refine_round: int
    """Reflect rounds started."""
    targets: dict[str, Any]
    """Targets for this image: metric bands, a tempo band and a mode (retrieve)."""
    decisions: Annotated[list[Decision], operator.add]
    """Every routing step after parse_check and evaluate, with its reasons."""
    calls: Annotated[dict[str, int], add_counts]
    """VLM calls made so far per node."""
    vision_encodes: Annotated[int, operator.add]
    """Forward passes of the vision tower in this run (1 when the image features are reused)."""
    notes: Annotated[list[str], operator.add]
    """Things a person should know about the run (e.g. why there is no attention map)."""
    attention: Annotated[dict[str, AttentionMap], merge_dicts]
    """Attention maps of whole answers: name (e.g. describe) -> map."""
    motivation: str
    """The explain node's text."""
    status: str
    """ok | failed, once known."""
    reason: str | None
    """Why the run failed (None when ok)."""
    path: Annotated[list[str], operator.add]
    """Node ids in the order they ran."""
    timings: Annotated[list[float], operator.add]
    """Seconds per entry of ``path``."""
    final: FinalVersion | None
    """The music the run chose (its best valid version), once explain has run."""


class FinalVersion(TypedDict):
    """The chosen version, as a client reads it."""

    version: int
    """1-based index in ``versions``."""
    abc: str
    title: str | None
    metrics: Metrics | None


class OutputState(TypedDict, total=False):
    """What a run gives a client of LangGraph's server: how it ended, the music, and why it sounds so (the whole
    state is the thread's state)."""

    status: str
    reason: str | None
    description: str
    references: list[Reference]
    final: FinalVersion | None
    motivation: str
    versions: list[Version]
    decisions: list[Decision]
    notes: list[str]
    path: list[str]
    timings: list[float]
