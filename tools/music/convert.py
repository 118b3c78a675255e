"""Turn a checked tune into files people use: MIDI (always), MusicXML, WAV and SVG (when tools exist)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import mido

from image2music.tools.files import TEMP_PREFIX, atomic_write_bytes
from image2music.tools.music.abcparse import Bar, Tune, Voice
from image2music.tools.music.safe_svg import engrave_input, sanitize_svg

TICKS_PER_QUARTER = 480
_TICKS_PER_WHOLE = TICKS_PER_QUARTER * 4
_MAX_EXPANDED_BARS_FACTOR = 4
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
)


class ConversionError(RuntimeError):
    """A conversion could not be done; the message says why and what to install or change."""


def play_order(bars: list[Bar]) -> list[int]:
    """Indices of ``bars`` in playing order, repeats and numbered endings expanded (bounded).

    A ``:|`` goes back to the last ``|:``, or else to the last ``||`` or ``|]`` after the previous repeated
    section, or else to the end of that section (its last ending), or else to the start of the tune; before any
    repeat, ``||`` alone starts none (as abc2midi reads both: a tune of parts ``A :| B |] C :|`` repeats C, not B
    and C). On pass n only the endings marked for n are played; after the last ending of a section the next
    section starts.
    """
    order: list[int] = []
    n = len(bars)
    limit = max(n, 1) * _MAX_EXPANDED_BARS_FACTOR
    start = 0
    passno = 1
    jumped: set[int] = set()
    open_repeat: int | None = None  # a `|:` no `:|` has closed yet
    reopened: set[int] = set()
    i = 0
    repeated = False  # a repeated section has been played: from here on a double bar starts the next one
    while i < n and len(order) < limit:
        b = bars[i]
        if repeated and passno == 1 and open_repeat is None and i > 0 and not b.passes:
            before = bars[i - 1]
            if before.ends_section and not before.end_repeat and not before.passes:
                start = i  # `:| B |] C :|`: the repeat goes back to the double bar
        if b.start_repeat and not b.passes and not b.loose_repeat and open_repeat is not None and open_repeat < i:
            if i not in reopened:  # `|: A || |: B`: a new `|:` repeats the open section first (as abc2midi does)
                reopened.add(i)
                passno, i = 2, open_repeat
                continue
            passno = 1  # back here after the repeat: the new section starts
        if b.start_repeat and passno == 1 and not (b.loose_repeat and open_repeat is not None):
            start = i  # (a loose `| :` inside an open section starts nothing, as abc2midi reads it)
            open_repeat = i
        if b.passes and passno not in b.passes:
            i += 1
            if i >= n or not bars[i].passes:
                start, passno = i, 1  # the section's endings are over
            continue
        order.append(i)
        if b.end_repeat:
            open_repeat = None
        if b.end_repeat and passno < 8 and (_more_passes(bars, i, passno) if b.passes else i not in jumped):
            jumped.add(i)
            repeated = True
            passno += 1
            i = start
            continue
        i += 1
        if b.end_repeat or (b.passes and (i >= n or not bars[i].passes)):
            start, passno = i, 1  # a repeated section is over; the next one starts here
    return order


def _more_passes(bars: list[Bar], i: int, passno: int) -> bool:
    """Whether the endings of the section around bar ``i`` still have a pass after ``passno``."""
    j = i
    while j < len(bars) and bars[j].passes:
        if max(bars[j].passes) > passno:
            return True
        j += 1
    return False


def bar_order(bars: list[Bar], parts: list[str] | None = None) -> list[int]:
    """Indices of ``bars`` in playing order: repeats and endings expanded (``play_order``), and, when the tune
    names an order of parts (``P:AABB`` in the header) and its bars are labelled (``P:A`` in the body), each
    part in that order with its own repeats; bars before the first label are played once, first."""
    if not parts or not any(b.part for b in bars):
        return play_order(bars)
    order = [i for i in play_order([b for b in bars if b.part is None])]
    for label in parts:
        idx = [i for i, b in enumerate(bars) if b.part == label]
        order += [idx[k] for k in play_order([bars[i] for i in idx])]
        if len(order) > max(len(bars), 1) * _MAX_EXPANDED_BARS_FACTOR * 4:
            break
    return order


def voice_ticks(voice: Voice, parts: list[str] | None = None) -> list[tuple[int, int, int]]:
    """(start, end, pitch) in ticks (``TICKS_PER_QUARTER``) with repeats (and the ``parts`` order) expanded and
    ties merged; times are whole ticks from each bar's start (integer arithmetic keeps this fast)."""
    per_whole = _TICKS_PER_WHOLE

    def tick(x: Fraction) -> int:
        return (x.numerator * per_whole) // x.denominator

    by_bar: dict[int, list[tuple[int, int, list[int], frozenset[int]]]] = {}
    bar_span: dict[int, int] = {}
    for bar in voice.bars:
        bar_span[bar.number] = tick(bar.length)
    bar_start = {bar.number: tick(bar.start) for bar in voice.bars}
    for ev in voice.events:
        off = tick(ev.start) - bar_start.get(ev.bar, 0)
        dur = tick(ev.dur)
        by_bar.setdefault(ev.bar, []).append((off, dur, ev.pitches, ev.ties))
        if off + dur > bar_span.get(ev.bar, 0):
            bar_span[ev.bar] = off + dur
    notes: list[list[int]] = []
    open_ties: dict[int, int] = {}  # pitch -> index in notes of a note that continues
    last_of: dict[int, int] = {}  # pitch -> index in notes of its latest note
    cursor = 0
    for idx in bar_order(voice.bars, parts):
        bar = voice.bars[idx]
        for p in bar.ties_in:  # a tie written inside this bar (an ending's own): the note before holds into it
            if p in last_of and notes[last_of[p]][1] == cursor:
                open_ties[p] = last_of[p]
        for off, dur, pitches, ties in by_bar.get(bar.number, []):
            start = cursor + off
            if open_ties:
                for p in [p for p in open_ties if p not in pitches]:
                    del open_ties[p]  # a tie only joins a note to the next note of the same pitch
            for p in pitches:
                if p in open_ties:
                    k = open_ties.pop(p)
                    notes[k][1] = start + dur
                    if p in ties:
                        open_ties[p] = k
                    continue
                notes.append([start, start + dur, p])
                last_of[p] = len(notes) - 1
                if p in ties:
                    open_ties[p] = len(notes) - 1
        cursor += bar_span.get(bar.number, 0)
    return [(a, b, p) for a, b, p in notes]


