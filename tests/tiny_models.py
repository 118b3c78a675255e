"""Tiny randomly initialised models built offline, saved with ``save_pretrained`` for the normal loaders.

A byte-level BPE tokenizer is trained with ``tokenizers`` on a few sentences; configs are tiny. Nothing
touches the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ image_token }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "X:1 T:Tune M:4/4 L:1/8 Q:1/4=96 K:C CDEF GABc | c2 B2 A2 G2 |",
    "A calm lake at sunset with a lighthouse and warm orange light over the water.",
    "Describe the image. Write music in ABC notation for the image you see.",
    "a happy folk tune in G major with a lively rhythm, played on violin and piano",
    "The music aims to evoke the tranquil beauty of a coastal sunset.",
]


def train_tokenizer(special: list[str], vocab_size: int = 400, add_bos_eos: bool = False):  # noqa: ANN201
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if add_bos_eos:
        bos, eos = special[0], special[1]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def text_kwargs(tok: Any, **extra: Any) -> dict[str, Any]:
    """The tiny language model every family here shares (2 layers, hidden 32), with the tokenizer's ids."""
    return {
        "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 2048,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        **extra,
    }  # fmt: skip


def vision_kwargs(**extra: Any) -> dict[str, Any]:
    """The tiny ViT-style vision tower (2 layers, hidden 32) of the CLIP/SigLIP/Pixtral families."""
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, **extra}


def tiny_tokenizer(specials: list[str]) -> Any:
    """A trained tokenizer whose first three specials are BOS, EOS and PAD."""
    tok = train_tokenizer(specials)
    tok.bos_token, tok.eos_token, tok.pad_token = specials[0], specials[1], specials[2]
    return tok


def save(model: Any, proc: Any, tok: Any, path: Path) -> Path:
    """Stop generation at the tokenizer's EOS, then ``save_pretrained`` model and processor to ``path``."""
    if getattr(model, "generation_config", None) is not None and tok.eos_token_id is not None:
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def build_tiny_clip(path: Path, max_positions: int = 77, image_size: int = 32) -> Path:
    """A tiny CLIP (text + vision) folder loadable with ``CLIPModel`` / ``AutoProcessor``."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip import CLIPImageProcessorPil

    tok = train_tokenizer(["<|startoftext|>", "<|endoftext|>", "<pad>"], add_bos_eos=True)
    tok.bos_token, tok.eos_token, tok.pad_token = "<|startoftext|>", "<|endoftext|>", "<pad>"
    tok.model_max_length = max_positions
    import torch

    torch.manual_seed(0)  # the same weights every session: what it retrieves (and so a run's route) is fixed
    cfg = CLIPConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": max_positions,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    ip = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    proc = CLIPProcessor(image_processor=ip, tokenizer=tok)
    return save(model, proc, tok, path)


def build_tiny_llava(path: Path, image_size: int = 32, patch: int = 8) -> Path:
    """A tiny LLaVA (CLIP vision + Llama text) loadable with AutoProcessor + AutoModelForImageTextToText."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil
    from transformers.models.clip.configuration_clip import CLIPVisionConfig

    specials = ["<s>", "</s>", "<pad>", "<image>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]
    tok = train_tokenizer(specials)
    tok.bos_token, tok.eos_token, tok.pad_token = "<s>", "</s>", "<pad>"
    image_token_id = tok.convert_tokens_to_ids("<image>")
    n_patches = (image_size // patch) ** 2
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        image_token_index=image_token_id,
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    ip = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    proc = LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    return save(model, proc, tok, path)


def build_tiny_qwen25vl(path: Path) -> Path:
    """A tiny Qwen2.5-VL (needs torchvision and a video processor object, both offline)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = [
        "<s>",
        "</s>",
        "<pad>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|user|>",
        "<|assistant|>",
        "<|end|>",
    ]
    tok = train_tokenizer(specials)
    tok.bos_token, tok.eos_token, tok.pad_token = "<s>", "</s>", "<pad>"
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "fullatt_block_indexes": [1],
            "window_size": 56,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    ip = Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    template = CHAT_TEMPLATE.replace("{{ image_token }}", "<|vision_start|><|image_pad|><|vision_end|>")
    proc = Qwen2_5_VLProcessor(
        image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=template
    )
    return save(model, proc, tok, path)


def build_tiny_idefics3(path: Path) -> Path:
    """A tiny Idefics3 (SigLIP-style vision + Llama text; images split into tiles plus a global view)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3 import Idefics3ImageProcessor

    specials = [
        "<s>",
        "</s>",
        "<pad>",
        "<image>",
        "<fake_token_around_image>",
        "<global-img>",
        "<end_of_utterance>",
        "<|user|>",
        "<|assistant|>",
        "<|end|>",
    ]
    tok = train_tokenizer(specials)
    tok.bos_token, tok.eos_token, tok.pad_token = "<s>", "</s>", "<pad>"
    tok.add_special_tokens({"additional_special_tokens": specials[3:]})
    image_size, patch, scale = 32, 8, 2
    seq_len = (image_size // patch) ** 2 // (scale * scale)  # 4 tokens per tile
    cfg = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
        },
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
    )
    model = Idefics3ForConditionalGeneration(cfg).eval()
    ip = Idefics3ImageProcessor(
        size={"longest_edge": image_size * 2}, max_image_size={"longest_edge": image_size}, do_image_splitting=True
    )
    proc = Idefics3Processor(
        image_processor=ip,
        tokenizer=tok,
        image_seq_len=seq_len,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
    )
    return save(model, proc, tok, path)


def build_tiny_mistral3(path: Path) -> Path:
    """A tiny Mistral3 (Pixtral vision + Mistral text): image rows separated by [IMG_BREAK] tokens."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessorPil,
        PixtralProcessor,
        PixtralVisionConfig,
    )

    specials = ["<s>", "</s>", "<pad>", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = tiny_tokenizer(specials)
    cfg = Mistral3Config(
        vision_config=PixtralVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
            image_size=64, patch_size=4,
        ),
        text_config=MistralConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )  # fmt: skip
    model = Mistral3ForConditionalGeneration(cfg).eval()
    proc = PixtralProcessor(
        image_processor=PixtralImageProcessorPil(size={"longest_edge": 64}, patch_size=4),
        tokenizer=tok,
        patch_size=4,
        spatial_merge_size=2,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "[IMG]"),
    )
    return save(model, proc, tok, path)


def build_tiny_llava_onevision(path: Path) -> Path:
    """A tiny LLaVA-OneVision (SigLIP + Qwen2): a 4x4 base view, then tiles with a newline token per row."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    specials = ["<s>", "</s>", "<pad>", "<image>", "<video>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = tiny_tokenizer(specials)
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    cfg = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**vision_kwargs(image_size=16, patch_size=4)),
        text_config=Qwen2Config(**text_kwargs(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )  # fmt: skip
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
        image_token="<image>",
        video_token="<video>",
    )
    return save(model, proc, tok, path)


