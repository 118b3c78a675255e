"""The graph under LangGraph's own server (`langgraph dev`, what Studio talks to), driven by the official SDK:
no context (settings from the environment), updates streamed, the final state read, the graph drawn, an
image given as a path and as a data: URL."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GOOD_ABC, ROOT, fenced, free_port, wait_until_serving, write_replay
from PIL import Image

from image2music.graph.routing import decision_path_problems

pytest.importorskip("langgraph_api", reason="needs the dev dependency langgraph-cli[inmem]")
pytest.importorskip("langgraph_sdk")

CALLS = [("describe", "A harbour at dawn."), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC))]
CALLS += [("explain", "Calm water, so a slow tune.")]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("langgraph") or str(Path(sys.executable).parent / "langgraph")
    port = free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "I2M_HOME": str(home),
        "I2M_VLM_BACKEND": "replay",
        "I2M_REPLAY_FILE": str(write_replay(tmp_path / "calls.jsonl", CALLS)),
        "I2M_TOP_K": "0",
        "I2M_REPLAY_TOKEN_DELAY_S": "0.02",  # the answers arrive a word at a time, as a model writes them
        "I2M_REFINE_POLICY": "fixed",  # one refine round whatever the metrics: a run that can pause for a person
        "I2M_REFINE_ROUNDS": "1",
        "I2M_SERVER_IMAGE_PATHS": "true",  # this local server may read image files (a remote one would not)
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    # the repository's langgraph.json with absolute paths: the server runs (and keeps its files) in tmp_path
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT)]
    config["graphs"] = {k: str(ROOT / v.removeprefix("./")) for k, v in config["graphs"].items()}
    (tmp_path / "langgraph.json").write_text(json.dumps(config))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [exe, "dev", "--port", str(port), "--no-browser", "--no-reload", "--config", str(tmp_path / "langgraph.json")],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_serving(f"{url}/ok", proc, 240, 0.5):  # up to 2 minutes to start
            pytest.fail("langgraph dev did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _run(client: Any, image: str, thread: str | None = None) -> tuple[list[str], dict[str, Any], str]:
    thread = thread or client.threads.create()["thread_id"]
    nodes = []
    for part in client.runs.stream(thread, "image2music", input={"image": image}, stream_mode="updates"):
        assert part.event != "error", part.data
        if part.event == "updates":
            nodes.extend(part.data)
    return nodes, client.threads.get_state(thread)["values"], thread


@pytest.mark.slow
def test_the_graph_runs_under_langgraph_dev_through_the_sdk(server: str, image_path: Path, tmp_path: Path) -> None:
    from langgraph_sdk import get_sync_client

    home = tmp_path / "home"
    client = get_sync_client(url=server)
    nodes, state, thread = _run(client, str(image_path))
    assert nodes[:3] == ["describe", "retrieve", "compose"] and nodes[-1] == "explain"
    assert state["status"] == "ok" and state["description"] == "A harbour at dawn."
    assert state["versions"][-1]["ok"] and "K:" in state["versions"][-1]["abc"]
    assert state["motivation"].startswith("Calm water")
    assert state["path"] == nodes  # the run's own record of its steps is what the server streamed
    assert decision_path_problems(state["path"], state["decisions"]) == []
    # one folder per thread, one subfolder per server run, with the checked versions in it
    (run_dir,) = (home / "runs" / f"studio-{thread}").iterdir()
    assert (run_dir / "versions" / "v1.abc").read_text() == state["versions"][0]["abc"]
    assistant = client.assistants.search(graph_id="image2music")[0]
    drawn = client.assistants.get_graph(assistant["assistant_id"])
    assert {n["id"] for n in drawn["nodes"]} >= {"describe", "retrieve", "compose", "parse_check", "explain"}

    # a Studio user pastes the image as a data: URL
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), "red").save(buf, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    nodes2, state2, _ = _run(client, data_url)
    assert state2["status"] == "ok" and nodes2[-1] == "explain"

    # a second run on the first thread is a new run (not more versions of the first), in the same folder
    nodes3, state3, _ = _run(client, data_url, thread)
    assert state3["status"] == "ok" and state3["path"] == nodes3 == nodes
    assert len(state3["versions"]) == len(state["versions"]) and state3["calls"] == state["calls"]
    assert decision_path_problems(state3["path"], state3["decisions"]) == []


@pytest.mark.slow
def test_a_client_sees_the_answer_as_it_is_written(server: str, image_path: Path) -> None:
    """``stream_mode=["updates", "custom"]``: the text of compose arrives, piece by piece and named by its node,
    before compose's own update; the pieces make the recorded answer; the state holds whole answers only."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]
    events: list[tuple[str, Any]] = []
    for part in client.runs.stream(
        thread, "image2music", input={"image": str(image_path)}, stream_mode=["updates", "custom"]
    ):
        assert part.event != "error", part.data
        events.append((part.event, part.data))
    compose_done = next(i for i, (kind, data) in enumerate(events) if kind == "updates" and "compose" in data)
    pieces = [d for kind, d in events[:compose_done] if kind == "custom" and d["node"] == "compose"]
    assert len(pieces) > 5 and all(d["kind"] == "text" and d["call"] == 0 for d in pieces)
    assert "".join(d["text"] for d in pieces) == dict(CALLS)["compose"]
    assert not any(kind == "custom" and d["node"] == "compose" for kind, d in events[compose_done:])
    state = client.threads.get_state(thread)["values"]
    assert state["status"] == "ok" and "K:" in state["versions"][0]["abc"]


