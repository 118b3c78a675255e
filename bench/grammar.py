"""Benchmark: what the ABC answer grammar does for a model that writes, and what it costs.

  .venv/bin/python bench/grammar.py                 # all parts (~10 minutes on 2 cores)
  .venv/bin/python bench/grammar.py --part first-try --families llava,qwen3vl --answers 10

1. first-try: random-weight tiny models of several families (the test suite's builders) answer the compose prompt
   as a run renders it, with the default budget (1,024 new tokens) and sampling (0.7), once per seed, with the
   grammar off and on; each answer goes through the parse-check (``check_abc``). Printed per family: answers
   valid on the first try, off / on, and how many the budget closed. Goal: on >= 95% in every family.
2. mask: the cost of the mask per token at SmolVLM-256M's dimensions (random weights; a byte-level BPE tokenizer
   trained here to SmolLM2's 49,152 tokens, so that the mask is computed over a vocabulary of the real size):
   compose calls of 256 new tokens, grammar off and on side by side, the order alternating; total and median
   ratios. Goal: <= 1.05.
3. compile: the grammar is compiled once per process, whatever the number of calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

FAMILIES = {
    "llava": "build_tiny_llava",
    "qwen2.5-vl": "build_tiny_qwen25vl",
    "qwen3-vl": "build_tiny_qwen3vl",
    "idefics3": "build_tiny_idefics3",
    "gemma3": "build_tiny_gemma3",
    "mistral3": "build_tiny_mistral3",
    "internvl": "build_tiny_internvl",
}


def first_try(families: list[str], answers: int, budget: int) -> None:
    import tiny_models
    from attention import _photo, _prompts

    from image2music.tools.music.check import check_abc
    from image2music.tools.vlm import GenerationSettings, make_vlm

    prompt = _prompts()["compose"]
    image = _photo()
    print(f"compose answers valid on the first try ({answers} per family and mode, {budget} new tokens, T=0.7)")
    print(f"{'family':<12} {'grammar off':>12} {'grammar on':>12} {'closed at budget':>17} {'s/answer on':>12}")
    totals = [0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="i2m-bench-grammar-") as d:
        for fam in families:
            path = getattr(tiny_models, FAMILIES[fam])(Path(d) / fam)
            vlm = make_vlm("transformers", str(path), device="cpu")
            ok = {False: 0, True: 0}
            closed = 0
            took = 0.0
            for seed in range(answers):
                for grammar in (False, True):
                    s = GenerationSettings(max_new_tokens=budget, temperature=0.7, seed=seed, grammar=grammar)
                    t0 = time.perf_counter()
                    res = vlm.generate(node="compose", prompt=prompt, image=image, call_index=0, settings=s)
                    if grammar:
                        took += time.perf_counter() - t0
                        closed += bool(res.meta.get("grammar", {}).get("closed_at_budget"))
                    verdict = check_abc(res.text)
                    ok[grammar] += verdict.ok
                    if grammar and not verdict.ok:
                        why = "; ".join(e.render() for e in verdict.errors[:2])
                        print(f"  {fam} seed {seed}: not valid with the grammar: {why} {res.meta.get('note', '')}")
            totals = [totals[0] + ok[False], totals[1] + ok[True], totals[2] + answers]
            print(f"{fam:<12} {ok[False]:>6}/{answers:<5} {ok[True]:>6}/{answers:<5} {closed:>10}/{answers:<6} "
                  f"{took / answers:>11.2f}")  # fmt: skip
    print(f"{'all':<12} {totals[0]:>6}/{totals[2]:<5} {totals[1]:>6}/{totals[2]:<5}  "
          f"(on: {100 * totals[1] / totals[2]:.1f}%)")  # fmt: skip


def train_tokenizer(path: Path, vocab: int = 49152) -> Any:
    """A byte-level BPE tokenizer of ``vocab`` tokens trained on text at hand (the music21 corpus's ABC, the
    standard library's sources): a vocabulary of SmolLM2's size for the mask to be computed over."""
    import sysconfig

    import music21
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    paths = sorted(Path(music21.__file__).parent.joinpath("corpus").rglob("*.abc"))
    paths += sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))[:1500]

    def texts() -> Any:
        for p in paths:
            yield p.read_bytes().decode("utf-8", errors="replace")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<fake_token_around_image>",
                "<global-img>", "<end_of_utterance>"]  # fmt: skip
    specials += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<end_of_utterance>", pad_token="<|endoftext|>")
    fast.save_pretrained(path)
    return fast


def mask_cost(pairs: int, new_tokens: int) -> None:
    from attention import _photo, _prompts, build_smolvlm
    from transformers import AutoProcessor

    from image2music.tools.vlm import GenerationSettings, make_vlm

    with tempfile.TemporaryDirectory(prefix="i2m-bench-mask-") as d:
        path = Path(d) / "smolvlm"
        label = build_smolvlm(path)
        t0 = time.perf_counter()
        fast = train_tokenizer(Path(d) / "tok")
        print(f"tokenizer: {len(fast)} tokens, trained in {time.perf_counter() - t0:.0f} s")
        proc = AutoProcessor.from_pretrained(path)
        template = proc.tokenizer.chat_template
        specials = {"additional_special_tokens": ["<image>", "<fake_token_around_image>", "<global-img>",
                                                  "<end_of_utterance>"]}  # fmt: skip
        fast.add_special_tokens(specials)
        fast.chat_template = template
        proc.tokenizer = fast
        proc.chat_template = proc.chat_template or template
        proc.save_pretrained(path)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        cfg.image_token_id = fast.convert_tokens_to_ids("<image>")
        cfg.save_pretrained(path)
        vlm = make_vlm("transformers", str(path), device="cpu")
        image, prompt = _photo(), _prompts()["compose"]
        ratios, total = [], {False: 0.0, True: 0.0}
        for grammar in (False, True):  # warm both paths (the grammar's token table is built once per tokenizer)
            vlm.generate(node="compose", prompt=prompt, image=image, call_index=0,
                         settings=GenerationSettings(max_new_tokens=4, temperature=0.0, grammar=grammar))  # fmt: skip
        for i in range(pairs):
            took = {}
            for grammar in (False, True) if i % 2 == 0 else (True, False):
                s = GenerationSettings(max_new_tokens=new_tokens, temperature=0.7, seed=i, grammar=grammar)
                t0 = time.perf_counter()
                res = vlm.generate(node="compose", prompt=prompt, image=image, call_index=0, settings=s)
                took[grammar] = (time.perf_counter() - t0) / max(1, res.meta["new_tokens"])
                total[grammar] += took[grammar]
            ratios.append(took[True] / took[False])
        print(f"mask cost at {label}, vocabulary {len(fast)}: {1000 * total[False] / pairs:.1f} -> "
              f"{1000 * total[True] / pairs:.1f} ms a token; ratio {total[True] / total[False]:.3f}, "
              f"median of {pairs} pairs {statistics.median(ratios):.3f} (goal <= 1.05)")  # fmt: skip


def compile_once(calls: int) -> None:
    import tiny_models
    from PIL import Image

    from image2music.tools.vlm import GenerationSettings, constrain, make_vlm

    with tempfile.TemporaryDirectory(prefix="i2m-bench-compile-") as d:
        vlm = make_vlm("transformers", str(tiny_models.build_tiny_llava(Path(d) / "m")), device="cpu")
        for i in range(calls):
            vlm.generate(node="compose", prompt="p", image=Image.new("RGB", (32, 32)), call_index=i,
                         settings=GenerationSettings(max_new_tokens=8, grammar=True))  # fmt: skip
    info = constrain._compiled.cache_info()
    print(f"grammar compiled {info.misses} time(s) for {calls} constrained calls ({info.hits} from the cache)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "first-try", "mask", "compile"], default="all")
    ap.add_argument("--families", default="llava,qwen2.5-vl,qwen3-vl,idefics3,gemma3,mistral3")
    ap.add_argument("--answers", type=int, default=20)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--mask-tokens", type=int, default=256)
    a = ap.parse_args()
    if a.part in ("all", "compile"):
        compile_once(5)
    if a.part in ("all", "first-try"):
        first_try(a.families.split(","), a.answers, a.budget)
    if a.part in ("all", "mask"):
        mask_cost(a.pairs, a.mask_tokens)


if __name__ == "__main__":
    main()
