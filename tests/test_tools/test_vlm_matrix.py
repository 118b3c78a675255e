"""A matrix over tiny random models of several VLM families, each checked against an oracle: greedy tokens
identical to plain ``generate``, the attention map equal to one computed from ``output_attentions`` (eager),
the grid from what the processor returns, one vision-tower forward for describe + compose + reflect + explain.

Families in the matrix: LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, InternVL, Qwen2-VL, Qwen2.5-VL, Qwen3-VL
(deepstack), GLM-4V, Idefics3 (the SmolVLM architecture), Mistral3 (Pixtral), PaliGemma, Gemma 3 (with a sliding
window shorter than the prompt: decode-step weights of sliding layers cover the window only), Llama 4 (its
decoder is a causal LM whose layers sit in ``.model``: before, no map and no note), LightOnOCR. mllama is not a
map family: it reads the image through cross-attention layers, with one ``<|image|>`` placeholder in the text
(tests/test_tools/test_vlm_architectures.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from image2music.tools.vlm import GenerationSettings, make_vlm

FAMILIES = {
    "llava": ("build_tiny_llava", (4, 4)),
    "qwen2vl": ("build_tiny_qwen2vl", (3, 4)),
    "qwen25vl": ("build_tiny_qwen25vl", (3, 4)),
    # 100x80 -> 96x64 in patches of 16, merged 2x2
    "qwen3vl": ("build_tiny_qwen3vl", (2, 3)),
    "glm4v": ("build_tiny_glm4v", (2, 3)),
    "idefics3": ("build_tiny_idefics3", None),
    # 100x80 -> 64x56 (patch 4, merge 2): 7 rows of 8, separated by [IMG_BREAK] tokens
    "mistral3": ("build_tiny_mistral3", (7, 8)),
    # 70 image tokens (4x4 base view + 6 x (8 + newline)): the base view is the map
    "llava_onevision": ("build_tiny_llava_onevision", (4, 4)),
    "llava_next": ("build_tiny_llava_next", (4, 4)),
    # 6 tiles of 2x2 tokens (3 wide, 2 high for a wide image) then the thumbnail: stitched into 4 x 6
    "internvl": ("build_tiny_internvl", (4, 6)),
    # 2 of 3 layers slide over an 8-token window, shorter than the prompt
    "gemma3": ("build_tiny_gemma3", (2, 2)),
    # the processor puts the image tokens before the text
    "paligemma": ("build_tiny_paligemma", (4, 4)),
    # one tile of 64 pixels, patches of 8 shuffled 2x2: the global view's 16 patch tokens
    "llama4": ("build_tiny_llama4", (4, 4)),
    # Pixtral rows as Mistral3, its tower named vision_encoder (before: 0 encodes counted)
    "lightonocr": ("build_tiny_lightonocr", (6, 8)),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tiny_models

    root = tmp_path_factory.mktemp("matrix")
    return {name: getattr(tiny_models, builder)(root / name) for name, (builder, _) in FAMILIES.items()}


def _oracle(path: Path, vlm: Any, prompt: str, image: Image.Image, n_new: int) -> tuple[str, np.ndarray, Any]:
    """Plain transformers: greedy tokens, and per generated token (after the first) its attention to the image
    positions averaged over heads and layers, from ``output_attentions`` with eager attention."""
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path), attn_implementation="eager").eval()
    inputs = vlm._inputs(prompt, image)
    positions = np.nonzero((inputs["input_ids"][0] == vlm.image_token_id).numpy())[0]
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=n_new, do_sample=False, output_attentions=True, return_dict_in_generate=True
        )
    new = out.sequences[0, inputs["input_ids"].shape[1] :]
    tok = getattr(vlm.processor, "tokenizer", vlm.processor)
    rows = []
    prompt_len = int(inputs["input_ids"].shape[1])
    for s, step in enumerate(out.attentions[1:], start=1):  # step 0 is the prompt pass
        per_layer = []
        for layer in step:
            k_len = int(layer.shape[-1])
            offset = prompt_len + s - k_len  # a sliding-window layer sees only the last k_len positions
            if positions[0] - offset >= 0:
                per_layer.append(layer[0, :, -1, positions - offset].float().mean(dim=0))
        rows.append(torch.stack(per_layer).mean(dim=0).numpy() if per_layer else np.zeros(len(positions)))
    return tok.decode(new, skip_special_tokens=True), np.asarray(rows), (inputs, positions)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_against_plain_generate_and_output_attentions(models: dict[str, Path], family: str) -> None:
    path = models[family]
    # fp32 as the reference below (on a CPU with bf16 arithmetic the project's default is bf16)
    vlm = make_vlm("transformers", str(path), dtype="float32")
    image = Image.new("RGB", (100, 80), (30, 90, 150))
    image.paste((240, 200, 40), (10, 10, 40, 30))
    settings = GenerationSettings(max_new_tokens=8, temperature=0.0)
    before = vlm.vision_calls  # type: ignore[attr-defined]
    res = vlm.generate(node="describe", prompt="Describe it.", image=image, call_index=0, settings=settings,
                       capture_attention=True)  # fmt: skip
    for node in ("compose", "reflect", "explain"):
        vlm.generate(node=node, prompt=f"{node} it.", image=image, call_index=0, settings=settings)
    assert vlm.vision_calls - before == 1, family  # type: ignore[attr-defined]

    text, rows, (inputs, positions) = _oracle(path, vlm, "Describe it.", image, 8)
    assert res.text == text, family  # the feature cache and the streamed capture change no token
    expected_grid = FAMILIES[family][1]
    if expected_grid is not None:
        assert res.grid == expected_grid, family
    assert res.grid is not None and res.token_attention is not None
    layout = vlm.layout(inputs, len(positions), image)  # type: ignore[attr-defined]
    assert layout is not None
    _grid, use = layout
    n = min(len(rows), len(res.token_attention))
    assert n >= 1
    np.testing.assert_allclose(res.token_attention[:n], rows[:n][:, use], atol=1e-6, err_msg=family)


def test_batch_with_two_jobs_encodes_each_image_once(models: dict[str, Path], tmp_path: Path) -> None:
    """`i2m batch DIR --jobs 2` with a tiny Qwen3-VL: every run.json says vision_encodes 1."""
    import json

    from click.testing import CliRunner

    from image2music.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, colour in (("dawn", (220, 120, 40)), ("sea", (20, 60, 160)), ("field", (40, 160, 60))):
        Image.new("RGB", (100, 80), colour).save(imgs / f"{name}.png")
    out = tmp_path / "out"
    args = ["batch", str(imgs), "-o", str(out), "--jobs", "2", "--vlm-model", str(models["qwen3vl"]), "--top-k", "0"]
    args += ["--max-parse-retries", "0", "--refine-rounds", "0"]
    CliRunner().invoke(main, args, env={"I2M_MAX_NEW_TOKENS": "6", "I2M_DESCRIBE_MAX_NEW_TOKENS": "6"})
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/run.json"))]
    assert len(records) == 3
    assert [r["vision_encodes"] for r in records] == [1, 1, 1], [r["vlm_calls"] for r in records]


def test_the_feature_cache_holds_at_least_the_parallel_jobs(models: dict[str, Path]) -> None:
    vlm = make_vlm("transformers", str(models["llava"]))
    assert vlm.cache_entries >= 8  # type: ignore[attr-defined]
    again = make_vlm("transformers", str(models["llava"]), feature_cache=12)  # batch --jobs 12 asks for more
    assert again is vlm and vlm.cache_entries >= 12  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen25vl"])
def test_capture_keeps_the_fused_attention_and_an_eager_model_is_read_as_it_is(
    models: dict[str, Path], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture never switches the model to eager: every decoder attention call of every forward pass (the
    prompt's and each decoding step's) runs the model's own sdpa, and the implementation is the same afterwards.
    A model that already runs eager attention is captured from its weights. Both equal the oracle."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    path = models[family]
    vlm = make_vlm("transformers", str(path), dtype="float32")  # the oracle's dtype
    model = vlm.model  # type: ignore[attr-defined]
    decoder = model.get_decoder()
    image = Image.new("RGB", (100, 80), (30, 90, 150))
    settings = GenerationSettings(max_new_tokens=6, temperature=0.0)
    text, rows, (inputs, positions) = _oracle(path, vlm, "Describe it.", image, 6)
    _grid, use = vlm.layout(inputs, len(positions), image)  # type: ignore[attr-defined]

    decoder_layers = {id(layer.self_attn) for layer in decoder.layers}
    fused_calls = []
    real_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting_sdpa(module: Any, *args: Any, **kwargs: Any) -> Any:
        if id(module) in decoder_layers:
            fused_calls.append(id(module))
        return real_sdpa(module, *args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", counting_sdpa)
    assert decoder.config._attn_implementation == "sdpa"
    res = vlm.generate(node="describe", prompt="Describe it.", image=image, call_index=0, settings=settings,
                       capture_attention=True)  # fmt: skip
    assert decoder.config._attn_implementation == "sdpa"
    assert res.token_attention is not None and len(res.token_attention) >= 1
    forwards = len(res.token_attention) + 1  # the prompt pass made the first token, each step one more
    assert len(fused_calls) == len(decoder_layers) * forwards, family
    assert res.text == text
    np.testing.assert_allclose(res.token_attention, rows[:, use], atol=1e-6, err_msg=family)

    model.set_attn_implementation("eager")
    try:
        again = vlm.generate(node="describe", prompt="Describe it.", image=image, call_index=1, settings=settings,
                             capture_attention=True)  # fmt: skip
    finally:
        model.set_attn_implementation("sdpa")
    assert again.text == text
    assert again.token_attention is not None
    np.testing.assert_allclose(again.token_attention, rows[:, use], atol=1e-6, err_msg=family)