def voice_notes(voice: Voice, parts: list[str] | None = None) -> list[tuple[Fraction, Fraction, int]]:
    """(start, duration, pitch) in whole notes with repeats expanded and ties merged (``voice_ticks``)."""
    return [
        (Fraction(a, _TICKS_PER_WHOLE), Fraction(b - a, _TICKS_PER_WHOLE), p) for a, b, p in voice_ticks(voice, parts)
    ]


_TRANSLIT = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2009": " ",
        "\u3000": " ",
    }
)


def midi_text(text: str, limit: int = 120) -> str:
    """Text a MIDI meta event can hold (Latin-1): typographic quotes and dashes transliterated, accents kept
    where Latin-1 has them or reduced to their letter, everything else (e.g. CJK) dropped."""
    out = []
    for ch in unicodedata.normalize("NFC", text.translate(_TRANSLIT)):
        if ord(ch) < 256:
            out.append(ch if ch.isprintable() else " ")
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if ord(c) < 128 and c.isprintable())
        out.append(base)
    return re.sub(r"\s+", " ", "".join(out)).strip(" -")[:limit]


@dataclass(frozen=True)
class PlayedTrack:
    """One voice as it is played: MIDI channel (0-15, 9 = drums), program, name and notes as
    (on tick, off tick, pitch) at ``TICKS_PER_QUARTER``, repeats expanded and ties merged."""

    name: str
    channel: int
    program: int | None
    notes: list[tuple[int, int, int]]


