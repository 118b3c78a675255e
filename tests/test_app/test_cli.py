"""The i2m command line: exit codes, outputs, clear messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ABC_DIR, GOOD_ABC, ROOT, cli, fenced, replay_run, write_replay

from image2music.cli import main

I2M = [sys.executable, "-m", "image2music.cli"]


@pytest.mark.slow
def test_compose_json_and_files(tmp_path: Path, image_path: Path, tiny_clip: Path) -> None:
    out = tmp_path / "out"
    r = cli(
        "compose",
        str(image_path),
        "--replay",
        str(replay_run(tmp_path)),
        "--embed-model",
        str(tiny_clip),
        "-o",
        str(out),
        "--json",
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["status"] == "ok" and (out / "music.mid").exists() and (out / "run.json").exists()


@pytest.mark.slow
def test_compose_subprocess_exit_codes(tmp_path: Path, image_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [
            *I2M,
            "compose",
            str(image_path),
            "--replay",
            str(replay_run(tmp_path)),
            "--top-k",
            "0",
            "-o",
            str(tmp_path / "o1"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "✓ describe" in ok.stderr and "Traceback" not in ok.stderr
    missing = subprocess.run(
        [*I2M, "compose", str(tmp_path / "nope.jpg"), "--replay", "x.jsonl"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 2 and "image not found" in missing.stderr and "Traceback" not in missing.stderr
    failed = subprocess.run(
        [
            *I2M,
            "compose",
            str(image_path),
            "--replay",
            str(write_replay(tmp_path / "short.jsonl", [("describe", "x")])),
            "--top-k",
            "0",
            "-o",
            str(tmp_path / "o2"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode == 1 and "answer(s) for node 'compose'" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_compose_bad_prompt_override(tmp_path: Path, image_path: Path) -> None:
    bad = tmp_path / "p.md"
    bad.write_text("Compose for $image only.")
    r = cli("compose", str(image_path), "--replay", str(replay_run(tmp_path)), "--prompt", f"compose={bad}")
    assert r.exit_code == 2 and "unknown variable(s) $image" in r.output


def test_abc_check_exit_codes_and_json() -> None:
    r = cli("abc", "check", str(ABC_DIR / "fig2_bars.abc"), "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["ok"] and d["title"] == "Sunset Over the Coast" and d["parts"] == 1
    assert any("1.5 beats" in w["message"] for w in d["warnings"])
    r = cli("abc", "check", "-", "--json", stdin=(ABC_DIR / "unclosed_chord.abc").read_text())
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False
    r = cli("abc", "check", "missing-file.abc")
    assert r.exit_code == 2


def test_abc_render_and_metrics(tmp_path: Path) -> None:
    src = tmp_path / "t.abc"
    src.write_text(GOOD_ABC)
    r = cli("abc", "render", str(src), "--to", "mid")
    assert r.exit_code == 0 and (tmp_path / "t.mid").exists()
    r = cli("abc", "render", str(src), "--to", "musicxml", "-o", str(tmp_path / "x.musicxml"))
    assert r.exit_code == 0 and (tmp_path / "x.musicxml").exists()
    r = cli("metrics", str(src), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["pitch_range"] == 20
    r = cli("metrics", str(tmp_path / "t.mid"), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n_pitch_classes_used"] == 7
    bad = tmp_path / "bad.abc"
    bad.write_text((ABC_DIR / "unknown_key.abc").read_text())
    assert cli("abc", "render", str(bad), "--to", "mid").exit_code == 1
    assert cli("metrics", str(bad)).exit_code == 1


def test_kb_build_stats_query(tmp_path: Path, tiny_clip: Path) -> None:
    r = cli("kb", "build-starter", "--embed-model", str(tiny_clip), "--limit", "40")
    assert r.exit_code == 0, r.output
    r = cli("kb", "stats", "--embed-model", str(tiny_clip), "--json")
    assert json.loads(r.stdout)["count"] == 40
    r = cli("kb", "build-starter", "--embed-model", str(tiny_clip), "--limit", "40")
    assert "0 added, 40 in the base" in r.output
    r = cli("kb", "query", "--text", "a slow air in D minor", "-k", "3", "--embed-model", str(tiny_clip), "--json")
    hits = json.loads(r.stdout)
    assert len(hits) == 3 and all(h["via"] == "text" for h in hits)


@pytest.mark.slow
def test_compose_uses_the_knowledge_base(tmp_path: Path, image_path: Path, tiny_clip: Path) -> None:
    assert cli("kb", "build-starter", "--embed-model", str(tiny_clip), "--limit", "30").exit_code == 0
    r = cli(
        "compose",
        str(image_path),
        "--replay",
        str(replay_run(tmp_path)),
        "--embed-model",
        str(tiny_clip),
        "--top-k",
        "2",
        "-o",
        str(tmp_path / "o"),
        "--json",
    )
    rec = json.loads(r.stdout)
    assert 2 <= len(rec["references"]) <= 4
    assert {"id", "caption", "score", "via"} <= set(rec["references"][0])
    prompt = json.loads((tmp_path / "o" / "vlm_calls.jsonl").read_text().splitlines()[1])["prompt"]
    assert "Reference 1:" in prompt and "```abc" in prompt


@pytest.mark.slow
def test_auto_build_when_no_base(
    tmp_path: Path, image_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from image2music.tools.kb import ingest as kb_module

    real = kb_module.build_starter
    monkeypatch.setattr(kb_module, "build_starter", lambda kb, **kw: real(kb, limit=25, progress=False))
    monkeypatch.setenv("I2M_KB_AUTO_BUILD", "true")
    # the references (and so the targets the feedback policy refines towards) come from a random tiny CLIP:
    # the replay answers every round the default allows, whichever route the targets take
    calls = [("describe", "A quiet harbour at dawn."), ("compose", fenced(GOOD_ABC))]
    calls += [("reflect", fenced(GOOD_ABC))] * 3 + [("explain", "Calm G major for a calm morning.")]
    r = cli(
        "compose",
        str(image_path),
        "--replay",
        str(write_replay(tmp_path / "any-route.jsonl", calls)),
        "--embed-model",
        str(tiny_clip),
        "-o",
        str(tmp_path / "o"),
        "--json",
    )
    assert r.exit_code == 0 and "building the starter base" in r.stderr, r.stderr
    assert json.loads(r.stdout)["references"]


@pytest.mark.usefixtures("paper_policy")  # its replay takes the paper's route (one reflect round)
def test_progress_shows_retries_and_rounds(tmp_path: Path, image_path: Path) -> None:
    from conftest import BROKEN_ABC

    replay = write_replay(
        tmp_path / "c.jsonl",
        [
            ("describe", "x"),
            ("compose", fenced(BROKEN_ABC)),
            ("compose", fenced(GOOD_ABC)),
            ("reflect", "no music"),
            ("reflect", fenced(GOOD_ABC)),
            ("explain", "y"),
        ],
    )
    r = cli("compose", str(image_path), "--replay", str(replay), "--top-k", "0", "-o", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert "retry 1" in r.stderr and "round 1" in r.stderr and "retry after parse errors" in r.stderr


def test_abc_check_many_files_prints_one_json_object_per_line(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.abc", tmp_path / "bad.abc"
    good.write_text(GOOD_ABC)
    bad.write_text((ABC_DIR / "unclosed_chord.abc").read_text())
    r = cli("abc", "check", str(good), str(bad), "--json")
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["file"], row["ok"]) for row in rows] == [(str(good), True), (str(bad), False)]
    assert rows[1]["errors"][0]["code"] == "unclosed" or rows[1]["errors"][0]["code"] == "syntax"
    one = cli("abc", "check", str(good), "--json")
    assert one.exit_code == 0 and "file" not in json.loads(one.stdout)


def test_abc_render_many_files_into_a_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a.abc", tmp_path / "b.abc"
    a.write_text(GOOD_ABC)
    b.write_text(GOOD_ABC.replace("Calm Harbour", "The Fisherman\u2019s Dawn \u2014 \u591c\u660e\u3051"))
    out = tmp_path / "out"
    r = cli("abc", "render", str(a), str(b), "--to", "mid", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["a.mid", "b.mid"]
    existing = tmp_path / "existing"
    existing.mkdir()
    assert cli("abc", "render", str(a), "--to", "mid", "-o", str(existing)).exit_code == 0
    assert (existing / "a.mid").exists()


def test_compose_with_a_title_outside_latin1_ends_ok(tmp_path: Path, image_path: Path) -> None:
    title = "The Fisherman\u2019s Dawn \u2014 \u591c\u660e\u3051"
    replay = write_replay(
        tmp_path / "calls.jsonl",
        [
            ("describe", "A harbour at dawn."),
            ("compose", fenced(GOOD_ABC.replace("Calm Harbour", title))),
            ("reflect", fenced(GOOD_ABC.replace("Calm Harbour", title))),
            ("explain", "Calm."),
        ],
    )
    out = tmp_path / "out"
    r = cli("compose", str(image_path), "--replay", str(replay), "--top-k", "0", "-o", str(out), "--json")
    rec = json.loads((out / "run.json").read_text())
    assert r.exit_code == 0 and rec["status"] == "ok", rec.get("reason")
    assert rec["final"]["title"] == title
    for name in ("music.mid", "music.musicxml", "report.html"):
        assert (out / name).exists(), name


def test_every_option_of_every_command_is_described() -> None:
    import click

    def walk(cmd: click.Command, name: str) -> list[str]:
        missing = [f"{name} {p.opts[0]}" for p in cmd.params if isinstance(p, click.Option) and not p.help]
        if not cmd.help:
            missing.append(f"{name} (no help)")
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            missing += walk(sub, f"{name} {sub_name}")
        return missing

    assert walk(main, "i2m") == []
    assert "literal prefix of at" in cli("runs", "--help").output
    for command in ("compose", "chat", "batch", "eval"):
        text = cli(command, "--help").output
        assert "--temperature" in text and "--seed" in text and "--device" in text, command


def test_kb_ingest_midicaps_reports_each_skip(tmp_path: Path, tiny_clip: Path) -> None:
    from midicaps_fixture import build_midicaps

    root = build_midicaps(tmp_path / "mc", n=3, broken=1)
    with (root / "train.json").open("a") as fh:
        fh.write(json.dumps({"location": "../../etc/passwd", "caption": "x"}) + "\n")
    r = cli("kb", "ingest-midicaps", str(root), "--embed-model", str(tiny_clip))
    assert r.exit_code == 0, r.output
    assert "3 added" in r.output and "skipped 1: outside-folder" in r.output and "line 5" in r.output
    assert "skipped 1: unreadable" in r.output and "line 4" in r.output
    r = cli("kb", "ingest-midicaps", str(root), "--embed-model", str(tiny_clip), "--json")
    counts = json.loads(r.stdout)
    assert (
        counts["previously_skipped"] == 1 and counts["present"] == 3 and counts["skips"][0]["code"] == "outside-folder"
    )
    r = cli("kb", "migrate", "--embed-model", str(tiny_clip))
    assert r.exit_code == 0 and "0 of 3 entries changed" in r.output


def test_batch_on_a_missing_folder_is_refused_before_any_run(tmp_path: Path) -> None:
    # before: it ran, refused the "image" and exited 1 with a results file
    r = cli("batch", str(tmp_path / "no-such-folder"), "-o", str(tmp_path / "out"))
    assert r.exit_code == 2 and "no such file or folder" in r.output
    assert not (tmp_path / "out").exists()


def test_refused_input_is_said_before_the_banner(tmp_path: Path) -> None:
    """A missing image or a bad prompt file: one error line, no "composing for" banner before it."""
    replay = replay_run(tmp_path)
    r = cli("compose", str(tmp_path / "missing.png"), "--replay", str(replay), "--top-k", "0")
    assert r.exit_code == 2 and "composing for" not in r.output and "image not found" in r.output
    (tmp_path / "img.png").write_bytes((ROOT / "examples" / "sunset_lighthouse.png").read_bytes())
    bad = tmp_path / "bad.md"
    bad.write_text("no variables at all")
    r = cli("compose", str(tmp_path / "img.png"), "--replay", str(replay), "--top-k", "0", "--prompt", f"compose={bad}")
    assert r.exit_code == 2 and "composing for" not in r.output


def test_abc_grammar_prints_the_gbnf_and_checks_files(tmp_path: Path) -> None:
    from image2music.tools.music.grammar import gbnf

    r = cli("abc", "grammar")
    assert r.exit_code == 0 and r.stdout == gbnf()
    assert cli("abc", "grammar", "--start", "tune").stdout == gbnf("tune")
    good, bad = tmp_path / "good.abc", tmp_path / "bad.abc"
    good.write_text("X:1\nT:t\nM:4/4\nL:1/8\nK:G\nGABc d2B2|\n")
    bad.write_text("X:1\nK:Zmaj\nC|\n")
    assert cli("abc", "grammar", "--start", "tune", "--check", str(good)).exit_code == 0
    r = cli("abc", "grammar", "--start", "tune", "--check", str(bad))
    assert r.exit_code == 1 and "not in the grammar" in r.output


def test_kb_query_shows_a_caption_s_escapes_and_does_not_obey_them(tmp_path: Path, tiny_clip: Path) -> None:
    """A MidiCaps caption with OSC 52 (clipboard) and clear-screen sequences is printed as visible text."""
    from image2music.graph.config import load_settings
    from image2music.tools.embedder import get_embedder
    from image2music.tools.kb.store import Entry, KnowledgeBase

    s = load_settings(embed_model=str(tiny_clip))
    kb = KnowledgeBase(s.kb_dir, s.embed_model)
    caption = "A calm air \x1b]52;c;cHduZWQ=\x07\x1b[2J in D minor"
    vecs = get_embedder(s.embed_model, "cpu").embed_texts([caption])
    kb.add([Entry(id="hostile", caption=caption, abc="X:1\nK:D\nDEF|\n", source="test")], vecs)
    r = cli("kb", "query", "--text", "a calm air", "-k", "1", "--embed-model", str(tiny_clip))
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output and "\\x1b]52" in r.output
