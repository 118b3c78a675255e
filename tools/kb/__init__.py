"""The knowledge base: a Chroma store of captioned ABC (``store``), the starter and MidiCaps ingest
(``ingest``), captions from the music (``captions``) and multimodal retrieval (``retrieval``). Functions take
explicit arguments (a ``KnowledgeBase``, a device), never the application's settings."""
