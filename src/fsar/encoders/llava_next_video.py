"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``) as the frozen ``llava-next-video`` backbone.

The second video-MLLM family behind :class:`fsar.encoders.mllm.MLLMAdapter`; everything but the
adapter (token expansion, left padding, the streams, captions) is the generic encoder's::

    create_encoder("llava-next-video", weights="/models/LLaVA-NeXT-Video-7B-hf", frames=32)
    create_encoder("llava-next-video", weights="random")      # tiny random model, offline

Layout, read from the config: the vision tower's ``vision_feature_layer`` (-2) without its class
token (``vision_feature_select_strategy="default"``; ``"full"`` is refused), average-pooled with
``spatial_pool_stride`` (2): ``(image_size / patch_size / stride)^2`` tokens per frame (144 for
LLaVA-NeXT-Video-7B at 336 px), none dropped when pooling a frame. The model takes any number of
frames, so the frame count is an option (``frames=``, default 8); it fixes the expansion.
"""

from __future__ import annotations

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

__all__ = ["HUB_ID", "LlavaNextVideoAdapter", "tiny_llava_next_video"]

HUB_ID = "llava-hf/LLaVA-NeXT-Video-7B-hf"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LlavaNextVideoAdapter(MLLMAdapter):
    name = "llava-next-video"
    expected_classes = ("LlavaNextVideoForConditionalGeneration",)
    model_type = "llava_next_video"
    hub_id = HUB_ID
    chat_format = "USER: {video}\n{text} ASSISTANT:"
    text_format = "USER: {text} ASSISTANT:"
    video_placeholder = "<video>"

    def __init__(self, frames: int = 8) -> None:
        if frames < 1:
            raise MLLMError(f"llava-next-video: frames must be >= 1, got {frames}")
        self.frames = int(frames)

    def model_class(self):
        from transformers import LlavaNextVideoForConditionalGeneration

        return LlavaNextVideoForConditionalGeneration

    def layout(self, config) -> VideoTokenLayout:
        vision = config.vision_config
        if config.vision_feature_select_strategy != "default":
            raise MLLMError(
                "llava-next-video: vision_feature_select_strategy 'full' keeps the class token, which the "
                "spatial pooling cannot lay out as a square grid; only 'default' is supported"
            )
        if config.spatial_pool_mode != "average" and config.spatial_pool_mode != "max":
            raise MLLMError(f"llava-next-video: spatial_pool_mode {config.spatial_pool_mode!r} is not supported")
        side = vision.image_size // vision.patch_size
        pooled = side // config.spatial_pool_stride
        if pooled < 1:
            raise MLLMError(f"llava-next-video: a {side}x{side} patch grid cannot pool with stride "
                            f"{config.spatial_pool_stride}")
        return VideoTokenLayout(groups=self.frames, tokens_per_group=pooled * pooled, drop_per_group=0)

    def video_token_id(self, config) -> int:
        return int(config.video_token_index)

    def image_geometry(self, config):
        return int(config.vision_config.image_size), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def visual_tokens(self, model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = pixels.shape[:2]
        inner = model.model
        outputs = inner.vision_tower(pixels.flatten(0, 1), output_hidden_states=True, return_dict=True)
        layer = model.config.vision_feature_layer
        if isinstance(layer, int):
            selected = outputs.hidden_states[layer]
        else:
            selected = torch.cat([outputs.hidden_states[i] for i in layer], dim=-1)
        selected = selected[:, 1:]  # "default": no class token
        tokens = inner.multi_modal_projector(inner.vision_resampler(selected))  # (B*T, N, D)
        pooled = selected.float().mean(1).reshape(batch, frames, -1)
        return tokens.reshape(batch, frames * tokens.shape[1], tokens.shape[-1]), pooled

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.model.language_model


def tiny_llava_next_video(
    *,
    seed: int = 0,
    image_size: int = 56,
    patch_size: int = 14,
    vision_width: int = 32,
    vision_layers: int = 2,
    width: int = 64,
    layers: int = 4,
    heads: int = 4,
):
    """(model, tokenizer): a random-init LLaVA-NeXT-Video of the real classes, sizes for tests (offline)."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    from fsar.encoders.video_llava import build_tiny_tokenizer, seeded_model, tiny_clip_vision_config, tiny_llama_config

    tokenizer = build_tiny_tokenizer()
    vision = tiny_clip_vision_config(vision_width, vision_layers, image_size, patch_size)
    text = tiny_llama_config(tokenizer, width, layers, heads)
    side = (image_size // patch_size) // 2
    config = LlavaNextVideoConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[image_size, image_size]], image_seq_length=(image_size // patch_size) ** 2,
        video_seq_length=side * side,
    )
    return seeded_model(LlavaNextVideoForConditionalGeneration, config, seed), tokenizer


_RANDOM_SIZES = ("seed", "image_size", "patch_size", "vision_width", "vision_layers", "width", "layers", "heads")


@ENCODERS.register("llava-next-video")
def llava_next_video(*, weights: str | None = None, frames: int = 8, **options: Any) -> VideoMLLMEncoder:
    """LLaVA-NeXT-Video as a frozen multimodal backbone; ``frames`` fixes the video token expansion.

    Other options as :func:`fsar.encoders.mllm.build_mllm_encoder`."""
    return build_mllm_encoder(
        LlavaNextVideoAdapter(frames), weights=weights, hub_id=HUB_ID, random_model=tiny_llava_next_video,
        random_sizes=_RANDOM_SIZES, **options,
    )


llava_next_video.declared_options = declared_options(
    _RANDOM_SIZES, frames="frames per clip, which fixes the video token expansion (default 8)"
)
