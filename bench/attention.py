"""Benchmark: what capturing attention costs, measured so the figures leave the noise.

  .venv/bin/python bench/attention.py

A tiny random LLaVA with 1,024 image tokens (16 layers x 16 heads, hidden 256) generates 256 new tokens in four
modes, each in a fresh process with a fixed ``MALLOC_MMAP_THRESHOLD_`` and the peak resident set reset
(``/proc/self/clear_refs``) right before the call: (1) the project without capture, (2) the project with
streamed capture (forward hooks keep one image-attention vector per token), (3) plain ``generate``, (4)
``generate(output_attentions=True)`` as the paper's reference code does. Goals: capture/no-capture <= 1.05 and
project/plain <= 1.10 in peak memory growth (no pixel copy), capture/plain <= 1.2 in time. Then vision-tower
forwards for the calls of one run: reference style (every call encodes the image) vs ours.

Then capture at realistic sizes (``--sizes tiny,smolvlm-256m,qwen2vl-1.5b`` picks; all by default): random
weights with SmolVLM-256M-Instruct's dimensions and with Qwen2-VL-2B's language model (1.5 B parameters, its
vision tower cut to 4 blocks), loaded by the project's own code with its shipped defaults, describe and
compose prompts as a run renders them; each call is made twice side by side, capture off and on (the order
alternating), and the bench prints the total time ratio, the median of the pairs' ratios and the peak
resident memory ratio. Goals: time <= 1.10, peak <= 1.05. Takes ~15 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 256
MODES = ("project", "project+capture", "plain", "output_attentions")


def build(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_llava
    from transformers import LlavaForConditionalGeneration

    build_tiny_llava(path, image_size=128, patch=4)  # 32 x 32 = 1,024 image tokens
    m = LlavaForConditionalGeneration.from_pretrained(path)
    cfg = m.config
    cfg.text_config.num_hidden_layers = 16
    cfg.text_config.num_attention_heads = 16
    cfg.text_config.num_key_value_heads = 16
    cfg.text_config.hidden_size = 256
    cfg.text_config.intermediate_size = 512
    cfg.text_config.max_position_embeddings = 2048
    big = LlavaForConditionalGeneration(cfg)
    big.generation_config.eos_token_id = None  # always 256 new tokens
    big.save_pretrained(path)


def _hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    except OSError:
        pass


def child(path: str, mode: str) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from image2music.tools.vlm import GenerationSettings, make_vlm
    from image2music.tools.vlm.capture import AttentionRecorder  # noqa: F401 - loaded before the measurement

    image = Image.new("RGB", (128, 128), (9, 99, 199))
    prompt = "Describe the image."
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=0.0)
    vlm = make_vlm("transformers", path, max_pixels=128 * 128)
    inputs = vlm._inputs(prompt, image)  # type: ignore[attr-defined]
    n_image = int((inputs["input_ids"][0] == vlm.image_token_id).sum())  # type: ignore[attr-defined]
    if mode in ("plain", "output_attentions"):
        impl = "eager" if mode == "output_attentions" else "sdpa"
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=impl).eval()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm up
    else:
        vlm.generate(node="warmup", prompt=prompt, image=image, call_index=0,
                     settings=GenerationSettings(max_new_tokens=2, temperature=0.0))  # fmt: skip
    _reset_peak()
    base = _hwm_kb()
    t0 = time.perf_counter()
    if mode == "plain":
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    elif mode == "output_attentions":
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_attentions=True,
                return_dict_in_generate=True,
            )  # fmt: skip
        pos = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(-1)
        [torch.stack([layer[0, :, -1, pos].mean(0) for layer in step]).mean(0) for step in out.attentions]
    else:
        vlm._vision_cache.clear()  # type: ignore[attr-defined]
        vlm.generate(node="describe", prompt=prompt, image=image, call_index=0, settings=settings,
                     capture_attention=mode == "project+capture")  # fmt: skip
    secs = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "seconds": secs, "peak_growth_kb": _hwm_kb() - base, "image_tokens": n_image}))


def vision_calls(path: str) -> tuple[int, int]:
    from PIL import Image

    from image2music.tools.vlm import GenerationSettings, make_vlm

    vlm = make_vlm("transformers", path, max_pixels=128 * 128)
    img = Image.new("RGB", (128, 128), (1, 2, 3))
    s = GenerationSettings(max_new_tokens=4, temperature=0.0)
    nodes = ["describe", "compose", "compose", "reflect", "reflect", "explain"]
    before = vlm.vision_calls  # type: ignore[attr-defined]
    for n in nodes:
        vlm.generate(node=n, prompt=f"{n}", image=img, call_index=0, settings=s)
    return len(nodes), vlm.vision_calls - before  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------------
# Realistic sizes: capture on vs off in describe and compose, as shipped, in one process, alternating


def build_smolvlm(path: Path) -> str:
    """SmolVLM-256M-Instruct's dimensions with random weights: Idefics3 with a SigLIP-base vision tower (12 layers,
    hidden 768, 512-px tiles of 16-px patches, pixel shuffle 4 -> 64 tokens a tile) and SmolLM2-135M's text model
    (30 layers, hidden 576, 9 heads / 3 KV heads, 49,152-token vocabulary). A 512 x 512 image is split into 2 x 2
    tiles plus the global view: 320 image tokens."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_idefics3
    from transformers import AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration

    build_tiny_idefics3(path)
    cfg = Idefics3Config.from_pretrained(path)
    cfg.vision_config.update({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                              "num_attention_heads": 12, "image_size": 512, "patch_size": 16})  # fmt: skip
    cfg.text_config.update({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                            "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                            "max_position_embeddings": 8192, "rope_theta": 100000.0})  # fmt: skip
    cfg.scale_factor = 4
    _save_random(Idefics3ForConditionalGeneration, cfg, path)
    proc = AutoProcessor.from_pretrained(path)
    proc.image_seq_len = 64
    proc.image_processor.size = {"longest_edge": 1024}
    proc.image_processor.max_image_size = {"longest_edge": 512}
    proc.save_pretrained(path)
    return "SmolVLM-256M dimensions (Idefics3: SigLIP-base + 30 layers x 576, 9/3 heads)"


def build_qwen2vl(path: Path) -> str:
    """Qwen2-VL-2B's language model with random weights (28 layers, hidden 1,536, 12 heads / 2 KV heads,
    intermediate 8,960, 151,936-token vocabulary: 1.5 B parameters) and its vision tower (hidden 1,280, 16 heads,
    14-px patches merged 2 x 2) cut to 4 of its 32 blocks so that it builds on 2 cores. A 512 x 512 image: 324
    image tokens."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_qwen2vl
    from transformers import AutoProcessor, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    build_tiny_qwen2vl(path)
    cfg = Qwen2VLConfig.from_pretrained(path)
    rope = dict(cfg.text_config.rope_parameters)
    cfg.vision_config.update({"depth": 4, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4})
    cfg.text_config.update({"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                            "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                            "max_position_embeddings": 32768, "layer_types": ["full_attention"] * 28,
                            "rope_parameters": {**rope, "mrope_section": [16, 24, 24]}})  # fmt: skip
    cfg.tie_word_embeddings = True
    _save_random(Qwen2VLForConditionalGeneration, cfg, path)
    proc = AutoProcessor.from_pretrained(path)
    proc.image_processor.max_pixels = 512 * 512
    proc.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 512 * 512}
    proc.save_pretrained(path)
    return "Qwen2-VL-2B language model (1.5 B: 28 layers x 1,536, 12/2 heads), vision cut to 4 blocks"


def _save_random(cls: Any, cfg: Any, path: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = cls(cfg).eval()
    model.generation_config.eos_token_id = None  # always the full number of new tokens
    model.save_pretrained(path)


def _photo() -> Any:
    """A 512 x 512 picture with some structure (sky, sea, a sun, a lighthouse)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (512, 512), (40, 70, 140))
    d = ImageDraw.Draw(img)
    for y in range(256):
        d.line([(0, y), (511, y)], fill=(250 - y // 2, 140 - y // 4, 60 + y // 3))
    d.ellipse((300, 150, 380, 230), fill=(255, 220, 120))
    d.rectangle((90, 170, 120, 330), fill=(235, 235, 230))
    return img


def _prompts(examples: int = 2) -> dict[str, str]:
    import gzip

    from image2music.prompts import load
    from image2music.tools.kb.retrieval import format_examples

    with gzip.open(ROOT / "tools" / "data" / "starter.jsonl.gz", "rt", encoding="utf-8") as f:
        refs = [json.loads(line) for _, line in zip(range(examples), f, strict=False)]
    description = ("A lighthouse on a rocky shore at sunset; the sky fades from orange to violet over a calm sea, "
                   "and the sun sits low above the horizon. The mood is calm and a little melancholic.")  # fmt: skip
    return {
        "describe": load("describe").render(),
        "compose": load("compose").render(description=description, examples=format_examples(refs, 1500)),
    }


def pair_child(path: str, describe_new: int, compose_new: int, pairs: int, examples: int) -> None:
    import statistics

    from image2music.tools.vlm import GenerationSettings, make_vlm

    vlm = make_vlm("transformers", path)  # shipped defaults: sdpa, 512 x 512 pixels, the feature cache
    image = _photo()
    prompts = _prompts(examples)
    new = {"describe": describe_new, "compose": compose_new}
    warm = GenerationSettings(max_new_tokens=2, temperature=0.0)
    for capture in (False, True):  # the image is encoded once (as in a run), both paths warmed up
        vlm.generate(node="describe", prompt=prompts["describe"], image=image, call_index=0, settings=warm,
                     capture_attention=capture)  # fmt: skip
    seconds = {False: 0.0, True: 0.0}
    cpu = {False: 0.0, True: 0.0}
    peak = {False: 0, True: 0}
    ratios: list[float] = []
    rows = 0
    for i in range(pairs):
        for node in ("describe", "compose"):
            settings = GenerationSettings(max_new_tokens=new[node], temperature=0.0)
            took = {}
            for capture in (False, True) if i % 2 == 0 else (True, False):  # a pair side by side, order alternating
                _reset_peak()
                c0, t0 = time.process_time(), time.perf_counter()
                res = vlm.generate(node=node, prompt=prompts[node], image=image, call_index=0, settings=settings,
                                   capture_attention=capture)  # fmt: skip
                took[capture] = time.perf_counter() - t0
                seconds[capture] += took[capture]
                cpu[capture] += time.process_time() - c0
                peak[capture] = max(peak[capture], _hwm_kb())
                if capture and res.token_attention is not None:
                    rows = max(rows, len(res.token_attention))
            ratios.append(took[True] / took[False])
    inputs = vlm._inputs(prompts["compose"], image)  # type: ignore[attr-defined]
    n_image = int((inputs["input_ids"][0] == vlm.image_token_id).sum())  # type: ignore[attr-defined]
    print(json.dumps({"seconds": [seconds[False], seconds[True]], "cpu": [cpu[False], cpu[True]],
                      "peak_kb": [peak[False], peak[True]], "image_tokens": n_image, "rows": rows,
                      "median_ratio": statistics.median(ratios), "pairs": len(ratios),
                      "prompt_tokens": int(inputs["input_ids"].shape[1])}))  # fmt: skip


SIZES = {
    # name: (builder, describe new tokens, compose new tokens, pairs of each, retrieved examples in compose)
    "tiny": ("build", 128, 256, 4, 2),
    "smolvlm-256m": ("build_smolvlm", 128, 256, 4, 2),
    "qwen2vl-1.5b": ("build_qwen2vl", 16, 32, 2, 0),
}


def realistic(env: dict[str, str], only: list[str]) -> None:
    print("capture on vs off, describe + compose as shipped (one process, alternating ABBA, random weights, CPU)")
    for name, (builder, d_new, c_new, pairs, examples) in SIZES.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="i2m-bench-") as d:
            path = Path(d) / "model"
            what = globals()[builder](path) or "tiny LLaVA (16 layers x 16 heads, hidden 256)"
            out = subprocess.run(
                [sys.executable, __file__, "--pair", str(path), str(d_new), str(c_new), str(pairs), str(examples)],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(f"{name} failed: {out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
        (t0, t1), (c0, c1), (p0, p1) = r["seconds"], r["cpu"], r["peak_kb"]
        print(f"  {name}: {what}")
        print(f"    compose prompt {r['prompt_tokens']} tokens ({r['image_tokens']} image, {examples} examples), "
              f"describe {d_new} + compose {c_new} new tokens, {pairs} pairs each; map rows {r['rows']}")  # fmt: skip
        print(f"    time  plain {t0:7.1f} s   capture {t1:7.1f} s   capture / plain = {t1 / t0:.3f}, median of "
              f"{r['pairs']} pairs {r['median_ratio']:.3f} (goal <= 1.10); CPU {c1 / max(c0, 1e-9):.3f}")  # fmt: skip
        print(f"    peak  plain {p0 / 1024:7.0f} MiB capture {p1 / 1024:7.0f} MiB capture / plain = {p1 / p0:.3f}"
              " (goal <= 1.05)")  # fmt: skip


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 7 and sys.argv[1] == "--pair":
        pair_child(sys.argv[2], *(int(a) for a in sys.argv[3:7]))
        return
    only = sys.argv[sys.argv.index("--sizes") + 1].split(",") if "--sizes" in sys.argv else []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # fmt: skip
    if only:
        realistic(env, only)
        return
    with tempfile.TemporaryDirectory(prefix="i2m-bench-") as d:
        path = Path(d) / "model"
        build(path)
        res = {}
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), mode], capture_output=True, text=True, env=env
            )
            if out.returncode != 0:
                raise SystemExit(f"{mode} failed: {out.stderr[-2000:]}")
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        p, c, a, o = (res[m] for m in MODES)
        print(f"tiny LLaVA, 16 layers x 16 heads, {a['image_tokens']} image tokens, {NEW_TOKENS} new tokens (CPU)")
        for name, r in (("project, no capture", p), ("project, streamed capture", c), ("plain generate", a),
                        ("output_attentions=True", o)):  # fmt: skip
            print(f"  {name:<27} peak growth {r['peak_growth_kb'] / 1024:8.1f} MiB   time {r['seconds']:6.2f} s")

        def ratio(x: dict[str, float], y: dict[str, float], key: str) -> float:
            return x[key] / max(y[key], 1e-9)

        mem_cap = ratio(c, p, "peak_growth_kb")
        mem_proj = ratio(p, a, "peak_growth_kb")
        t_cap = ratio(c, a, "seconds")
        print(f"  memory: capture / no capture = {mem_cap:.2f} (goal <= 1.05)   project / plain = {mem_proj:.2f}"
              f" (goal <= 1.10)   output_attentions / plain = {ratio(o, a, 'peak_growth_kb'):.2f}")  # fmt: skip
        print(f"  time:   capture / plain = {t_cap:.2f} (goal <= 1.2)   output_attentions / plain = "
              f"{ratio(o, a, 'seconds'):.2f}")  # fmt: skip
        calls, ours = vision_calls(str(path))
        print(f"vision-tower forwards for a run of {calls} VLM calls: reference style {calls}, ours {ours}")
    realistic(env, only)


if __name__ == "__main__":
    main()
