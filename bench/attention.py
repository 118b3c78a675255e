"""Benchmark: attention capture while generating, and vision encodes per run.

  .venv/bin/python bench/attention.py

On a tiny random LLaVA (16 layers, 16 heads) with a long image-token sequence and 256 new tokens, each mode
runs in a fresh process; peak memory growth of generate (ru_maxrss) and time are printed for
(a) plain generate, (b) generate(output_attentions=True) as the paper's reference code does, and
(c) our streamed capture (forward hooks keep one image-attention vector per token). Goal: c/a <= 1.10 in
memory. Then vision-tower forwards per run: reference style (every call encodes the image) vs ours.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 256


def build(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_llava
    from transformers import LlavaForConditionalGeneration

    build_tiny_llava(path, image_size=64, patch=4)  # 256 image tokens
    m = LlavaForConditionalGeneration.from_pretrained(path)
    cfg = m.config
    cfg.text_config.num_hidden_layers = 16
    cfg.text_config.num_attention_heads = 16
    cfg.text_config.num_key_value_heads = 16
    cfg.text_config.hidden_size = 256
    cfg.text_config.intermediate_size = 512
    LlavaForConditionalGeneration(cfg).save_pretrained(path)


def child(path: str, mode: str) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    from image2music.tools.vlm.capture import AttentionRecorder
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(
        path, attn_implementation="eager" if mode == "output_attentions" else "sdpa"
    )
    model.eval()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[Image.new("RGB", (64, 64), (9, 99, 199))], return_tensors="pt")
    kw = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2)  # warm up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.inference_mode():
        if mode == "plain":
            model.generate(**inputs, **kw)
        elif mode == "output_attentions":
            out = model.generate(**inputs, **kw, output_attentions=True, return_dict_in_generate=True)
            pos = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(-1)
            rows = [torch.stack([layer[0, :, -1, pos].mean(0) for layer in step]).mean(0) for step in out.attentions]
            np.stack([r.numpy() for r in rows])
        else:
            pos = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(-1).numpy()
            with AttentionRecorder(model, pos) as rec:
                model.generate(**inputs, **kw)
            rec.result()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": secs,
                "peak_growth_kb": peak - base,
                "image_tokens": int((inputs["input_ids"][0] == model.config.image_token_id).sum()),
            }
        )
    )


def vision_calls(path: str) -> tuple[int, int]:
    sys.path.insert(0, str(ROOT))
    from image2music.tools.vlm import GenerationSettings, make_vlm
    from PIL import Image

    vlm = make_vlm("transformers", path)
    img = Image.new("RGB", (64, 64), (1, 2, 3))
    s = GenerationSettings(max_new_tokens=4, temperature=0.0)
    nodes = ["describe", "compose", "compose", "parse-retry", "reflect", "explain"]
    before = vlm.vision_calls  # type: ignore[attr-defined]
    for n in nodes:
        vlm.generate(node=n, prompt=f"{n}", image=img, call_index=0, settings=s)
    return len(nodes), vlm.vision_calls - before  # type: ignore[attr-defined]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    with tempfile.TemporaryDirectory(prefix="i2m-bench-") as d:
        path = Path(d) / "model"
        build(path)
        res = {}
        for mode in ("plain", "output_attentions", "streamed"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), mode], capture_output=True, text=True, check=True
            )
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        a, b, c = res["plain"], res["output_attentions"], res["streamed"]
        print(f"tiny LLaVA, 16 layers x 16 heads, {a['image_tokens']} image tokens, {NEW_TOKENS} new tokens (CPU)")
        for name, r in (("(a) plain generate", a), ("(b) output_attentions=True", b), ("(c) streamed capture", c)):
            print(f"  {name:<28} peak growth {r['peak_growth_kb'] / 1024:8.1f} MiB   time {r['seconds']:6.2f} s")
        base = max(a["peak_growth_kb"], 1)
        print(
            f"  memory ratio b/a = {b['peak_growth_kb'] / base:.2f}   c/a = {c['peak_growth_kb'] / base:.2f}"
            f"   (goal c/a <= 1.10: {'met' if c['peak_growth_kb'] / base <= 1.10 else 'NOT met'})"
        )
        print(f"  time ratio   b/a = {b['seconds'] / a['seconds']:.2f}   c/a = {c['seconds'] / a['seconds']:.2f}")
        calls, ours = vision_calls(str(path))
        print(f"vision-tower forwards for a run of {calls} VLM calls: reference style {calls}, ours {ours}")


if __name__ == "__main__":
    main()
