"""Every piece of process-wide mutable state, named in one place.

A run's own state lives in its :class:`~image2music.graph.context.RunContext` (its cancel flag, its listeners),
its graph's checkpoints and its folder; nothing of one run is kept in a module. What a module keeps is listed
here: a cache that serves every run of the process (models, clients, compiled grammars), or the process's own
bookkeeping (the run locks it holds, what it has warmed up or warned about once). The test
``tests/test_app/test_process_state.py`` walks the production code and fails on a module-level empty container,
an object of a class of its own module or a ``functools`` cache missing from this table, and on an entry that no
longer exists.
"""

from __future__ import annotations

PROCESS_STATE: dict[str, str] = {
    # caches of things every run of the process uses
    "image2music.tools.vlm._CACHE": "loaded VLMs, by the settings that choose them (each loaded once per process)",
    "image2music.tools.embedder._CACHE": "loaded CLIP embedders, by (model, device)",
    "image2music.tools.models._RESOLVED": "where a model id resolved (a path, or the error: asked again after 60 s)",
    "image2music.tools.kb.store._CLIENTS": "Chroma clients, by folder or URL (Chroma allows one client per folder)",
    "image2music.tools.kb.store._CALLERS": "the daemon threads that make Chroma server calls (idle ones reused)",
    "image2music.tools.music.workers._POOLS": "MusicXML worker processes (music21 imported once, reused by every run)",
    "image2music.graph.services._IMAGES": "decoded input images, by (path, size, mtime); at most 16",
    "image2music.graph.services._RETRIEVERS": "knowledge-base retrievers, by the settings that choose them",
    "image2music.graph.services._NO_EMBEDDER": "when an embedder could not be had, by settings (asked again later)",
    "image2music.graph.builder._compiled": "compiled graphs, by checkpointer and node functions (at most 8)",
    "image2music.tools.vlm.constrain._compiled": "the answer grammar compiled for llguidance (once per process)",
    "image2music.tools.vlm.constrain._TOKENIZERS": "llguidance tokenizers, by the model's tokenizer",
    "image2music.tools.vlm.constrain._ENCODED": "closing texts encoded by a tokenizer, by (tokenizer, text)",
    "image2music.tools.vlm.constrain._byte_matcher": "a byte matcher per start rule (is a text in the grammar)",
    "image2music.tools.music.grammar.gbnf": "the grammar's GBNF text per start rule",
    "image2music.tools.music.midi2abc._length_of": "ABC length texts, by (span, in a tuplet)",
    "image2music.tools.music.convert._MP3_CACHE": "the last 8 MP3 encodings, by (WAV path, size, mtime)",
    # the process's own bookkeeping
    "image2music.tools.vlm.capture._ACTIVE": "the attention recorder of each call in flight",
    "image2music.runlock._HELD": "the run locks this process holds (file descriptor, depth: re-entrant)",
    "image2music.warmup._WARMED": "what this process has started warming up (each once)",
    "image2music.graph.config._WARNED": "settings warnings already shown (each once per process)",
}
"""Import name -> what it holds."""
