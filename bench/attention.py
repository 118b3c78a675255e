"""Benchmark: what capturing attention costs, measured so the figures leave the noise.

  .venv/bin/python bench/attention.py

A tiny random LLaVA with 1,024 image tokens (16 layers x 16 heads, hidden 256) generates 256 new tokens in four
modes, each in a fresh process with a fixed ``MALLOC_MMAP_THRESHOLD_`` and the peak resident set reset
(``/proc/self/clear_refs``) right before the call: (1) the project without capture, (2) the project with
streamed capture (forward hooks keep one image-attention vector per token), (3) plain ``generate``, (4)
``generate(output_attentions=True)`` as the paper's reference code does. Goals: capture/no-capture <= 1.05 and
project/plain <= 1.10 in peak memory growth (no pixel copy), capture/plain <= 1.2 in time. Then vision-tower
forwards for the calls of one run: reference style (every call encodes the image) vs ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    from image2music.tools.vlm import GenerationSettings, make_vlm
    from image2music.tools.vlm.capture import AttentionRecorder  # noqa: F401 - loaded before the measurement
    from PIL import Image
    from transformers import AutoModelForImageTextToText

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
    from image2music.tools.vlm import GenerationSettings, make_vlm
    from PIL import Image

    vlm = make_vlm("transformers", path, max_pixels=128 * 128)
    img = Image.new("RGB", (128, 128), (1, 2, 3))
    s = GenerationSettings(max_new_tokens=4, temperature=0.0)
    nodes = ["describe", "compose", "compose", "reflect", "reflect", "explain"]
    before = vlm.vision_calls  # type: ignore[attr-defined]
    for n in nodes:
        vlm.generate(node=n, prompt=f"{n}", image=img, call_index=0, settings=s)
    return len(nodes), vlm.vision_calls - before  # type: ignore[attr-defined]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # fmt: skip
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


if __name__ == "__main__":
    main()
