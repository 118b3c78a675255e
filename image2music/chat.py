"""``i2m chat``: an interactive terminal session around the graph.

Give an image path (Tab completes paths), watch the graph run node by node, read the description, the
references, the ABC and the metrics of every version, then act: accept, refine with your own words (a human
round through the graph: the run pauses before reflect and your words go into the reflect prompt), play,
open another image, or quit. Ctrl-C cancels the current run (it can be resumed), not the session.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from image2music.display import safe, terminal_safe
from image2music.graph.config import Settings
from image2music.graph.state import State
from image2music.outputs import RunResult
from image2music.resume import continue_run
from image2music.runner import compose_image
from image2music.tools.errors import I2MError, InputError
from image2music.tools.files import plain_path

PLAYERS = (["aplay", "-q"], ["paplay"], ["afplay"], ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"])


def enable_path_completion() -> None:
    """Tab completion of file paths in ``input()`` (readline, where available)."""
    try:
        import readline
    except ImportError:  # pragma: no cover - Windows without pyreadline
        return

    def complete(text: str, state: int) -> str | None:
        expanded = os.path.expanduser(text)
        matches = [m + ("/" if os.path.isdir(m) else "") for m in sorted(glob.glob(expanded + "*"))]
        return matches[state] if state < len(matches) else None

    readline.set_completer_delims(" \t\n;")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")


def find_player() -> list[str] | None:
    for cmd in PLAYERS:
        if shutil.which(cmd[0]):
            return cmd
    return None


class ChatSession:
    """The interactive loop; ``ask`` reads a line (``input`` in a terminal)."""

    def __init__(
        self,
        settings: Settings,
        console: Console,
        ask: Callable[[str], str] = input,
        progress_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings.with_overrides(human_pause=True)  # a person is here: every refine round asks
        self.console = console
        self.ask = ask
        self.progress_factory = progress_factory
        self.result: RunResult | None = None
        self.ctx: Any = None
        self.image: Path | None = None
        self._pending = Path()
        self._active: Any = None

    # -- input ------------------------------------------------------------------------------------------
    def prompt(self, text: str) -> str | None:
        """A line from the user; None on Ctrl-D; '' on Ctrl-C at the prompt."""
        try:
            return self.ask(text).strip()
        except EOFError:
            return None
        except KeyboardInterrupt:
            self.console.print()
            return ""

    # -- the loop ---------------------------------------------------------------------------------------
    def loop(self) -> None:
        self.console.print(
            Panel("Turn a picture into music. Type an image path (Tab completes), or q to quit.", title="i2m chat"),
            soft_wrap=False,
        )
        while True:
            line = self.prompt("image path> ")
            if line is None or line.lower() in ("q", "quit", "exit"):
                break
            if not line:
                continue
            if self.compose(Path(os.path.expanduser(line))):
                if not self.act():
                    break
        self.console.print("bye")

    def on_pause(self, state: State) -> str | None:
        rnd = int(state.get("refine_round", 0)) + 1
        status = getattr(self._active, "status", None)
        if status is not None:
            status.stop()  # no spinner over what the person types: their words are echoed as they type
        try:  # Ctrl-C here cancels the run (README), Ctrl-D lets the model decide
            try:
                words = self.ask(f"refinement round {rnd}: your words (Enter: the model decides)> ")
            except EOFError:
                words = ""
            words = words.strip()
        finally:
            if status is not None:
                status.start()
        return words or None

    def _progress(self, path: list[str] | None = None) -> Any:
        """The progress display; ``path``: the run's path so far (a person's extra round goes on numbering its
        rounds from there, as run.json does)."""
        if self.progress_factory is not None:
            self._active = self.progress_factory()
        else:
            from image2music.display import NodeProgress

            self._active = NodeProgress(self.console, path=path)
        return self._active

    def compose(self, image: Path, graph_input: Any = None) -> bool:
        """Run the graph for ``image`` (or continue this session's run with ``graph_input``); True when there
        is a result to act on."""
        earlier = self.result if graph_input is not None else None  # this session's run, continued
        run_id = earlier.run_id if earlier else None
        so_far = list(earlier.record.get("path") or []) if earlier else None
        try:
            with self._progress(so_far) as progress:
                if graph_input is None:
                    self._pending = plain_path(image)
                    self.result = compose_image(
                        image,
                        self.settings,
                        on_event=progress,
                        on_pause=self.on_pause,
                        notify=lambda m: self.console.print(Text(terminal_safe(m), style="yellow")),
                        on_start=self._started,
                        on_text=getattr(progress, "text", None),
                    )
                    self.image = image
                else:
                    self.result = continue_run(
                        self.ctx,
                        graph_input,
                        on_event=progress,
                        on_pause=self.on_pause,
                        on_text=getattr(progress, "text", None),
                    )
        except InputError as e:
            self.console.print(Text.assemble(("cannot use that image: ", "red"), terminal_safe(str(e))))
            return False
        except I2MError as e:
            self.console.print(Text.assemble(("error: ", "red"), terminal_safe(str(e))))
            return False
        except KeyboardInterrupt:
            rid = run_id or (self.ctx.run_id if self.ctx is not None else "")
            self.console.print(f"\n[yellow]run cancelled[/yellow]; continue it later with `i2m runs resume {rid}`")
            return False
        self.show(self.result)
        return True

    def _started(self, run_id: str, run_dir: Path) -> None:
        from image2music.graph.context import RunContext

        self.console.print(f"run [bold]{run_id}[/bold]")
        self.ctx = RunContext(settings=self.settings, run_id=run_id, image_path=self._pending, run_dir=run_dir).listen(
            lambda m: self.console.print(Text(terminal_safe(m), style="yellow"))
        )

    def show(self, result: RunResult) -> None:
        from image2music.display import show_record

        show_record(self.console, result.record, result.run_dir)

    def act(self) -> bool:
        """The action menu after a run; False to end the session."""
        while True:
            line = self.prompt("[a]ccept  [r]efine with your words  [p]lay  [o]pen another image  [q]uit> ")
            if line is None:
                return False
            choice = line[:1].lower()
            if choice == "q":
                return False
            if choice in ("a", "o"):
                if choice == "a" and self.result is not None:
                    self.console.print(safe(f"kept: {self.result.run_dir}"))
                return True
            if choice == "p":
                self.play()
            elif choice == "r":
                self.refine()

    def refine(self) -> None:
        from langgraph.types import Command

        if self.result is None or self.image is None or not self.result.record.get("final"):
            self.console.print("[yellow]nothing to refine yet[/yellow]")
            return
        words = self.prompt("your words (e.g. slower, more melancholic, add a bass line)> ")
        if not words:
            return
        self.compose(self.image, graph_input=Command(goto="reflect", update={"user_feedback": words}))

    def play(self) -> None:
        if self.result is None:
            return
        wav = self.result.run_dir / "music.wav"
        player = find_player()
        if not wav.exists():
            self.console.print(
                "[yellow]no audio: install FluidSynth and a soundfont (Debian: fluidsynth fluid-soundfont-gm)[/yellow]"
            )
            return
        if player is None:
            self.console.print(
                f"[yellow]no audio player found (aplay, paplay, afplay, ffplay); the audio is {wav}[/yellow]"
            )
            return
        self.console.print(safe(f"playing {wav} with {player[0]} (Ctrl-C stops)"))
        try:
            subprocess.run([*player, str(wav)], check=False)
        except KeyboardInterrupt:
            self.console.print("stopped")