def played_tracks(tune: Tune) -> list[PlayedTrack]:
    """What the MIDI file of ``tune`` holds, one track per voice (the MIDI writer and the metrics read this)."""
    channels = [c for c in range(16) if c != 9]
    out: list[PlayedTrack] = []
    for n, voice in enumerate(tune.voices.values()):
        ch = (voice.channel - 1) if voice.channel and 1 <= voice.channel <= 16 else channels[n % len(channels)]
        notes: list[tuple[int, int, int]] = []
        for start, end, pitch in voice_ticks(voice, tune.part_order):
            if not 0 <= pitch <= 127:
                continue
            on = max(0, start)  # never before the start, whatever the layers did
            notes.append((on, max(on + 1, end), pitch))
        out.append(PlayedTrack(midi_text(voice.name or voice.id) or "voice", ch, voice.program, notes))
    return out


def midi_bytes(tune: Tune) -> bytes:
    """A type-1 Standard MIDI File: a tempo/meter track and one track per voice."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_QUARTER)
    meta = mido.MidiTrack()
    mid.tracks.append(meta)
    if tune.title:
        meta.append(mido.MetaMessage("track_name", name=midi_text(tune.title), time=0))
    tempo = min(16_777_215, max(1, int(round(60_000_000 / tune.tempo_qpm))))  # what a MIDI tempo event holds
    meta.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    if tune.meter is not None:
        den = tune.meter[1]
        if den & (den - 1) == 0:
            meta.append(mido.MetaMessage("time_signature", numerator=tune.meter[0], denominator=den, time=0))
    meta.append(mido.MetaMessage("end_of_track", time=0))
    for played in played_tracks(tune):
        track = mido.MidiTrack()
        mid.tracks.append(track)
        track.append(mido.MetaMessage("track_name", name=played.name, time=0))
        ch = played.channel
        if played.program is not None:
            track.append(mido.Message("program_change", channel=ch, program=played.program, time=0))
        msgs: list[tuple[int, int, int]] = []  # (tick, order, pitch); order 0 = off before on
        for on, off, pitch in played.notes:
            msgs.append((on, 1, pitch))
            msgs.append((off, 0, pitch))
        msgs.sort()
        now = 0
        for tick, kind, pitch in msgs:
            typ = "note_on" if kind else "note_off"
            track.append(mido.Message(typ, channel=ch, note=pitch, velocity=80 if kind else 0, time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def write_midi(tune: Tune, path: Path) -> Path:
    """Write ``tune`` as MIDI to ``path`` (atomically)."""
    if not tune.ok:
        raise ConversionError("the tune has errors; fix them before converting")
    return atomic_write_bytes(Path(path), midi_bytes(tune))


def write_musicxml(abc: str, path: Path, timeout_s: float = 120.0) -> Path:
    """MusicXML through music21 (its ABC reader, our file), in a warm worker process with a deadline: music21
    is imported once per worker, not per file, and it can take minutes on a large tune, which a run must not
    wait for (the worker is killed at the deadline)."""
    from image2music.tools.music.workers import WorkerError, WorkerTimeout, pool

    try:
        xml = pool().call("musicxml", abc.encode("utf-8"), timeout_s)
    except WorkerTimeout as e:
        raise ConversionError(f"music21 took longer than {timeout_s:g} s (I2M_CONVERT_TIMEOUT_S); no MusicXML") from e
    except WorkerError as e:
        raise ConversionError(f"music21 could not write MusicXML for this tune: {str(e)[:300]}") from e
    if not xml:
        raise ConversionError("music21 could not write MusicXML for this tune: no output")
    return atomic_write_bytes(Path(path), xml)


def find_soundfont() -> Path | None:
    for p in SOUNDFONT_PATHS:
        if Path(p).is_file():
            return Path(p)
    return None


PREVIEW_RATE = 22050
"""The sample rate of the report's audio preview (mono MP3, 40 kbit/s: 0.3 MB a minute); music.wav keeps the WAV."""


