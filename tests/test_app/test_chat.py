"""The interactive session, typed into a real pseudo-terminal (pexpect) with the replay backend."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest
from conftest import GOOD_ABC, ROOT, WARN_ABC, ctrl_c_works, fenced, write_replay


def spawn_chat(replay: Path, cwd: Path, columns: int = 140, **env: str) -> pexpect.spawn:
    """`i2m chat` with the replay backend in a real pseudo-terminal."""
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)  # an overlay stays first
    full = {**os.environ, "PYTHONPATH": pythonpath, "I2M_TOP_K": "0", "COLUMNS": str(columns), "TERM": "xterm", **env}
    full.pop("LINES", None)
    return pexpect.spawn(
        sys.executable,
        ["-m", "image2music.cli", "chat", "--replay", str(replay)],
        env=full,
        cwd=str(cwd),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, columns),
        preexec_fn=ctrl_c_works,
    )


def interrupt_at_prompt(child: pexpect.spawn) -> None:
    """Ctrl-C at a prompt that has just been shown, as a person presses it: a moment later. CPython's readline
    shows its prompt before it waits in select(); a SIGINT in between (a few ms) is noted by the handler but
    select() is not interrupted, so the prompt notices it only at the next key (pexpect is that fast, people
    are not). The pause is pacing, not a decision: nothing here depends on how long anything takes."""
    time.sleep(0.5)
    child.sendintr()


@pytest.mark.slow
def test_chat_session_in_a_terminal(tmp_path: Path, image_path: Path) -> None:
    slower = GOOD_ABC.replace("Q:1/4=80", "Q:1/4=60").replace("Calm Harbour", "Slower Harbour")
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [
            ("describe", "A harbour at dawn."),
            ("compose", fenced(WARN_ABC)),
            ("reflect", fenced(GOOD_ABC)),
            ("explain", "Calm G major."),
            ("reflect", fenced(slower)),
            ("explain", "Slower, as you asked."),
        ],
    )
    child = spawn_chat(replay, tmp_path)
    log = []
    child.logfile_read = type("L", (), {"write": lambda self, s: log.append(s), "flush": lambda self: None})()
    try:
        child.expect("image path> ")
        child.sendline(str(tmp_path / "missing.png"))
        child.expect("cannot use that image")
        child.expect("image path> ")
        # Tab completion of paths: type the folder and a prefix, complete, run
        child.send(str(image_path.parent) + "/im")
        child.send("\t")
        child.sendline("")
        child.expect("refinement round 1")
        child.sendline("keep it calm")  # the run paused before reflect: a person's words for this round
        child.expect(r"\[a\]ccept")
        text = "".join(log)
        assert "what the model sees" in text and "Calm Harbour" in text and "pitch_range" in text
        assert "why it sounds like this" in text and "Calm G major." in text
        child.sendline("r")
        child.expect("your words")
        child.sendline("slower, more melancholic")
        child.expect(r"\[a\]ccept")
        assert "Slower Harbour" in "".join(log)
        child.sendline("q")
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    runs = list((Path(os.environ["I2M_HOME"]) / "runs").iterdir())
    assert len(runs) == 1
    calls = [json.loads(x) for x in (runs[0] / "vlm_calls.jsonl").read_text().splitlines()]
    reflects = [c["prompt"] for c in calls if c["node"] == "reflect"]
    assert "The listener asks for this change: keep it calm" in reflects[0]
    assert "The listener asks for this change: slower, more melancholic" in reflects[1]
    rec = json.loads((runs[0] / "run.json").read_text())
    assert rec["final"]["title"] == "Slower Harbour" and rec["path"].count("reflect") == 2


def test_ctrl_c_cancels_the_run_not_the_session(tmp_path: Path, image_path: Path) -> None:
    replay = write_replay(
        tmp_path / "calls.jsonl", [("describe", "x"), ("compose", fenced(GOOD_ABC)), ("explain", "y")]
    )
    child = spawn_chat(replay, tmp_path, I2M_REPLAY_DELAY_S="3", I2M_REFINE_ROUNDS="0")
    try:
        child.expect("image path> ")
        child.sendline(str(image_path))
        child.expect("run ")
        child.expect("describe")  # a node has finished: the next one is waiting 3 s on the model
        child.sendintr()
        child.expect("run cancelled")
        child.expect("i2m runs resume")
        child.expect("image path> ")  # the session goes on
        child.sendline("q")
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
@pytest.mark.slow
def test_chat_at_80_columns_wraps_and_echoes(tmp_path: Path, image_path: Path) -> None:
    import re

    long_description = " ".join(["A quiet harbour at dawn with boats and gulls over still grey water."] * 4) + " END."
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [("describe", long_description), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC)),
         ("explain", "Calm [b]G major[/b] for a calm morning, and the motivation ends here: FINAL.")],
    )  # fmt: skip
    child = spawn_chat(replay, tmp_path, columns=80)
    log: list[str] = []
    child.logfile_read = type("L", (), {"write": lambda self, s: log.append(s), "flush": lambda self: None})()
    try:
        child.expect("image path> ")
        child.sendline(str(image_path))
        child.expect("refinement round 1")
        child.send("keep it calm")
        child.expect("keep it calm")  # the typed words are echoed, no spinner over them
        child.sendline("")
        child.expect(r"\[a\]ccept")
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(log))
    assert "END." in text and "FINAL." in text  # wrapped inside the panels, never cut
    assert "[b]G major[/b]" in text  # model text is not markup
    # panels and tables wrap inside their frame (plain lines soft-wrap in the terminal: never cut either)
    framed = [ln for ln in text.replace("\r", "\n").splitlines() if ln.lstrip()[:1] in ("│", "╭", "╰", "┃", "┏")]
    assert framed and all(len(ln) <= 80 for ln in framed), [ln for ln in framed if len(ln) > 80][:3]


@pytest.mark.usefixtures("paper_policy")  # three reflect rounds whatever the metrics say: three pauses
@pytest.mark.slow
def test_every_key_of_the_chat_at_80_columns(tmp_path: Path, image_path: Path) -> None:
    """Enter at a pause, words at a pause, Enter at the last pause, `r` after ok (a person's round), `p` (a
    player), `o`, Ctrl-C at a prompt, Ctrl-D: the session follows each, and the rounds the progress shows are
    the rounds run.json records."""
    import re

    calls = [("describe", "A harbour at dawn."), ("compose", fenced(GOOD_ABC))]
    calls += [("reflect", fenced(GOOD_ABC.replace("Calm Harbour", f"Harbour {n}"))) for n in (1, 2, 3)]
    calls += [("explain", "Calm."), ("reflect", fenced(GOOD_ABC.replace("Calm Harbour", "Harbour 4"))),
              ("explain", "Slower.")]  # fmt: skip
    replay = write_replay(tmp_path / "calls.jsonl", calls)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    played = tmp_path / "played.txt"
    player = bin_dir / "aplay"  # the first player the session looks for: it records what it was asked to play
    player.write_text(f'#!/bin/sh\necho "$@" >> {played}\n')
    player.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    child = spawn_chat(replay, tmp_path, columns=80, I2M_REFINE_ROUNDS="3", PATH=path)
    log: list[str] = []
    child.logfile_read = type("L", (), {"write": lambda self, s: log.append(s), "flush": lambda self: None})()
    menu = r"\[a\]ccept"
    try:
        child.expect("image path> ")
        child.sendline(str(image_path))
        child.expect("refinement round 1")
        child.sendline("")  # Enter: let it decide
        child.expect("refinement round 2")
        child.sendline("more wind in it")
        child.expect("refinement round 3")
        child.sendline("")  # Enter at the last pause
        child.expect(menu)
        child.sendline("p")
        child.expect("playing .*music.wav with aplay")
        child.expect(menu)
        child.sendline("r")
        child.expect("your words")
        child.sendline("slower")
        child.expect(menu)
        interrupt_at_prompt(child)  # Ctrl-C at a prompt: the prompt again, the session goes on
        child.expect(menu)
        child.sendline("o")
        child.expect("image path> ")
        interrupt_at_prompt(child)
        child.expect("image path> ")
        child.sendeof()  # Ctrl-D
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(log))
    runs = list((Path(os.environ["I2M_HOME"]) / "runs").iterdir())
    assert len(runs) == 1
    rec = json.loads((runs[0] / "run.json").read_text())
    assert rec["status"] == "ok" and rec["final"]["title"] == "Harbour 4"
    assert rec["path"].count("reflect") == 4
    shown = [int(n) for n in re.findall(r"reflect\s+[\d.]+s\s+round (\d+)", text)]
    from image2music.graph.versions import steps

    recorded = [s.round for s in steps(rec["path"]) if s.node == "reflect"]
    assert shown == recorded == [1, 2, 3, 4], text[-3000:]
    prompts = [json.loads(x)["prompt"] for x in (runs[0] / "vlm_calls.jsonl").read_text().splitlines()
               if json.loads(x)["node"] == "reflect"]  # fmt: skip
    asked = ["The listener asks for this change" in p for p in prompts]
    assert asked == [False, True, False, True]
    assert "more wind in it" in prompts[1] and "slower" in prompts[3]
    assert played.read_text().strip().endswith("music.wav")
    # every line fits the 80 columns (what the terminal would wrap is wrapped between words by the session:
    # before, step and file lines broke mid-word, `compos|e`, `music.music|xml`); readline echoes what was typed
    from rich.cells import cell_len

    typed = ("image path> ", "refinement round ", "your words ")  # a prompt and the words typed after it
    lines = [ln for ln in re.split(r"[\r\n]", text) if not ln.startswith(typed)]
    lines = [ln for ln in lines if not re.search(r"\w+Warning: ", ln)]  # a library's warning (old LangGraph's)
    assert all(cell_len(ln) <= 80 for ln in lines), [ln for ln in lines if cell_len(ln) > 80][:3]
    assert "files in " in text and "  musicxml  music.musicxml" in text
    # the last metrics table (5 versions after `r`) names every metric whole, each on a row of its own
    from image2music.tools.music.metrics import METRIC_MEANINGS

    after_r = [ln for ln in re.split(r"[\r\n]", text[text.rindex("your words (e.g.") :]) if ln.startswith("│")]
    rows = [ln.strip("│ ").split(" ")[0] for ln in after_r]
    assert set(METRIC_MEANINGS) <= set(rows), rows


@pytest.mark.slow
def test_the_answer_shows_as_it_is_written_in_one_line_at_80_columns(tmp_path: Path, image_path: Path) -> None:
    """While compose writes (the replay streams a word every 0.05 s), the live line grows — its character count
    rises and the newest words appear — and never wraps past 80 columns; the node's line replaces it."""
    import re

    replay = write_replay(
        tmp_path / "calls.jsonl",
        [("describe", "A harbour."), ("compose", fenced(GOOD_ABC, prose="Here is a calm piece " * 6)),
         ("explain", "Calm.")],
    )  # fmt: skip
    child = spawn_chat(replay, tmp_path, columns=80, I2M_REPLAY_TOKEN_DELAY_S="0.05", I2M_REFINE_ROUNDS="0")
    log: list[str] = []
    child.logfile_read = type("L", (), {"write": lambda self, s: log.append(s), "flush": lambda self: None})()
    try:
        child.expect("image path> ")
        child.sendline(str(image_path))
        child.expect(r"composing · \d+ chars")
        child.expect(r"\[a\]ccept")
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = "".join(log)
    counts = [int(n.replace(",", "")) for n in re.findall(r"composing · ([\d,]+) chars", text)]
    assert len(counts) >= 3 and counts == sorted(counts) and counts[-1] > counts[0]  # it grew while compose ran
    frames = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", f) for f in re.split(r"\r|\n", text) if "composing ·" in f]
    assert frames and all(len(f.rstrip()) <= 80 for f in frames), max(frames, key=len)
    assert any("|" in f.split(" s  ", 1)[-1] for f in frames)  # bars of the tune came by on the line
    assert "✓ compose" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.split("composing ·")[-1])  # then the node's line


def test_ctrl_c_at_a_refine_pause_cancels_the_run(tmp_path: Path, image_path: Path) -> None:
    """README: Ctrl-C cancels the run (before: at a pause it was taken as Enter and the run went on)."""
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [("describe", "x"), ("compose", fenced(GOOD_ABC)), ("reflect", fenced(GOOD_ABC)), ("explain", "y")],
    )
    child = spawn_chat(replay, tmp_path, I2M_REFINE_POLICY="fixed", I2M_REFINE_ROUNDS="1")
    try:
        child.expect("image path> ")
        child.sendline(str(image_path))
        child.expect("refinement round 1")
        interrupt_at_prompt(child)
        child.expect("run cancelled")
        child.expect("i2m runs resume")
        child.expect("image path> ")
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    runs = list((Path(os.environ["I2M_HOME"]) / "runs").iterdir())
    rec = json.loads((runs[0] / "run.json").read_text())
    assert rec["status"] == "cancelled" and "reflect" not in rec["path"]
