"""Video-LLaVA (``VideoLlavaForConditionalGeneration``) as the frozen ``video-llava`` backbone.

::

    create_encoder("video-llava", weights="/models/Video-LLaVA-7B-hf")    # local folder
    create_encoder("video-llava", weights="LanguageBind/Video-LLaVA-7B-hf")  # hub id (needs network once)
    create_encoder("video-llava")                                         # the same hub id
    create_encoder("video-llava", weights="random")                       # tiny random model, offline
    create_encoder("video-llava", weights=folder, layer=24, prompts="ssv2", dtype="bfloat16")

The model is frozen (``requires_grad_(False)``), loaded in bf16 (fp16 without bf16) when CUDA is
available and float32 otherwise (``dtype=`` overrides), with the tokenizer from the same folder.
Frames come from fsar's own transforms at the vision tower's size with CLIP's mean/std (the
transformers video processor needs torchvision). The streams are those of
:mod:`fsar.encoders.mllm`.

Video-LLaVA's layout, read from the config and checked: each frame gives
``(image_size / patch_size)^2 + 1`` tokens of the video tower's ``vision_feature_layer`` (-2, the
penultimate), class token first, projected by the 2-layer MLP; ``video_seq_length`` (2056 = 8 x 257
for Video-LLaVA-7B) fixes the frame count. A config whose ``video_seq_length`` is not a whole number
of frames is refused.

:func:`save_tiny_video_llava` writes a tiny random model of the real classes, with a byte-level BPE
tokenizer built offline by the ``tokenizers`` library (``<video>``, ``<image>`` special tokens),
to a folder that loads through ``weights=FOLDER`` exactly as a downloaded model does.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsar.encoders import ENCODERS
from fsar.encoders.mllm import (
    MLLMAdapter,
    MLLMError,
    VideoMLLMEncoder,
    VideoTokenLayout,
    build_mllm_encoder,
    declared_options,
)

__all__ = [
    "HUB_ID",
    "VideoLlavaAdapter",
    "build_video_llava_encoder",
    "save_tiny_video_llava",
    "tiny_video_llava",
    "video_llava_7b_config",
]

log = logging.getLogger(__name__)

HUB_ID = "LanguageBind/Video-LLaVA-7B-hf"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EXPECTED = ("VideoLlavaForConditionalGeneration",)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>")


class VideoLlavaAdapter(MLLMAdapter):
    name = "video-llava"
    expected_classes = EXPECTED
    chat_format = "USER: {video}\n{text} ASSISTANT:"
    text_format = "USER: {text} ASSISTANT:"
    video_placeholder = "<video>"

    model_type = "video_llava"
    hub_id = HUB_ID

    def model_class(self):
        from transformers import VideoLlavaForConditionalGeneration

        return VideoLlavaForConditionalGeneration

    def layout(self, config) -> VideoTokenLayout:
        vision = config.vision_config
        if vision.image_size % vision.patch_size:
            raise MLLMError(
                f"video-llava: vision image_size {vision.image_size} is not a multiple of patch_size {vision.patch_size}"
            )
        per_frame = (vision.image_size // vision.patch_size) ** 2 + 1  # the class token stays in video features
        total = int(config.video_seq_length)
        if total % per_frame:
            raise MLLMError(
                f"video-llava: config video_seq_length {total} is not a whole number of frames of {per_frame} "
                f"tokens ((image_size {vision.image_size} / patch {vision.patch_size})^2 + 1); the <video> "
                f"expansion would misalign the video tokens"
            )
        return VideoTokenLayout(groups=total // per_frame, tokens_per_group=per_frame, drop_per_group=1)

    def check_model(self, model: nn.Module, layout: VideoTokenLayout) -> None:
        tower = model.model.video_tower
        embeddings = getattr(tower, "vision_model", tower).embeddings
        if int(embeddings.num_positions) != layout.tokens_per_group:
            raise MLLMError(
                f"video-llava: the video tower has {embeddings.num_positions} positions per frame, the config "
                f"implies {layout.tokens_per_group}"
            )

    def video_token_id(self, config) -> int:
        return int(config.video_token_index)

    def image_geometry(self, config):
        return int(config.vision_config.image_size), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def visual_tokens(self, model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = pixels.shape[:2]
        outputs = model.model.video_tower(pixels.flatten(0, 1), output_hidden_states=True, return_dict=True)
        layer = model.config.vision_feature_layer
        if isinstance(layer, int):
            selected = outputs.hidden_states[layer]
        else:
            selected = torch.cat([outputs.hidden_states[i] for i in layer], dim=-1)
        tokens = model.model.multi_modal_projector(selected)  # (B*T, N, D)
        pooled = selected[:, 1:].float().mean(1).reshape(batch, frames, -1)  # patch tokens, class token out
        return tokens.reshape(batch, frames * tokens.shape[1], tokens.shape[-1]), pooled

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.model.language_model


# ---------------------------------------------------------------------------------------------
# configurations: tiny (tests) and the real 7B (parameter counts on the meta device)


def video_llava_7b_config():
    """The configuration of LanguageBind/Video-LLaVA-7B-hf (CLIP-L/14 video and image towers, Vicuna-7B)."""
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
    )
    return VideoLlavaConfig(
        vision_config=vision, text_config=text, image_token_index=32000, video_token_index=32001,
        image_seq_length=256, video_seq_length=8 * 257,
    )


_TINY_CORPUS = (
    "USER: ASSISTANT: What activity is the person doing in this video? Answer with a short phrase. "
    "Describe how the hand moves the object in this video (direction, contact, outcome) in one short phrase. "
    "This video shows the action. Briefly describe the key motion that defines it. "
    "Describe the action in one sentence focusing on body motion and objects. Which of these actions?"
)


def build_tiny_tokenizer(
    vocab_size: int = 320,
    *,
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
    additional: tuple[str, ...] = ("<image>", "<video>"),
    bos: str | None = "<s>",
    eos: str = "</s>",
    pad: str = "<pad>",
    unk: str = "<unk>",
):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained offline on the prompt wording, with
    ``<video>``/``<image>`` special tokens and a ``<s>`` prefix, like Video-LLaVA's LLaMA tokenizer
    (other families: their own special tokens, ``bos=None`` for no prefix)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    if bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=unk, bos_token=bos, eos_token=eos, pad_token=pad,
        additional_special_tokens=list(additional),
    )


def tiny_clip_vision_config(width: int, layers: int, image_size: int, patch_size: int, **extra: Any):
    """The CLIP vision tower of the tiny test MLLMs (2 heads, MLP twice the width)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, projection_dim=width, **extra,
    )