_MP3_CACHE: dict[tuple[str, int, int], bytes] = {}
_MP3_LOCK = threading.Lock()


def mp3_bytes(wav_path: Path) -> bytes:
    """The WAV as a mono MP3 preview at PREVIEW_RATE, for a page that plays alone; ConversionError if it cannot.
    Encoding costs CPU in proportion to samples: mono at half rate is ~4x cheaper than the stereo render. The
    last few encodings are kept (by the WAV's path, size and modification time): the run's outputs encode it
    in the background, the report takes it from there."""
    try:
        st = os.stat(wav_path)
        key = (str(Path(wav_path).absolute()), st.st_size, st.st_mtime_ns)
    except OSError as e:
        raise ConversionError(f"cannot encode {Path(wav_path).name} as MP3: {e}") from e
    with _MP3_LOCK:
        if key in _MP3_CACHE:
            return _MP3_CACHE[key]
    data = _encode_mp3(Path(wav_path))
    with _MP3_LOCK:
        while len(_MP3_CACHE) >= 8:
            _MP3_CACHE.pop(next(iter(_MP3_CACHE)))
        _MP3_CACHE[key] = data
    return data


def _encode_mp3(wav_path: Path) -> bytes:
    """LAME at its default quality (5) and a constant 40 kbit/s (a VBR stream would need the Xing header,
    which a streaming encoder does not write, for players to show its length), resampling to PREVIEW_RATE
    itself; the channels are averaged first. ~3x less CPU than libsndfile's LAME (quality 2, which it does not
    let one change) after a resampling of our own."""
    try:
        import lameenc
        import numpy as np
        import soundfile as sf

        data, rate = sf.read(str(wav_path), dtype="int16", always_2d=True)
        mono = data[:, 0].astype(np.int32)
        for c in range(1, data.shape[1]):  # column by column: 5x faster than a sum over the short axis
            mono += data[:, c]
        mono //= data.shape[1]
        enc = lameenc.Encoder()
        enc.silence()
        enc.set_channels(1)
        enc.set_in_sample_rate(int(rate))
        enc.set_out_sample_rate(PREVIEW_RATE if rate >= 2 * PREVIEW_RATE - 100 else int(rate))
        enc.set_quality(5)
        enc.set_bit_rate(40)
        return bytes(enc.encode(mono.astype(np.int16).tobytes()) + enc.flush())
    except (ImportError, OSError, RuntimeError, ValueError) as e:  # soundfile raises LibsndfileError (RuntimeError)
        raise ConversionError(f"cannot encode {wav_path.name} as MP3: {e}") from e


def _space(folder: Path) -> str:
    """How full the disk of ``folder`` is, in words for a reason."""
    try:
        free = shutil.disk_usage(folder).free / 1e6
    except OSError:
        return f"is the disk holding {folder} full?"
    return f"is the disk holding {folder} full? {free:.1f} MB free there"