def build_tiny_gemma3(path: Path, window: int = 8) -> Path:
    """A tiny Gemma 3 (SigLIP + Gemma 3 text) whose first two layers use a sliding window of ``window`` tokens."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )

    specials = ["<bos>", "<eos>", "<pad>", "<start_of_image>", "<end_of_image>", "<image_soft_token>", "<|user|>",
                "<|assistant|>", "<|end|>"]  # fmt: skip
    base = train_tokenizer(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base._tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )  # fmt: skip
    cfg = Gemma3Config(
        vision_config=SiglipVisionConfig(**vision_kwargs(image_size=16, patch_size=4)),
        text_config=Gemma3TextConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, sliding_window=window,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ),
        mm_tokens_per_image=4,
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )  # fmt: skip
    model = Gemma3ForConditionalGeneration(cfg).eval()
    proc = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 16, "width": 16}),
        tokenizer=tok,
        image_seq_length=4,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<start_of_image>"),
    )
    return save(model, proc, tok, path)


def build_tiny_qwen3vl(path: Path) -> Path:
    """A tiny Qwen3-VL (deepstack visual features merged into the first text layers)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor

    specials = ["<s>", "</s>", "<pad>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                "<|user|>", "<|assistant|>", "<|end|>"]  # fmt: skip
    tok = tiny_tokenizer(specials)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Qwen3VLConfig(
        text_config=text_kwargs(
            tok, head_dim=16, max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                             "mrope_interleaved": True},
        ),
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    ip = Qwen2VLImageProcessor(
        min_pixels=64 * 64, max_pixels=128 * 128, patch_size=16, merge_size=2, temporal_patch_size=2
    )
    template = CHAT_TEMPLATE.replace("{{ image_token }}", "<|vision_start|><|image_pad|><|vision_end|>")
    proc = Qwen3VLProcessor(
        image_processor=ip, tokenizer=tok, video_processor=Qwen3VLVideoProcessor(), chat_template=template
    )
    return save(model, proc, tok, path)


def build_tiny_qwen2vl(path: Path) -> Path:
    """A tiny Qwen2-VL."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = ["<s>", "</s>", "<pad>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                "<|user|>", "<|assistant|>", "<|end|>"]  # fmt: skip
    tok = tiny_tokenizer(specials)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Qwen2VLConfig(
        text_config=text_kwargs(
            tok, max_position_embeddings=1024, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}
        ),
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    ip = Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    template = CHAT_TEMPLATE.replace("{{ image_token }}", "<|vision_start|><|image_pad|><|vision_end|>")
    proc = Qwen2VLProcessor(
        image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=template
    )
    return save(model, proc, tok, path)


def build_tiny_paligemma(path: Path) -> Path:
    """A tiny PaliGemma (SigLIP + Gemma): the image tokens come first, a square grid."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    specials = ["<bos>", "<eos>", "<pad>", "<image>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = tiny_tokenizer(specials)
    cfg = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=16,
            patch_size=4, projection_dim=32,
        ),
        text_config=GemmaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=32,
    )  # fmt: skip
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    ip = SiglipImageProcessor(size={"height": 16, "width": 16})
    ip.image_seq_length = 16
    proc = PaliGemmaProcessor(
        image_processor=ip, tokenizer=tok, chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "")
    )
    return save(model, proc, tok, path)


