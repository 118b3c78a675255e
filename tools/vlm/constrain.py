"""Grammar-constrained decoding for a local model: the ABC answer grammar (:mod:`image2music.tools.music.grammar`)
applied by llguidance as a logits processor, and the same grammar in each server's dialect.

At every step the model may only choose tokens that keep the answer inside the grammar, so a compose or reflect
answer cannot be malformed ABC. The budget is kept for the tune: prose before it may use half of the tokens (then
the fence is opened for the model), and near the end a tune that is still open is closed: the first closing text
the grammar accepts at that point (``\\n```"``, ``|\\n```"``, ``]\\n```"`` ...) is forced token by token, so the
budget never cuts a tune in the middle.

The grammar is compiled once per process, the tokenizer's token table once per tokenizer; a call makes a copy of
a ready matcher.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from image2music.tools.vlm.base import VLMError

SERVER_DIALECTS = ("openai", "vllm", "sglang", "llamacpp")
"""How the grammar goes to a served model: ``openai`` sends none (a plain OpenAI-compatible server),
``vllm`` ``structured_outputs.grammar``, ``sglang`` ``ebnf``, ``llamacpp`` ``grammar`` (all GBNF)."""

RESERVE_TOKENS = 32
"""Tokens kept at the end of the budget to close an open tune."""
OPENINGS = ("\n```abc\n", "```abc\n")
"""Texts that open the tune from prose; forced when half the budget is spent before the tune began."""

CLOSINGS = tuple(
    f"{closer}{note}\n```" for closer in ("", '"', "!", "}", "]", "|") for note in ("", "C", "|", "C|")
) + ("\nK:C\nC4|\n```", "K:C\nC4|\n```")
"""Texts that end an open tune from every state a model can be in: an annotation, a decoration, a grace group or
a chord to close first, then a note where the line still needs one (the first music line, after an accidental
or a broken rhythm), then the fence; still in the header, a key and one note. The first the grammar accepts is
forced."""


def server_fields(dialect: str) -> dict[str, Any]:
    """The request fields that send the ABC answer grammar to a server of this kind (empty for ``openai``)."""
    from image2music.tools.music.grammar import gbnf

    match dialect:
        case "openai":
            return {}
        case "vllm":
            return {"structured_outputs": {"grammar": gbnf()}}
        case "sglang":
            return {"ebnf": gbnf()}
        case "llamacpp":
            return {"grammar": gbnf()}
        case _:
            raise VLMError(f"unknown server kind '{dialect}': use {', '.join(SERVER_DIALECTS)} (I2M_VLM_SERVER)")


@functools.cache
def _compiled() -> str:
    """The answer grammar in llguidance's form, compiled once per process."""
    import llguidance

    from image2music.tools.music.grammar import gbnf

    return str(llguidance.grammar_from("gbnf", gbnf()))


_TOKENIZERS: dict[int, Any] = {}
_LOCK = threading.Lock()


def _ll_tokenizer(tokenizer: Any, n_vocab: int, eos: list[int]) -> Any:
    """llguidance's table of the tokenizer's tokens (about a second to build: once per tokenizer)."""
    key = id(tokenizer)
    with _LOCK:
        if key not in _TOKENIZERS:
            try:
                import llguidance.hf
            except ImportError as e:
                raise VLMError(
                    "grammar-constrained decoding needs llguidance (pip install llguidance), or set I2M_GRAMMAR=off"
                ) from e
            try:
                _TOKENIZERS[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=eos))
            except ValueError as e:
                raise VLMError(
                    f"grammar-constrained decoding needs a fast tokenizer ({e}); set I2M_GRAMMAR=off for this model"
                ) from e
        return _TOKENIZERS[key][1]