def _reflect_prompts(tmp_path: Path, thread: str) -> list[str]:
    """The reflect prompts of every server run of the thread (each run has its subfolder)."""
    prompts = []
    for calls in sorted((tmp_path / "home" / "runs" / f"studio-{thread}").glob("*/vlm_calls.jsonl")):
        prompts += [
            json.loads(c)["prompt"] for c in calls.read_text().splitlines() if json.loads(c)["node"] == "reflect"
        ]
    return prompts


def _drain(stream: Any) -> list[str]:
    nodes = []
    for part in stream:
        assert part.event != "error", part.data
        if part.event == "updates":
            nodes.extend(part.data)
    return nodes


@pytest.mark.slow
def test_a_person_pauses_the_run_through_langgraph_s_interrupt(server: str, image_path: Path, tmp_path: Path) -> None:
    """The one human-in-the-loop: reflect's interrupt(). A client asks for it per run (`human_pause` in the
    input), the run stops before the refine round with the interrupt's question, and goes on with
    Command(resume=words); at another pause, Studio's state editor (`update_state`) sets the words instead."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]
    nodes = _drain(client.runs.stream(thread, "image2music", input={"image": str(image_path), "human_pause": True},
                                      stream_mode="updates"))  # fmt: skip
    assert "reflect" not in nodes and "__interrupt__" in nodes
    paused = client.threads.get_state(thread)
    assert paused["next"] == ["reflect"]
    asked = [i for t in paused["tasks"] for i in t["interrupts"]]
    assert asked and asked[0]["value"]["kind"] == "refine" and asked[0]["value"]["round"] == 1
    rest = _drain(client.runs.stream(thread, "image2music", command={"resume": "slower, with a bass line"},
                                     stream_mode="updates"))  # fmt: skip
    assert rest[0] == "reflect" and rest[-1] == "explain"
    assert "The listener asks for this change: slower, with a bass line" in _reflect_prompts(tmp_path, thread)[0]
    assert client.threads.get_state(thread)["values"]["status"] == "ok"

    # the state editor at a pause: no HTTP 400, and the run goes on with the edited words
    other = client.threads.create()["thread_id"]
    _drain(client.runs.stream(other, "image2music", input={"image": str(image_path), "human_pause": True},
                              stream_mode="updates"))  # fmt: skip
    client.threads.update_state(other, {"user_feedback": "brighter"})
    rest = _drain(client.runs.stream(other, "image2music", input=None, stream_mode="updates"))
    assert "reflect" in rest and rest[-1] == "explain"
    assert "The listener asks for this change: brighter" in _reflect_prompts(tmp_path, other)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("context", "words"),
    [
        ({"run_id": "x", "image_path": "/etc/hostname"}, "cannot set run_id, image_path"),
        ({"prompt_paths": {"describe": "/etc/passwd"}}, "cannot set prompt_paths"),
        ({"settings": {"refine_rounds": 0}}, "cannot set settings"),
        ({"run_dir": "/tmp"}, "cannot set run_dir"),
    ],
)
def test_a_client_context_is_data_never_a_path(
    server: str, image_path: Path, tmp_path: Path, context: dict[str, Any], words: str
) -> None:
    """What a remote client sends is refused in one line; nothing is read from or written to the paths it names;
    the server's working folder gets no run files."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]
    errors = [
        part.data
        for part in client.runs.stream(
            thread, "image2music", input={"image": str(image_path)}, context=context, stream_mode="updates"
        )  # fmt: skip
        if part.event == "error"
    ]
    assert errors and words in str(errors[0]) and "root:" not in str(errors[0]), errors
    assert not (tmp_path / "vlm_calls.jsonl").exists() and not (tmp_path / "versions").exists()