def build_tiny_llava_next(path: Path) -> Path:
    """A tiny LLaVA-NeXT (CLIP + Llama): a base view, then high-resolution tiles with a newline per row."""
    from transformers import (
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )
    from transformers.models.clip.configuration_clip import CLIPVisionConfig

    specials = ["<s>", "</s>", "<pad>", "<image>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = tiny_tokenizer(specials)
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision_kwargs(image_size=16, patch_size=4)),
        text_config=LlamaConfig(**text_kwargs(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )  # fmt: skip
    model = LlavaNextForConditionalGeneration(cfg).eval()
    ip = LlavaNextImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints
    )
    proc = LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=4,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    return save(model, proc, tok, path)


def build_tiny_internvl(path: Path) -> Path:
    """A tiny InternVL: image tiles of ``image_seq_length`` tokens each, then a thumbnail."""
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        PreTrainedTokenizerFast,
        Qwen2Config,
    )
    from transformers.models.got_ocr2 import GotOcr2ImageProcessor

    specials = ["<s>", "</s>", "<pad>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<|user|>", "<|assistant|>",
                "<|end|>"]  # fmt: skip
    base = train_tokenizer(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )  # fmt: skip
    cfg = InternVLConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": [16, 16], "patch_size": [4, 4]},
        text_config=Qwen2Config(**text_kwargs(tok)),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        downsample_ratio=0.5,
    )  # fmt: skip
    model = InternVLForConditionalGeneration(cfg).eval()
    ip = GotOcr2ImageProcessor(size={"height": 16, "width": 16}, crop_to_patches=True, max_patches=6)
    proc = InternVLProcessor(
        image_processor=ip,
        tokenizer=tok,
        video_processor=InternVLVideoProcessor(),
        image_seq_length=4,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<IMG_CONTEXT>"),
    )
    return save(model, proc, tok, path)