def tiny_llama_config(tokenizer, width: int, layers: int, heads: int):
    """The Llama decoder of the tiny test MLLMs, its special tokens from ``tokenizer``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, vocab_size=len(tokenizer), max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def seeded_model(model_class, config, seed: int) -> nn.Module:
    """``model_class(config)`` initialised under ``seed`` without touching the global RNG, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def tiny_video_llava(
    *,
    seed: int = 0,
    frames: int = 8,
    image_size: int = 28,
    patch_size: int = 14,
    vision_width: int = 32,
    vision_layers: int = 2,
    width: int = 64,
    layers: int = 4,
    heads: int = 4,
):
    """(model, tokenizer): a random-init Video-LLaVA of the real classes, sizes for tests (offline)."""
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    per_frame = (image_size // patch_size) ** 2 + 1
    vision = tiny_clip_vision_config(vision_width, vision_layers, image_size, patch_size, hidden_act="quick_gelu")
    text = tiny_llama_config(tokenizer, width, layers, heads)
    config = VideoLlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_seq_length=per_frame - 1, video_seq_length=frames * per_frame,
    )
    return seeded_model(VideoLlavaForConditionalGeneration, config, seed), tokenizer


def save_tiny_video_llava(folder: str | os.PathLike, **sizes: Any) -> Path:
    """Write a tiny random Video-LLaVA (model + tokenizer, ``save_pretrained``) to ``folder``; atomic."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"save_tiny_video_llava: {folder} exists and is not empty")
    model, tokenizer = tiny_video_llava(**sizes)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------------
# the registered backbone

_RANDOM_SIZES = ("seed", "frames", "image_size", "patch_size", "vision_width", "vision_layers", "width", "layers", "heads")


def build_video_llava_encoder(*, weights: str | os.PathLike | None = None, **options: Any) -> VideoMLLMEncoder:
    """Build the ``video-llava`` backbone; see the module docstring and :func:`fsar.encoders.mllm.build_mllm_encoder`.

    ``weights``: local folder, hub id, ``"random"`` (a tiny random model; size options as in
    :func:`tiny_video_llava`), or None (:data:`HUB_ID`).
    """
    return build_mllm_encoder(
        VideoLlavaAdapter(), weights=weights, hub_id=HUB_ID, random_model=tiny_video_llava,
        random_sizes=_RANDOM_SIZES, **options,
    )


@ENCODERS.register("video-llava")
def video_llava(**options: Any) -> VideoMLLMEncoder:
    """Video-LLaVA-7B (LanguageBind) as a frozen multimodal backbone; see :func:`build_video_llava_encoder`."""
    return build_video_llava_encoder(**options)


video_llava.declared_options = declared_options(_RANDOM_SIZES)
