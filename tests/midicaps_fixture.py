"""A small MidiCaps-format dataset: MIDI made from corpus tunes, captions written here, Lakh layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from image2music.tools.music.check import check_abc
from image2music.tools.music.convert import midi_bytes
from image2music.tools.music.corpus import sample_corpus

MOODS = ["happy", "melancholic", "calm", "energetic", "dark"]


def build_midicaps(root: Path, n: int = 12, broken: int = 1, seed: int = 7) -> Path:
    """``root/train.json`` (JSON Lines) and ``root/lmd_full/<hex>/<md5>.mid``; ``broken`` unreadable files."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    made = 0
    for t in sample_corpus(n * 3, seed=seed):
        if made >= n:
            break
        r = check_abc(t.abc)
        if not r.ok or r.tune is None:
            continue
        data = midi_bytes(r.tune)
        md5 = hashlib.md5(data).hexdigest()
        loc = f"lmd_full/{md5[0]}/{md5}.mid"
        (root / loc).parent.mkdir(parents=True, exist_ok=True)
        (root / loc).write_bytes(data)
        mood = MOODS[made % len(MOODS)]
        lines.append(
            {
                "location": loc,
                "caption": f"A {mood} folk melody in {r.tune.key} with a steady rhythm, played on piano.",
                "genre": ["folk"],
                "mood": [mood],
                "key": r.tune.key,
                "time_signature": r.tune.meter_text or "4/4",
                "tempo": round(r.tune.tempo_qpm),
                "instrument_summary": ["Piano"],
            }
        )
        made += 1
    for b in range(broken):
        loc = f"lmd_full/f/broken{b}.mid"
        (root / loc).parent.mkdir(parents=True, exist_ok=True)
        (root / loc).write_bytes(b"MThd not really a midi file")
        lines.append(
            {
                "location": loc,
                "caption": "A broken file.",
                "genre": [],
                "mood": [],
                "key": "C major",
                "time_signature": "4/4",
                "tempo": 120,
                "instrument_summary": [],
            }
        )
    (root / "train.json").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root
