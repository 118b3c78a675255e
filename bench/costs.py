"""Benchmark: what a run costs on this machine's CPU, at real model sizes (random weights, real dimensions).

  .venv/bin/python bench/costs.py                       # both models, both dtypes (~15 minutes on 2 cores)
  .venv/bin/python bench/costs.py --models smolvlm-256m --dtypes float32

For each model and dtype, in a fresh process, through the project's own loader (``make_vlm``, shipped defaults:
sdpa, 512 x 512 pixels, the feature cache, the ABC grammar on compose):

- prefill: the compose prompt as a run renders it (two retrieved examples) with one new token;
- decode: the compose prompt (where most of a run's tokens are written) with 8 and with 40 new tokens; seconds a
  token = the difference / 32 (and the same after the shorter describe prompt);
- a default run: its prefills (describe, compose, two reflect rounds, explain) plus its token budgets
  (256 + 1,024 + 2 x 1,024 + 384 = 3,712 new tokens) at that speed: the most a run can take; and a typical run,
  with answers of the length real models write (describe 150, compose and reflect 500, explain 250 tokens);
- streaming: the same calls with and without the live text (``on_text``), side by side, alternating: the ratio
  (goal <= 1.02; the VM's speed moves by several percent between calls), and the time spent inside the streamer
  over a whole compose call (what streaming costs, free of that noise).

Models: ``qwen3vl-4b``: Qwen3-VL-4B-Instruct's dimensions (36 layers x 2,560, 32/8 heads, 151,936-token vocabulary,
the 24-block vision tower: 4.4 B parameters); ``smolvlm-256m``: SmolVLM-256M-Instruct's (see bench/attention.py).
Weights are random: the time a token takes does not depend on them (every token runs every layer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

BUDGET = {"describe": 256, "compose": 1024, "reflect": 2 * 1024, "explain": 384}
TYPICAL = {"describe": 150, "compose": 500, "reflect": 2 * 500, "explain": 250}


def build_qwen3vl_4b(path: Path) -> str:
    """Qwen3-VL-4B-Instruct's dimensions with random bf16 weights (built in bf16: 8.8 GB, not 17.6)."""
    import torch
    from tiny_models import build_tiny_qwen3vl
    from transformers import AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    build_tiny_qwen3vl(path)
    cfg = Qwen3VLConfig.from_pretrained(path)
    rope = {**cfg.text_config.rope_parameters, "rope_theta": 5000000.0, "mrope_section": [24, 20, 20]}
    cfg.text_config.update({"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                            "vocab_size": 151936, "max_position_embeddings": 32768,
                            "rope_parameters": rope})  # fmt: skip
    cfg.vision_config.update({"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                              "out_hidden_size": 2560, "num_position_embeddings": 2304,
                              "deepstack_visual_indexes": [5, 11, 17]})  # fmt: skip
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    model.generation_config.eos_token_id = None  # always the full number of new tokens
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    proc = AutoProcessor.from_pretrained(path)
    proc.image_processor.max_pixels = 512 * 512
    proc.image_processor.size = {"shortest_edge": 64 * 64, "longest_edge": 512 * 512}
    proc.save_pretrained(path)
    return f"Qwen3-VL-4B dimensions ({params / 1e9:.2f} B parameters: 36 layers x 2,560, 32/8 heads, vision 24 blocks)"


def build(model: str, path: Path) -> str:
    if model == "qwen3vl-4b":
        return build_qwen3vl_4b(path)
    from attention import build_smolvlm

    return build_smolvlm(path)


