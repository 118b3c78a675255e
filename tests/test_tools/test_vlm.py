"""VLM backends: replay and transformers (tiny random LLaVA built offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_replay
from PIL import Image

from image2music.tools.vlm import GenerationSettings, VLMError, make_vlm, strip_think
from image2music.tools.vlm.replay import ReplayVLM

IMG = Image.new("RGB", (64, 48), (120, 80, 200))


def test_replay_serves_kth_answer_per_node(tmp_path: Path) -> None:
    f = write_replay(tmp_path / "r.jsonl", [("compose", "a"), ("describe", "d"), ("compose", "b")])
    vlm = ReplayVLM(f)
    s = GenerationSettings()
    assert vlm.generate(node="compose", prompt="p", image=IMG, call_index=1, settings=s).text == "b"
    assert vlm.generate(node="describe", prompt="p", image=IMG, call_index=0, settings=s).text == "d"
    with pytest.raises(VLMError, match="has 2 answer\\(s\\) for node 'compose'"):
        vlm.generate(node="compose", prompt="p", image=IMG, call_index=2, settings=s)


def test_replay_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"node": "compose"}\n')
    with pytest.raises(VLMError, match="line 1"):
        ReplayVLM(bad)
    with pytest.raises(VLMError, match="cannot read replay file"):
        ReplayVLM(tmp_path / "missing.jsonl")
    with pytest.raises(VLMError, match="needs a file"):
        make_vlm("replay", "x")


def test_replay_streams_its_answers_a_word_at_a_time(tmp_path: Path) -> None:
    f = write_replay(tmp_path / "r.jsonl", [("compose", "Here it is:\n\n```abc\nX:1\n```  ok")])
    pieces: list[str] = []
    res = ReplayVLM(f, token_delay_s=0.001).generate(
        node="compose", prompt="p", image=IMG, call_index=0, settings=GenerationSettings(), on_text=pieces.append
    )
    assert "".join(pieces) == res.text and pieces[:3] == ["Here", " it", " is:"]


def test_strip_think() -> None:
    assert strip_think("<think>hmm</think>Answer") == "Answer"
    assert strip_think("Answer <think>unfinished") == "Answer"


def test_transformers_backend_generates_with_attention(tiny_llava: Path) -> None:
    vlm = make_vlm("transformers", str(tiny_llava))
    assert make_vlm("transformers", str(tiny_llava)) is vlm  # loaded once per process
    res = vlm.generate(
        node="describe",
        prompt="Describe the image.",
        image=IMG,
        call_index=0,
        settings=GenerationSettings(max_new_tokens=12, temperature=0.0),
        capture_attention=True,
    )
    assert isinstance(res.text, str)
    assert res.grid == (4, 4)  # 32x32 image, 8x8 patches
    # one row per generated token after the first (the prompt pass makes the first one)
    assert res.token_attention is not None and res.token_attention.shape == (res.meta["new_tokens"] - 1, 16)
    grid = res.attention_map()
    assert grid is not None and grid.shape == (4, 4) and np.all(grid >= 0)
    # the attention implementation is restored after the call
    assert vlm.model.config._attn_implementation != "eager"  # type: ignore[attr-defined]


def test_transformers_greedy_is_repeatable(tiny_llava: Path) -> None:
    vlm = make_vlm("transformers", str(tiny_llava))
    s = GenerationSettings(max_new_tokens=8, temperature=0.0)
    a = vlm.generate(node="compose", prompt="Write music.", image=IMG, call_index=0, settings=s)
    b = vlm.generate(node="compose", prompt="Write music.", image=IMG, call_index=0, settings=s)
    assert a.text == b.text and a.token_attention is None


def test_streaming_changes_nothing_but_shows_the_text(tiny_llava: Path) -> None:
    """The streamer hands over pieces that add up to the answer; the tokens, the captured attention and the
    vision features are exactly those of a call without it (sampling, same seed)."""
    vlm = make_vlm("transformers", str(tiny_llava))
    s = GenerationSettings(max_new_tokens=40, temperature=0.9, seed=3)
    kw = {"node": "compose", "prompt": "Write music.", "image": IMG, "call_index": 1, "settings": s}
    plain = vlm.generate(**kw, capture_attention=True)
    pieces: list[str] = []
    streamed = vlm.generate(**kw, capture_attention=True, on_text=pieces.append)
    assert streamed.text == plain.text and "".join(pieces) == plain.text and len(pieces) > 1
    assert streamed.meta["new_tokens"] == plain.meta["new_tokens"]
    assert streamed.token_attention is not None and plain.token_attention is not None
    assert np.array_equal(streamed.token_attention, plain.token_attention)
    assert streamed.meta["vision_forwards"] == 0  # the second call reused the features of the first


@pytest.mark.parametrize("budget", [60, 200])
def test_a_constrained_answer_is_valid_abc_even_from_random_weights(tiny_llava: Path, budget: int) -> None:
    """With the grammar a random model writes a tune the checker accepts, closed before its budget ends;
    without it, the same model writes no tune at all."""
    from image2music.tools.music.check import check_abc

    vlm = make_vlm("transformers", str(tiny_llava))
    kw = {"node": "compose", "prompt": "Write music.", "image": IMG, "call_index": 0}
    free = vlm.generate(**kw, settings=GenerationSettings(max_new_tokens=budget, temperature=0.7))
    assert not check_abc(free.text).ok
    ruled = vlm.generate(**kw, settings=GenerationSettings(max_new_tokens=budget, temperature=0.7, grammar=True))
    result = check_abc(ruled.text)
    assert result.ok, (ruled.text, [e.render() for e in result.errors])
    assert ruled.meta["new_tokens"] <= budget and ruled.meta["grammar"]["engine"] == "llguidance"
    assert ruled.text.rstrip().endswith("```") or "```" in ruled.text.split("```abc", 1)[1]


def test_missing_model_is_one_clear_message() -> None:
    with pytest.raises(VLMError) as e:
        make_vlm("transformers", "no-such-org/no-such-vlm-123")
    msg = str(e.value)
    assert "the VLM 'no-such-org/no-such-vlm-123' is not on this machine" in msg
    assert "hf download" in msg and "I2M_VLM_MODEL" in msg and "Traceback" not in msg


def test_unknown_backend() -> None:
    with pytest.raises(VLMError, match="unknown VLM backend"):
        make_vlm("nope", "x")


def _metaspace_tokenizer() -> object:
    """A SentencePiece-style tokenizer (a leading space is dropped at the start of a decode)."""
    from tiny_models import _CORPUS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_CORPUS * 4, trainer=trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.mark.parametrize("kind", ["byte-level BPE", "metaspace"])
def test_token_offsets_are_the_prefix_decodes_in_linear_time(kind: str) -> None:
    """Identical to decoding every prefix (what the attention rows are mapped with), on random ids: split
    UTF-8 characters, special tokens, leading spaces; one short window per step."""
    from tiny_models import train_tokenizer

    from image2music.tools.vlm.hf import OFFSET_WINDOW, token_offsets

    tok: object = train_tokenizer(["<s>", "</s>", "<pad>"]) if kind == "byte-level BPE" else _metaspace_tokenizer()
    rng = np.random.default_rng(0)
    calls = {"n": 0, "tokens": 0}

    class Counting:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            calls["n"] += 1
            calls["tokens"] += len(ids)
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)  # type: ignore[attr-defined]

    for n in (1, 2, 5, 40, 300):
        ids = rng.integers(0, len(tok), size=n).tolist()  # type: ignore[arg-type]
        want = [len(tok.decode(ids[: i + 2], skip_special_tokens=True)) for i in range(n - 1)]  # type: ignore[attr-defined]
        calls.update(n=0, tokens=0)
        assert token_offsets(Counting(), ids, n - 1) == want, (kind, n)
        assert calls["tokens"] <= (n + 1) * (2 * OFFSET_WINDOW + 3)  # linear: no prefix decoded whole per step


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_a_cpu_computes_in_bf16_when_it_has_it(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    """auto on a CPU: bf16 where the hardware has bf16 arithmetic (half the memory of fp32, faster: a 4 B model
    needs 8.8 GB, not 17.6), else fp32; CUDA and MPS as before."""
    import torch

    from image2music.tools.vlm import hf

    monkeypatch.setattr(hf, "cpu_has_bf16", lambda: native)
    assert hf.pick_dtype("cpu") == getattr(torch, expected)
    assert hf.pick_dtype("cpu", "float32") == torch.float32 and hf.pick_dtype("mps") == torch.float16


def test_the_cost_on_a_cpu_is_said_before_a_model_is_loaded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from image2music import cli
    from image2music.graph.config import load_settings
    from image2music.tools import vlm as vlm_pkg
    from image2music.tools.vlm import hf

    monkeypatch.setitem(vlm_pkg.CPU_COSTS, "org/known", {"bfloat16": (0.66, 25.0, 45.0)})
    assert "0.66 s a token" in vlm_pkg.cpu_notice("org/known", "bfloat16")
    assert "~25 min" in vlm_pkg.cpu_notice("org/known", "bfloat16") and "llama.cpp" in vlm_pkg.cpu_notice(
        "org/known", "bfloat16"
    )
    assert "tens of minutes" in vlm_pkg.cpu_notice("org/unknown", "float32")
    monkeypatch.setattr(hf, "pick_device", lambda device="auto": "cpu")
    monkeypatch.setattr(hf, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(vlm_pkg, "model_location", lambda model: model)
    cli.require_model(load_settings(vlm_model="org/known"))
    assert "no GPU: 'org/known' runs on the CPU in bfloat16" in " ".join(capsys.readouterr().err.split())