def wav_seconds(path: Path) -> float:
    """How long a WAV plays (its frames over its rate; 0 when it cannot be read)."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate() or 1)
    except (OSError, EOFError, wave.Error):
        return 0.0


def midi_seconds(path: Path) -> float:
    """How long a MIDI file plays (0 when it cannot be read)."""
    import mido

    try:
        return float(mido.MidiFile(str(path)).length)
    except (OSError, ValueError, EOFError, KeyError, IndexError):
        return 0.0


def wav_is_complete(path: Path) -> bool:
    """The RIFF header's sizes agree with the file's length (a WAV cut short by a full disk does not)."""
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            size = os.fstat(fh.fileno()).st_size
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            if struct.unpack("<I", head[4:8])[0] + 8 not in (size, size - 1):  # a header never finished either
                return False
            while True:  # every chunk, the data chunk included, lies wholly inside the file
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return True
                name, n = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
                if fh.tell() + n > size:
                    return False
                if name == b"data":
                    return n > 0
                fh.seek(n + (n & 1), 1)
    except OSError:
        return False


def write_wav(midi_path: Path, path: Path, timeout_s: float = 120.0) -> Path:
    """Render MIDI to WAV with FluidSynth and a General MIDI soundfont."""
    exe = shutil.which("fluidsynth")
    sf = find_soundfont()
    if exe is None or sf is None:
        raise ConversionError(
            "WAV needs FluidSynth and a General MIDI soundfont: install the Debian packages "
            "'fluidsynth fluid-soundfont-gm' (macOS: brew install fluid-synth)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".wav", dir=path.parent, delete=False
    ) as t:
        tmp = Path(t.name)
    try:
        # the scratch folder lies beside the output (not in TMPDIR): a kill leaves it where a resume cleans it
        with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}fluidsynth-", dir=path.parent) as scratch:
            # its audio libraries write client config under $HOME; keep that in the temp dir
            env = {**os.environ, "HOME": scratch, "XDG_CONFIG_HOME": scratch, "XDG_RUNTIME_DIR": scratch}
            args = ["-ni", "-q", "-g", "0.8", "-r", "44100", "-F", str(tmp), str(sf), str(midi_path)]
            # only the samples of the instruments the tune plays are read: the same WAV, half the CPU (the
            # whole 140 MB GM bank otherwise); a FluidSynth older than the setting (2.0) renders without it
            lean = ["-o", "synth.dynamic-sample-loading=1"]
            for opts in (lean, []):
                proc = subprocess.run(
                    [exe, *opts, *args], capture_output=True, text=True, timeout=timeout_s, env=env, cwd=scratch
                )
                if not (opts and "dynamic-sample-loading" in proc.stderr + proc.stdout and proc.returncode):
                    break
        if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            raise ConversionError(f"fluidsynth failed: {(proc.stderr or proc.stdout).strip()[:300]}")
        if not wav_is_complete(tmp):  # e.g. the disk filled while it wrote: never under the final name
            raise ConversionError(
                f"fluidsynth wrote an incomplete WAV ({tmp.stat().st_size} bytes; {_space(path.parent)}): "
                f"{(proc.stderr or proc.stdout).strip()[:200]}"
            )
        # a full disk can also leave a whole-looking WAV (its header finished) that holds only the start
        wrote, lasts = wav_seconds(tmp), midi_seconds(midi_path)
        if wrote + 0.05 < lasts:
            raise ConversionError(
                f"fluidsynth wrote {wrote:.1f} s of a {lasts:.1f} s tune ({_space(path.parent)}); the WAV was not kept"
            )
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # the temp file was made 0600; the music is the user's ordinary file
        tmp.replace(path)
    except subprocess.TimeoutExpired as e:
        raise ConversionError(f"fluidsynth took longer than {timeout_s:g} s") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_svg(abc: str, path: Path, timeout_s: float = 60.0) -> Path:
    """Engrave sheet music as SVG with abcm2ps (first page)."""
    exe = shutil.which("abcm2ps")
    if exe is None:
        raise ConversionError("SVG sheet music needs abcm2ps: install the Debian package 'abcm2ps'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}abcm2ps-", dir=path.parent) as d:
        src = Path(d) / "tune.abc"
        src.write_text(engrave_input(abc), encoding="utf-8")
        out = Path(d) / "out"
        try:
            # names relative to the scratch folder: abcm2ps writes the input's path into the SVG's <title>
            proc = subprocess.run(
                [exe, "-g", "-O", out.name, src.name], capture_output=True, text=True, timeout=timeout_s, cwd=d
            )
        except subprocess.TimeoutExpired as e:
            raise ConversionError(f"abcm2ps took longer than {timeout_s:g} s") from e
        pages = sorted(Path(d).glob("out*.svg"))
        if not pages:
            raise ConversionError(f"abcm2ps wrote no SVG: {(proc.stderr or proc.stdout).strip()[:300]}")
        safe = sanitize_svg(pages[0].read_text(encoding="utf-8", errors="replace"))
        if safe is None:
            raise ConversionError("abcm2ps wrote an SVG that cannot be read as XML; no score is shown")
        return atomic_write_bytes(path, safe.encode("utf-8"))