def measure(path: str, dtype: str, pairs: int) -> dict[str, Any]:
    """In this (fresh) process: prefill, seconds a token, and the streaming ratio."""
    from attention import _photo, _prompts

    from image2music.prompts import load
    from image2music.tools.vlm import GenerationSettings, make_vlm

    t0 = time.perf_counter()
    vlm = make_vlm("transformers", path, device="cpu", dtype=dtype)
    load_s = time.perf_counter() - t0
    image = _photo()
    prompts = {**_prompts(), "describe": load("describe").render()}

    def call(node: str, new: int, text: bool = False, seed: int = 0) -> float:
        s = GenerationSettings(max_new_tokens=new, temperature=0.7, seed=seed)  # every call its full tokens
        pieces: list[str] = []
        t = time.perf_counter()
        res = vlm.generate(node=node, prompt=prompts[node], image=image, call_index=0, settings=s,
                           on_text=pieces.append if text else None)  # fmt: skip
        took = time.perf_counter() - t
        assert res.meta["new_tokens"] == new, res.meta
        return took

    encode = call("describe", 1)  # the image is encoded once (the feature cache keeps it for the other calls)
    prefill_compose = call("compose", 1)
    short, long = call("describe", 8), call("describe", 40)
    per_token_describe = (long - short) / 32
    prefill_describe = max(0.0, short - 8 * per_token_describe)
    # compose and reflect write most of a run's tokens, after their long prompts: decode measured there
    short, long = call("compose", 8), call("compose", 40)
    per_token = (long - short) / 32
    # what streaming itself costs, timed inside it: the streamer's seconds over the call's
    from image2music.tools.vlm import hf

    inside = {"s": 0.0}
    real_put = hf.TextPieces.put

    def timed_put(self: Any, value: Any) -> None:
        t = time.perf_counter()
        real_put(self, value)
        inside["s"] += time.perf_counter() - t

    hf.TextPieces.put = timed_put  # type: ignore[method-assign]
    whole = call("compose", 40, text=True)
    hf.TextPieces.put = real_put  # type: ignore[method-assign]
    stream_share = inside["s"] / whole
    ratios = []
    for i in range(pairs):
        took = {}
        for text in (False, True) if i % 2 == 0 else (True, False):
            took[text] = call("describe", 24, text=text, seed=i)
        ratios.append(took[True] / took[False])
    prompt_tokens = int(vlm._inputs(prompts["compose"], image)["input_ids"].shape[1])  # type: ignore[attr-defined]
    return {
        "load_s": load_s,
        "first_call_s": encode,
        "prefill": {"describe": prefill_describe, "compose": prefill_compose},
        "per_token": per_token,
        "per_token_describe": per_token_describe,
        "stream_ratio": statistics.median(ratios),
        "stream_share": stream_share,
        "prompt_tokens": prompt_tokens,
    }


def run_estimate(m: dict[str, Any], tokens: dict[str, int]) -> float:
    """Seconds of a run: each call's prefill (reflect and explain prompts hold the tune: as long as compose's) and
    its new tokens."""
    p = m["prefill"]
    prefills = p["describe"] + p["compose"] + 2 * p["compose"] + p["compose"]
    return prefills + sum(tokens.values()) * m["per_token"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smolvlm-256m,qwen3vl-4b")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--child", nargs=3, metavar=("PATH", "DTYPE", "PAIRS"), help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.build:
        print(build(a.build[0], Path(a.build[1])))
        return
    if a.child:
        print(json.dumps(measure(a.child[0], a.child[1], int(a.child[2]))))
        return
    print(f"{'model':<14} {'dtype':<9} {'load':>6} {'prefill':>8} {'s/token':>8} {'run: budget':>12} "
          f"{'typical':>8} {'stream':>7}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="i2m-bench-costs-") as d:
        for model in a.models.split(","):
            path = Path(d) / model
            t0 = time.perf_counter()
            built = subprocess.run(
                [sys.executable, __file__, "--build", model, str(path)], capture_output=True, text=True
            )
            if built.returncode != 0:
                print(f"# {model}: could not be built: {built.stderr.strip().splitlines()[-1:]}")
                continue
            label = built.stdout.strip().splitlines()[-1]
            print(f"# {model}: {label} (built in {time.perf_counter() - t0:.0f} s)")
            for dtype in a.dtypes.split(","):
                out = subprocess.run([sys.executable, __file__, "--child", str(path), dtype, str(a.pairs)],
                                     capture_output=True, text=True)  # fmt: skip
                if out.returncode != 0:
                    print(f"{model:<14} {dtype:<9} failed: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                m = json.loads(out.stdout.strip().splitlines()[-1])
                budget, typical = run_estimate(m, BUDGET), run_estimate(m, TYPICAL)
                print(f"{model:<14} {dtype:<9} {m['load_s']:>5.0f}s {m['prefill']['compose']:>7.1f}s "
                      f"{m['per_token']:>8.3f} {budget / 60:>10.1f}m {typical / 60:>7.1f}m {m['stream_ratio']:>7.3f}"
                      f"   (compose prompt {m['prompt_tokens']} tokens; after describe's "
                      f"{m['per_token_describe']:.3f} s a token; streaming {100 * m['stream_share']:.3f}% of a "
                      "call, timed inside it)")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
