"""Hostile input and surroundings: refused with one line and exit 2, or ended with a record; never mixed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import GOOD_ABC, cli, fenced, replay_run, write_replay

from image2music.graph.config import load_settings
from image2music.resume import resume_run
from image2music.runner import compose_image


def _compose(tmp_path: Path, image: Path, *extra: str):  # noqa: ANN202
    return cli("compose", str(image), "--replay", str(replay_run(tmp_path)), "--top-k", "0", *extra)


def test_output_that_is_a_file_or_a_foreign_folder_is_refused(tmp_path: Path, image_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("mine")
    r = _compose(tmp_path, image_path, "-o", str(f))
    assert r.exit_code == 2 and "is a file" in r.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    r = _compose(tmp_path, image_path, "-o", str(mine))
    assert r.exit_code == 2 and "--force" in r.output and (mine / "thesis.tex").read_text() == "precious"
    assert _compose(tmp_path, image_path, "-o", str(mine), "--force").exit_code == 0
    assert not (mine / "thesis.tex").exists() and (mine / "run.json").exists()


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
@pytest.mark.slow
def test_an_earlier_run_is_replaced_never_mixed(tmp_path: Path, image_path: Path) -> None:
    out = tmp_path / "out"
    assert _compose(tmp_path, image_path, "-o", str(out)).exit_code == 0
    (out / "versions" / "v9.abc").write_text("left over")
    assert _compose(tmp_path, image_path, "-o", str(out)).exit_code == 0
    assert not (out / "versions" / "v9.abc").exists()
    lines = (out / "vlm_calls.jsonl").read_text().splitlines()
    assert [json.loads(x)["node"] for x in lines] == ["describe", "compose", "reflect", "explain"]
    assert not [p for p in tmp_path.iterdir() if ".new-" in p.name or ".old-" in p.name]
    # a run that cannot start leaves the earlier run as it was
    before = sorted(p.name for p in out.rglob("*"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = cli("compose", str(image_path), "--replay", str(bad), "--top-k", "0", "-o", str(out))
    assert r.exit_code == 2 and sorted(p.name for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if ".new-" in p.name]
    # the run database points at the replaced folder
    listed = json.loads(cli("runs", "list", "--json").stdout)
    assert listed[0]["run_dir"] == str(out)


def test_special_files_are_named_as_such(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    r = cli("compose", str(fifo), "--replay", str(replay_run(tmp_path)), "--top-k", "0")
    assert r.exit_code == 2 and "named pipe" in r.output
    r = cli("compose", "/dev/zero", "--replay", str(replay_run(tmp_path)), "--top-k", "0")
    assert r.exit_code == 2 and "character device" in r.output


def test_bad_replay_files_are_refused_input_and_a_bom_is_fine(tmp_path: Path, image_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = cli("compose", str(image_path), "--replay", str(bad), "--top-k", "0")
    assert r.exit_code == 2 and "not JSON" in r.output
    r = cli("compose", str(image_path), "--replay", "/dev/zero", "--top-k", "0")
    assert r.exit_code == 2 and "not a regular file" in r.output
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + replay_run(tmp_path).read_bytes())
    out = tmp_path / "out"
    assert cli("compose", str(image_path), "--replay", str(bom), "--top-k", "0", "-o", str(out)).exit_code == 0


def test_a_home_that_is_a_file_is_refused(tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-file"
    home.write_text("x")
    monkeypatch.setenv("I2M_HOME", str(home))
    r = _compose(tmp_path, image_path)
    assert r.exit_code == 2, r.output
    assert "I2M_HOME" in r.output or "cannot write" in r.output


def test_run_ids_match_exactly_or_by_a_prefix_of_four(tmp_path: Path, image_path: Path) -> None:
    assert _compose(tmp_path, image_path, "-o", str(tmp_path / "o")).exit_code == 0
    run_id = json.loads((tmp_path / "o" / "run.json").read_text())["run_id"]
    assert cli("runs", "show", "").exit_code == 2
    assert cli("runs", "show", run_id[:3]).exit_code == 2
    assert cli("runs", "show", "%").exit_code == 2
    assert cli("runs", "show", run_id[:8]).exit_code == 0


def test_an_internal_crash_ends_with_a_record_and_is_not_resumed(
    tmp_path: Path, image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from image2music.graph import nodes

    def crash(*_a: object, **_k: object) -> object:
        raise AttributeError("something inside a library")

    monkeypatch.setattr(nodes, "format_examples", crash)
    s = load_settings(vlm_backend="replay", replay_file=replay_run(tmp_path), top_k=0)
    res = compose_image(image_path, s, run_dir=tmp_path / "run")
    rec = res.record
    assert rec["status"] == "failed" and "AttributeError" in rec["reason"]
    assert (tmp_path / "run" / "run.log").exists() and (tmp_path / "run" / "report.html").exists()
    assert rec["errors"] == [{"error": "AttributeError", "log": "run.log"}]
    from image2music.tools.errors import InputError

    with pytest.raises(InputError, match="internal error"):
        resume_run(res.run_id, s)


def test_lone_surrogates_and_odd_unicode_in_answers(tmp_path: Path, image_path: Path) -> None:
    abc = GOOD_ABC.replace("Calm Harbour", "Dawn \ud800 \u2014 \u591c")
    replay = write_replay(
        tmp_path / "c.jsonl",
        [("describe", "A harbour \udfff."), ("compose", fenced(abc)), ("reflect", fenced(abc)), ("explain", "\ud83c")],
    )
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0)
    rec = compose_image(image_path, s, run_dir=tmp_path / "run").record
    assert rec["status"] == "ok", rec["reason"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["final"]["title"].startswith("Dawn ")


HOSTILE_TEXT = "A harbour \x1b]52;c;aGFja2Vk\x07 and \x1b[2J\x1b[H gone \u202e reversed \x9b31m"


def test_terminal_escapes_in_model_text_are_shown_not_obeyed(tmp_path: Path, image_path: Path) -> None:
    """OSC 52 (writes the clipboard), clear-screen, a bidi override and a C1 CSI in what the model wrote reach
    the terminal as visible text in `runs show`, and in the live line while the model writes."""
    from rich.console import Console

    from image2music.display import NodeProgress, terminal_safe

    replay = write_replay(
        tmp_path / "c.jsonl",
        [("describe", HOSTILE_TEXT), ("compose", fenced(GOOD_ABC, prose=HOSTILE_TEXT)), ("reflect", fenced(GOOD_ABC)),
         ("explain", HOSTILE_TEXT)],
    )  # fmt: skip
    s = load_settings(vlm_backend="replay", replay_file=replay, top_k=0)
    res = compose_image(image_path, s, run_dir=tmp_path / "run")
    shown = cli("runs", "show", res.run_id)
    assert shown.exit_code == 0, shown.output
    for bad in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert bad not in shown.output
    assert "\\x1b]52" in shown.output and "\\u202e" in shown.output
    assert terminal_safe("a\tb\nc") == "a\tb\nc"
    console = Console(file=open(tmp_path / "tty.txt", "w"), force_terminal=True, width=80)  # noqa: SIM115
    progress = NodeProgress(console)
    with progress:
        progress.text("compose", HOSTILE_TEXT)
    console.file.close()
    assert "\x1b]52" not in (tmp_path / "tty.txt").read_text()