class AbcGrammar:
    """A logits processor for ``model.generate``: masks every token the grammar does not allow at this step and
    closes an open tune before the budget ends. One per call (it holds the call's parse state)."""

    def __init__(self, tokenizer: Any, n_vocab: int, eos: list[int], prompt_len: int, max_new_tokens: int) -> None:
        import llguidance

        self.tokenizer = tokenizer
        self.matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer, n_vocab, eos), _compiled(), log_level=0)
        if self.matcher.is_error():
            raise VLMError(f"the ABC grammar did not compile: {self.matcher.get_error()}")
        self.n_vocab = n_vocab
        self.eos = eos
        self.prompt_len = prompt_len
        self.max_new_tokens = max_new_tokens
        self.words = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self.forced: list[int] = []
        self.generated: list[int] = []
        self.opened_by_budget = False
        self.in_prose: bool | None = None
        """Before the tune at half the budget: None until asked (once), then whether the fence is still to open."""
        self.closed_by_budget = False
        self.gave_up: str | None = None
        """Why the grammar stopped steering (a token it could not follow); None while it steers."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = int(input_ids.shape[1]) - self.prompt_len
        if self.gave_up is not None:
            return scores
        if step > 0:
            token = int(input_ids[0, -1])
            self.generated.append(token)
            if not self.matcher.consume_token(token):
                self.gave_up = self.matcher.get_error() or "a token outside the grammar"
                return scores
        if not self.forced and self.in_prose is not False and step >= self.max_new_tokens // 2:
            if self.in_prose is None:  # once: has the model opened the tune itself?
                self.in_prose = "```abc" not in self.tokenizer.decode(self.generated, skip_special_tokens=True)
            if self.in_prose:  # at the first step where the grammar takes it (not inside a character's bytes)
                self.forced = self._first_accepted(OPENINGS, self.max_new_tokens - step, then_stop=False)
                self.opened_by_budget = bool(self.forced)
                self.in_prose = not self.forced
        if not self.forced and step + RESERVE_TOKENS >= self.max_new_tokens and not self.matcher.is_accepting():
            self.forced = self._first_accepted(CLOSINGS, self.max_new_tokens - step, then_stop=True)
            self.closed_by_budget = self.closed_by_budget or bool(self.forced)
        if self.forced:
            token = self.forced.pop(0)
            masked = torch.full_like(scores, float("-inf"))
            masked[:, token] = scores[:, token]
            return masked
        self.matcher.unsafe_compute_mask_ptr(self.words.ctypes.data, self.words.nbytes)
        allowed = np.unpackbits(self.words.view(np.uint8), bitorder="little")[: scores.shape[-1]].astype(bool)
        if len(allowed) < scores.shape[-1]:
            allowed = np.concatenate([allowed, np.zeros(scores.shape[-1] - len(allowed), dtype=bool)])
        if not allowed.any():
            self.gave_up = self.matcher.get_error() or "no token is allowed"
            return scores
        return scores.masked_fill(torch.from_numpy(~allowed).to(scores.device), float("-inf"))

    def _first_accepted(self, texts: tuple[str, ...], left: int, *, then_stop: bool) -> list[int]:
        """Tokens of the first of ``texts`` the grammar accepts here within ``left`` tokens; with ``then_stop``
        it must end the answer (the grammar may stop after it), and EOS follows it."""
        for text in texts:
            ids = _encoded(self.tokenizer, text)
            if len(ids) + then_stop > left:
                continue
            fork = self.matcher.deep_copy()
            if fork.consume_tokens(ids) and (fork.is_accepting() or not then_stop):
                return [*ids, self.eos[0]] if then_stop and self.eos else list(ids)  # a copy: forced is consumed
        return []


_ENCODED: dict[tuple[int, str], list[int]] = {}


def _encoded(tokenizer: Any, text: str) -> list[int]:
    key = (id(tokenizer), text)
    if key not in _ENCODED:
        _ENCODED[key] = list(tokenizer.encode(text, add_special_tokens=False))
    return _ENCODED[key]


def abc_grammar(model: Any, tokenizer: Any, prompt_len: int, max_new_tokens: int) -> AbcGrammar:
    """The ABC answer grammar for one ``generate`` call of ``model`` (logits of ``model``'s vocabulary size)."""
    n_vocab = _logits_size(model)
    eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_list = [int(e) for e in (eos if isinstance(eos, list) else [eos])] if eos is not None else []
    return AbcGrammar(tokenizer, n_vocab, eos_list, prompt_len, max_new_tokens)


def _logits_size(model: Any) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "out_features", None):
        return int(head.out_features)
    cfg = model.config
    text = getattr(cfg, "text_config", None) or cfg
    return int(getattr(text, "vocab_size", None) or cfg.vocab_size)


@functools.cache
def _byte_matcher(start: str) -> tuple[Any, Any]:
    """A matcher over single bytes for rule ``start`` (to ask whether a text is in the grammar)."""
    import llguidance
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from image2music.tools.music.grammar import gbnf

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)} | {"<eos>": len(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    ll = llguidance.LLTokenizer(tok.to_str(), n_vocab=len(vocab), eos_token=len(alphabet))
    return tok, llguidance.LLMatcher(ll, str(llguidance.grammar_from("gbnf", gbnf(start))), log_level=0)


def grammar_accepts(text: str, start: str = "root") -> bool:
    """Whether ``text`` is in the grammar from rule ``start`` (``root``: an answer; ``tune``: a tune alone),
    decided by llguidance, the engine that constrains local models."""
    tok, template = _byte_matcher(start)
    matcher = template.deep_copy()
    return bool(matcher.consume_tokens(tok.encode(text).ids) and matcher.is_accepting())
