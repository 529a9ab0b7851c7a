"""Qwen2-VL (``Qwen2VLForConditionalGeneration``) as the frozen ``qwen2-vl`` backbone.

The third video-MLLM family behind :class:`fsar.encoders.mllm.MLLMAdapter`::

    create_encoder("qwen2-vl", weights="/models/Qwen2-VL-7B-Instruct", frames=8, image_size=224)
    create_encoder("qwen2-vl", weights="random")      # tiny random model, offline

What differs from the LLaVA families, all inside the adapter:

* **Frames to patches.** Qwen2-VL's vision tower takes flattened patches, not images: each token
  group is ``temporal_patch_size`` (2) consecutive frames, cut into ``patch_size`` (14) squares
  that are ordered in ``spatial_merge_size`` (2) x 2 blocks, each patch a vector (C, 2, 14, 14).
  fsar's transforms give the frames at a fixed square ``image_size`` (a multiple of 28; default
  224) with CLIP's mean/std, and :func:`patchify` lays them out as Qwen2-VL's image processor does
  (tested against it). So T frames give T / 2 groups of (image_size / 28)^2 tokens: 8 frames at
  224 px are 4 groups x 64 tokens, and the ``features`` stream has T / 2 rows per clip.
* **Positions.** The decoder uses 3-D rotary positions (M-RoPE: time, height, width for video
  tokens); :meth:`Qwen2VLAdapter.position_ids` takes them from the model's own ``get_rope_index``
  over the left-padded batch. The shared prefix cache of the support prompt is therefore not used
  (``standard_positions = False``): each prompt runs its own full forward.
* **vision_tower** stream: the last vision block's patch states (what the merger projects), mean
  over each group's patches.

The chat format is Qwen2's (``<|im_start|>user ... <|vision_start|><|video_pad|><|vision_end|>``).
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

__all__ = ["HUB_ID", "Qwen2VLAdapter", "patchify", "tiny_qwen2_vl"]

HUB_ID = "Qwen/Qwen2-VL-7B-Instruct"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SPECIAL_TOKENS = ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")


def patchify(frames: torch.Tensor, *, patch: int, temporal: int, merge: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frames (B, T, C, H, W) -> (patches (B * T/temporal * H/patch * W/patch, C * temporal * patch^2),
    grid (B, 3) = [T/temporal, H/patch, W/patch] per clip), in the order of Qwen2-VL's image processor."""
    batch, frames_count, channels, height, width = frames.shape
    if frames_count % temporal or height % (patch * merge) or width % (patch * merge):
        raise MLLMError(
            f"qwen2-vl: clips of {frames_count} frames of {height}x{width} do not cut into {temporal}-frame groups of "
            f"{patch * merge}-px merge blocks"
        )
    grid_t, grid_h, grid_w = frames_count // temporal, height // patch, width // patch
    x = frames.reshape(batch, grid_t, temporal, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # B, t, h-blocks, w-blocks, h-in-block, w-in-block, C, tp, p, p
    patches = x.reshape(batch * grid_t * grid_h * grid_w, channels * temporal * patch * patch)
    grid = torch.tensor([[grid_t, grid_h, grid_w]] * batch, dtype=torch.long)
    return patches, grid


class Qwen2VLAdapter(MLLMAdapter):
    name = "qwen2-vl"
    expected_classes = ("Qwen2VLForConditionalGeneration",)
    model_type = "qwen2_vl"
    hub_id = HUB_ID
    chat_format = "<|im_start|>user\n<|vision_start|>{video}<|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n"
    text_format = "<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    video_placeholder = "<|video_pad|>"
    standard_positions = False

    def __init__(self, frames: int = 8, image_size: int = 224) -> None:
        if not isinstance(frames, int) or frames < 1:
            raise MLLMError(f"qwen2-vl: frames must be an integer >= 1, got {frames!r}")
        if not isinstance(image_size, int) or image_size < 1:
            raise MLLMError(f"qwen2-vl: image_size must be an integer >= 1, got {image_size!r}")
        self.frames = frames
        self.image_size = image_size

    def model_class(self):
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    def _geometry(self, config) -> tuple[int, int, int]:
        vision = config.vision_config
        return int(vision.patch_size), int(vision.temporal_patch_size), int(vision.spatial_merge_size)

    def layout(self, config) -> VideoTokenLayout:
        patch, temporal, merge = self._geometry(config)
        if self.frames % temporal:
            raise MLLMError(f"qwen2-vl: frames ({self.frames}) must be a multiple of the temporal patch {temporal}")
        if self.image_size % (patch * merge):
            raise MLLMError(
                f"qwen2-vl: image_size {self.image_size} must be a multiple of patch x merge = {patch * merge} "
                f"(e.g. {max(1, round(self.image_size / (patch * merge))) * patch * merge})"
            )
        side = self.image_size // (patch * merge)
        return VideoTokenLayout(groups=self.frames // temporal, tokens_per_group=side * side, drop_per_group=0)

    def vision_dim(self, config) -> int:
        return int(config.vision_config.embed_dim)  # the patch states; hidden_size is the merger's output

    def frames_per_group(self, config) -> int:
        return self._geometry(config)[1]

    def video_token_id(self, config) -> int:
        return int(config.video_token_id)

    def image_geometry(self, config):
        return self.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def _patches(self, model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch, temporal, merge = self._geometry(model.config)
        patches, grid = patchify(pixels, patch=patch, temporal=temporal, merge=merge)
        return patches, grid.to(pixels.device)

    def visual_tokens(self, model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pixels.shape[0]
        patches, grid = self._patches(model, pixels)
        visual = model.model.visual
        out = visual(patches.to(visual.dtype), grid_thw=grid)
        tokens = out.pooler_output.reshape(batch, -1, out.pooler_output.shape[-1])  # merged: (B, groups * tokens, D)
        states = out.last_hidden_state  # the last block's patch states, (B * groups * patches, D_vis)
        groups = int(grid[0, 0])
        pooled = states.float().reshape(batch, groups, -1, states.shape[-1]).mean(2)
        return tokens, pooled

    def _grid(self, model: nn.Module, batch: int, device) -> torch.Tensor:
        patch, temporal, _ = self._geometry(model.config)
        side = self.image_size // patch
        return torch.tensor([[self.frames // temporal, side, side]] * batch, dtype=torch.long, device=device)

    def position_ids(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(3, B, L) M-RoPE positions from the model's ``get_rope_index`` (padding skipped)."""
        types = (ids == self.video_token_id(model.config)).int() * 2
        positions, _ = model.model.get_rope_index(ids, types, video_grid_thw=self._grid(model, ids.shape[0], ids.device),
                                                  attention_mask=mask)
        return positions

    def generate_inputs(self, model: nn.Module, pixels: torch.Tensor, ids: torch.Tensor) -> dict:
        patches, grid = self._patches(model, pixels)
        types = (ids == self.video_token_id(model.config)).int() * 2
        return {"pixel_values_videos": patches, "video_grid_thw": grid, "mm_token_type_ids": types}

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.model.language_model


def tiny_qwen2_vl(
    *,
    seed: int = 0,
    vision_width: int = 32,
    vision_layers: int = 2,
    width: int = 64,
    layers: int = 4,
    heads: int = 4,
):
    """(model, tokenizer): a random-init Qwen2-VL of the real classes, sizes for tests (offline)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from fsar.encoders.video_llava import build_tiny_tokenizer, seeded_model

    tokenizer = build_tiny_tokenizer(
        special_tokens=SPECIAL_TOKENS, additional=SPECIAL_TOKENS[2:], bos=None, eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    head_dim = width // heads
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2VLConfig(
        vision_config=dict(depth=vision_layers, embed_dim=vision_width, hidden_size=width, num_heads=2, mlp_ratio=2,
                           patch_size=14, temporal_patch_size=2, spatial_merge_size=2),
        text_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=len(tokenizer),
                         max_position_embeddings=1024, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    return seeded_model(Qwen2VLForConditionalGeneration, config, seed), tokenizer


_RANDOM_SIZES = ("seed", "vision_width", "vision_layers", "width", "layers", "heads")


@ENCODERS.register("qwen2-vl")
def qwen2_vl(*, weights: str | None = None, frames: int = 8, image_size: int = 224, **options: Any) -> VideoMLLMEncoder:
    """Qwen2-VL as a frozen multimodal backbone; ``frames`` (a multiple of 2) and ``image_size`` (a multiple of
    28) fix the video token expansion. Other options as :func:`fsar.encoders.mllm.build_mllm_encoder`."""
    return build_mllm_encoder(
        Qwen2VLAdapter(frames, image_size), weights=weights, hub_id=HUB_ID, random_model=tiny_qwen2_vl,
        random_sizes=_RANDOM_SIZES, **options,
    )


qwen2_vl.declared_options = declared_options(
    _RANDOM_SIZES, frames="frames per clip, a multiple of 2 (default 8)",
    image_size="frame side, a multiple of 28 (default 224)",
)
