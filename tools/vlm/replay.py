"""Serve recorded answers from a JSONL file: the k-th call of a node gets the k-th line for that node."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from image2music.tools.vlm.base import GenerationSettings, VLMError, VLMResult

MAX_REPLAY_BYTES = 64 * 1024 * 1024
"""A replay file larger than this is refused (a recorded run is a few hundred kB)."""


class ReplayFileError(VLMError):
    """The replay file itself is unusable: refused input (exit code 2)."""

    exit_code = 2


def read_calls(path: Path) -> dict[str, list[str]]:
    """Group the texts of a ``vlm_calls.jsonl`` / replay file by node, in file order."""
    by_node: dict[str, list[str]] = {}
    p = Path(path)
    try:
        if not p.exists():
            raise ReplayFileError(f"cannot read replay file {path}: no such file")
        if not p.is_file():
            raise ReplayFileError(f"replay file {path} is not a regular file (a folder, a pipe or a device)")
        if p.stat().st_size > MAX_REPLAY_BYTES:
            raise ReplayFileError(f"replay file {path} is larger than {MAX_REPLAY_BYTES >> 20} MB; refused")
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # a BOM is fine
    except UnicodeDecodeError as e:
        raise ReplayFileError(f"replay file {path} is not UTF-8 text") from e
    except OSError as e:
        raise ReplayFileError(f"cannot read replay file {path}: {e.strerror or e}") from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReplayFileError(f"replay file {path}, line {n}: not JSON ({e.msg})") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("node"), str) or not isinstance(obj.get("text"), str):
            raise ReplayFileError(f'replay file {path}, line {n}: expected {{"node": "...", "text": "..."}}')
        by_node.setdefault(obj["node"], []).append(obj["text"])
    return by_node


class ReplayVLM:
    """Answers from a file, for offline runs, tests and exact re-runs of a recorded run."""

    def __init__(self, path: Path, delay_s: float = 0.0, token_delay_s: float = 0.0) -> None:
        self.path = Path(path)
        self.name = f"replay:{self.path.name}"
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s
        self.calls = read_calls(self.path)

    def generate(
        self,
        *,
        node: str,
        prompt: str,
        image: Image.Image,
        call_index: int,
        settings: GenerationSettings,
        capture_attention: bool = False,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> VLMResult:
        answers = self.calls.get(node, [])
        pause = stop.wait if stop is not None else time.sleep  # a stopped run does not wait out its delays
        if call_index >= len(answers):
            raise VLMError(
                f"replay file {self.path} has {len(answers)} answer(s) for node '{node}', "
                f'but this run needs answer {call_index + 1}: add more lines with "node": "{node}"'
            )
        if self.delay_s:
            pause(self.delay_s)
        text = answers[call_index]
        if on_text is not None:  # a word at a time (with its leading space), as a model streams
            for piece in _WORDS.findall(text):
                if self.token_delay_s:
                    pause(self.token_delay_s)
                if stop is not None and stop.is_set():
                    break
                on_text(piece)
        return VLMResult(text=text)


_WORDS = re.compile(r"\s*\S+|\s+")