def build_tiny_glm4v(path: Path) -> Path:
    """A tiny GLM-4V (``image_grid_thw`` like Qwen-VL)."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vProcessor, Glm4vVideoProcessor
    from transformers.models.glm4v import Glm4vImageProcessor

    specials = ["<s>", "</s>", "<pad>", "<|image|>", "<|video|>", "<|begin_of_image|>", "<|end_of_image|>",
                "<|begin_of_video|>", "<|end_of_video|>", "<|user|>", "<|assistant|>", "<|end|>"]  # fmt: skip
    tok = tiny_tokenizer(specials)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Glm4vConfig(
        text_config=text_kwargs(
            tok, head_dim=16, max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                             "partial_rotary_factor": 1.0},
        ),
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "image_size": 56},
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
    )  # fmt: skip
    model = Glm4vForConditionalGeneration(cfg).eval()
    ip = Glm4vImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                             size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})  # fmt: skip
    template = CHAT_TEMPLATE.replace("{{ image_token }}", "<|begin_of_image|><|image|><|end_of_image|>")
    proc = Glm4vProcessor(
        image_processor=ip, tokenizer=tok, video_processor=Glm4vVideoProcessor(), chat_template=template
    )
    return save(model, proc, tok, path)


def build_tiny_llama4(path: Path, tile: int = 64) -> Path:
    """A tiny Llama 4 (dense: no expert layers), one tile of ``tile`` pixels: its global view's patches, after
    the pixel shuffle, are the map (``tile / patch / 2`` on a side)."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration, Llama4ImageProcessorFast, Llama4Processor
    from transformers.models.llama4.configuration_llama4 import Llama4TextConfig, Llama4VisionConfig

    specials = ["<s>", "</s>", "<pad>", "<|image_start|>", "<|image|>", "<|patch|>", "<|image_end|>",
                "<|tile_x_separator|>", "<|tile_y_separator|>", "<|user|>", "<|assistant|>", "<|end|>"]  # fmt: skip
    tok = tiny_tokenizer(specials)
    patch = 8
    text = Llama4TextConfig(
        **text_kwargs(tok, head_dim=16, intermediate_size_mlp=64, num_local_experts=1, moe_layers=[],
                      no_rope_layers=[1, 1], attention_chunk_size=1024),
    )  # fmt: skip
    vision = Llama4VisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=tile,
        patch_size=patch, vision_output_dim=32, projector_input_dim=32, projector_output_dim=32,
        pixel_shuffle_ratio=0.5,
    )  # fmt: skip
    cfg = Llama4Config(text_config=text, vision_config=vision, image_token_index=tok.convert_tokens_to_ids("<|patch|>"))
    model = Llama4ForConditionalGeneration(cfg).eval()
    ip = Llama4ImageProcessorFast(size={"height": tile, "width": tile}, max_patches=1, resize_to_max_canvas=False)
    proc = Llama4Processor(
        image_processor=ip, tokenizer=tok, patch_size=patch, pixel_shuffle_ratio=0.5,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<|image|>"),
    )  # fmt: skip
    return save(model, proc, tok, path)


def build_tiny_mllama(path: Path, tile: int = 32) -> Path:
    """A tiny Llama 3.2 Vision (mllama): the text holds one ``<|image|>`` placeholder and cross-attention layers
    read the image's tiles."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor, MllamaProcessor
    from transformers.models.mllama.configuration_mllama import MllamaTextConfig, MllamaVisionConfig

    specials = ["<s>", "</s>", "<pad>", "<|image|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = tiny_tokenizer(specials)
    text = MllamaTextConfig(
        **{k: v for k, v in text_kwargs(tok, num_hidden_layers=3).items() if k != "max_position_embeddings"},
        cross_attention_layers=[1],
    )
    vision = MllamaVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2, intermediate_size=64,
        vision_output_dim=64, image_size=tile, patch_size=8, max_num_tiles=1, intermediate_layers_indices=[0],
        supported_aspect_ratios=[[1, 1]],
    )  # fmt: skip
    cfg = MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    model = MllamaForConditionalGeneration(cfg).eval()
    ip = MllamaImageProcessor(size={"height": tile, "width": tile}, max_image_tiles=1)
    proc = MllamaProcessor(
        image_processor=ip, tokenizer=tok, chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<|image|>")
    )
    return save(model, proc, tok, path)


def build_tiny_lightonocr(path: Path) -> Path:
    """A tiny LightOnOCR (Pixtral vision as ``vision_encoder`` + Qwen3 text): rows of image tokens separated by
    break tokens, as Mistral3."""
    from transformers import (
        LightOnOcrConfig,
        LightOnOcrForConditionalGeneration,
        LightOnOcrProcessor,
        PixtralImageProcessorPil,
        PixtralVisionConfig,
        PreTrainedTokenizerFast,
        Qwen3Config,
    )

    specials = ["<s>", "</s>", "<pad>", "<|image_pad|>", "<|vision_pad|>", "<|vision_end|>", "<|user|>",
                "<|assistant|>", "<|end|>"]  # fmt: skip
    tok = tiny_tokenizer(specials)
    named = {"image_token": "<|image_pad|>", "image_break_token": "<|vision_pad|>", "image_end_token": "<|vision_end|>"}
    tok = PreTrainedTokenizerFast(  # the processor reads these named tokens from the tokenizer (saved with it)
        tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens=named,
    )  # fmt: skip
    cfg = LightOnOcrConfig(
        vision_config=PixtralVisionConfig(**vision_kwargs(head_dim=16, image_size=64, patch_size=4)),
        text_config=Qwen3Config(**text_kwargs(tok, head_dim=16)),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        spatial_merge_size=2,
    )
    model = LightOnOcrForConditionalGeneration(cfg).eval()
    proc = LightOnOcrProcessor(
        image_processor=PixtralImageProcessorPil(size={"longest_edge": 64}, patch_size=4), tokenizer=tok,
        patch_size=4, spatial_merge_size=2, chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<|image_pad|>"),
    )  # fmt: skip
    return save(model, proc, tok, path)