@pytest.mark.slow
def test_studio_gets_input_and_output_schemas_and_labelled_edges(server: str, image_path: Path) -> None:
    """Before: get_schemas gave input_schema None and output_schema None (no input form for `image` in Studio),
    and the served graph's conditional edges had no labels."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    assistant = client.assistants.search(graph_id="image2music")[0]["assistant_id"]
    schemas = client.assistants.get_schemas(assistant)
    assert {"image", "human_pause", "user_feedback"} <= set(schemas["input_schema"]["properties"])
    assert {"status", "final", "motivation", "versions", "decisions"} <= set(schemas["output_schema"]["properties"])
    # the assistant editor's form: the options a client may choose, and prompts as text
    chosen = {"refine_rounds", "refine_policy", "top_k", "temperature", "seed", "human_pause", "prompts"}
    assert chosen <= set(schemas["context_schema"]["properties"]), schemas["context_schema"]
    drawn = client.assistants.get_graph(assistant)
    labels = {(e["source"], e["target"]): e.get("data") for e in drawn["edges"] if e.get("conditional")}
    assert labels[("parse_check", "evaluate")] == "ok" and labels[("evaluate", "reflect")] == "rounds left"
    thread = client.threads.create()["thread_id"]
    result = client.runs.wait(thread, assistant, input={"image": str(image_path)})
    assert result["status"] == "ok" and "K:" in result["final"]["abc"] and result["final"]["version"] >= 1


def _calls_of(folder: Path) -> list[tuple[str, int]]:
    path = folder / "vlm_calls.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(json.loads(c)["node"], json.loads(c)["call"]) for c in lines]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["enqueue", "interrupt", "rollback", "cancel"])
def test_every_server_run_has_its_own_exact_record(
    server: str, image_path: Path, tmp_path: Path, strategy: str
) -> None:
    """A second run on a busy thread (enqueued, interrupting, rolling back, or after a cancel): each run's model
    calls are in a vlm_calls.jsonl of its own, once each, in order (before: one file per thread held them twice:
    12 lines for 6 calls)."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]
    first = client.runs.create(thread, "image2music", input={"image": str(image_path)})
    if strategy == "cancel":
        client.runs.cancel(thread, first["run_id"], wait=True)
        second = client.runs.create(thread, "image2music", input={"image": str(image_path)})
    else:
        second = client.runs.create(
            thread, "image2music", input={"image": str(image_path)}, multitask_strategy=strategy
        )
    client.runs.join(thread, second["run_id"])
    folder = tmp_path / "home" / "runs" / f"studio-{thread}"
    done = _calls_of(folder / second["run_id"])
    assert [n for n, _ in done] == ["describe", "compose", "reflect", "explain"] and len(set(done)) == len(done)
    earlier = _calls_of(folder / first["run_id"])
    assert len(set(earlier)) == len(earlier)  # whatever the first run did before it ended: each call once
    if strategy == "enqueue":
        assert [n for n, _ in earlier] == ["describe", "compose", "reflect", "explain"]


@pytest.mark.slow
def test_a_client_chooses_safe_options_and_prompt_texts(server: str, image_path: Path, tmp_path: Path) -> None:
    """Through the context a client sets its run's options and prompts as text (Studio's assistant editor as the
    prompt playground); they are validated like settings and prompt files, each problem one line."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)

    def run(context: dict[str, Any]) -> tuple[list[str], list[Any], str]:
        thread = client.threads.create()["thread_id"]
        nodes, errors = [], []
        for part in client.runs.stream(thread, "image2music", input={"image": str(image_path)}, context=context,
                                       stream_mode="updates"):  # fmt: skip
            if part.event == "updates":
                nodes.extend(part.data)
            elif part.event == "error":
                errors.append(part.data)
        return nodes, errors, thread

    nodes, errors, _ = run({"refine_rounds": 0})
    assert not errors and "reflect" not in nodes and nodes[-1] == "explain"
    nodes, errors, thread = run({"prompts": {"describe": "Describe this picture in one sentence."}})
    assert not errors
    calls = next((tmp_path / "home" / "runs" / f"studio-{thread}").glob("*/vlm_calls.jsonl")).read_text()
    assert json.loads(calls.splitlines()[0])["prompt"].rstrip() == "Describe this picture in one sentence."
    for context, words in (
        ({"prompts": {"describe": "What is $secret here?"}}, "unknown variable(s) $secret"),
        ({"prompts": {"nope": "x"}}, "unknown prompt 'nope'"),
        ({"temperature": "hot"}, "the context's temperature"),
        ({"refine_policy": "sometimes"}, "the context's refine_policy"),
    ):
        _nodes, errors, _ = run(context)
        assert errors and words in str(errors[0]), (context, errors)
