"""Clip transforms on ``(T, C, H, W)`` tensors, in plain torch (no torchvision here).

Training: short-side resize, a random crop, an optional horizontal flip and an
optional colour jitter; evaluation: short-side resize and the centre crop. Then
normalisation with the encoder's mean/std. The random choices are drawn ONCE per
clip and applied to every frame: a crop that jumped between frames would invent
motion, which is exactly what the temporal metrics look at.

Horizontal flip is off by default: in Something-Something "pushing something from
left to right" and "... right to left" are different classes, so a flip would
change the label. Turn it on for Kinetics/UCF/HMDB-style data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformConfig:
    """How frames become model input.

    image_size: side of the square crop the encoder takes.
    resize_short: the short side is resized to this before cropping (None: image_size * 8/7,
        the 256 -> 224 ratio of the TSN/OTAM/CLIP-FSAR pipelines).
    hflip: random horizontal flip in training (off: breaks SSv2's left/right classes).
    color_jitter: strength s of brightness/contrast/saturation jitter in training, each factor
        drawn from [1 - s, 1 + s]; 0 disables it.
    mean, std: per-channel normalisation of [0, 1] pixels (the encoder's statistics).
    """

    image_size: int = 224
    resize_short: int | None = None
    hflip: bool = False
    color_jitter: float = 0.0
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.resize_short is not None and self.resize_short < self.image_size:
            raise ValueError(f"resize_short ({self.resize_short}) must be >= image_size ({self.image_size})")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"mean/std must be 3 values with std > 0, got {self.mean}/{self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def short_side(self) -> int:
        return self.resize_short if self.resize_short is not None else round(self.image_size * 8 / 7)

    @classmethod
    def for_encoder(cls, encoder, **overrides) -> "TransformConfig":
        """Config matching an encoder's ``image_size``, ``mean`` and ``std`` (duck-typed: no model import)."""
        values = {"image_size": int(encoder.image_size), "mean": tuple(encoder.mean), "std": tuple(encoder.std)}
        values.update(overrides)
        return cls(**values)


class ClipTransform:
    """uint8 ``(T, C, H, W)`` -> normalised float32 ``(T, C, image_size, image_size)``."""

    def __init__(self, config: TransformConfig, *, train: bool) -> None:
        self.config = config
        self.train = train
        self._mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)

    def key(self) -> str:
        """Stable text naming the deterministic (evaluation) transform, for feature-cache keys."""
        c = self.config
        fields = {"image_size": c.image_size, "resize_short": c.short_side, "crop": "centre", "mean": c.mean, "std": c.std}
        return "eval:" + json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames of shape (T, 3, H, W), got {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames, got {frames.dtype}")
        c = self.config
        x = self._resized_crop(frames, generator)
        x = x / 255.0
        if self.train and c.hflip and bool(torch.rand((), generator=generator) < 0.5):
            x = x.flip(-1)
        if self.train and c.color_jitter > 0:
            x = _color_jitter(x, c.color_jitter, generator)
        return ((x - self._mean) / self._std).contiguous()

    def _resized_crop(self, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Short-side resize then (random | centre) crop, computed as crop-then-resize.

        The crop window is chosen in the coordinates of the resized clip, mapped back to
        the source pixels (rounded to whole pixels) and only that window is converted to
        float and resized: the same picture as resizing everything and cropping, up to
        sub-pixel rounding of the window, at a fraction of the cost for wide videos.
        """
        c = self.config
        size = c.image_size
        _, _, height, width = frames.shape
        scale = c.short_side / min(height, width)
        resized_h = max(c.short_side, round(height * scale))
        resized_w = max(c.short_side, round(width * scale))
        if self.train:
            top = int(torch.randint(resized_h - size + 1, (1,), generator=generator))
            left = int(torch.randint(resized_w - size + 1, (1,), generator=generator))
        else:
            top, left = (resized_h - size) // 2, (resized_w - size) // 2
        y0, y1 = _source_span(top, size, height / resized_h, height)
        x0, x1 = _source_span(left, size, width / resized_w, width)
        x = frames[:, :, y0:y1, x0:x1].float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 255.0)
        return x

    def __repr__(self) -> str:
        return f"ClipTransform({self.config}, train={self.train})"


def _source_span(start: int, size: int, ratio: float, limit: int) -> tuple[int, int]:
    """Source pixel range [a, b) covering resized pixels [start, start + size)."""
    a = min(limit - 1, max(0, round(start * ratio)))
    b = min(limit, max(a + 1, round((start + size) * ratio)))
    return a, b


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of float ``(T, C, H, W)`` so that min(H, W) == short_side."""
    height, width = frames.shape[-2:]
    if min(height, width) == short_side:
        return frames
    scale = short_side / min(height, width)
    new_size = (max(short_side, round(height * scale)), max(short_side, round(width * scale)))
    out = F.interpolate(frames, size=new_size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 255.0)


def _color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast, saturation factors in [1 - s, 1 + s], one draw per clip; x in [0, 1]."""
    factors = 1.0 + (torch.rand(3, generator=generator) * 2.0 - 1.0) * strength
    brightness, contrast, saturation = (float(f) for f in factors)
    x = x * brightness
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # (T, 1, H, W)
    x = (x - grey.mean(dim=(1, 2, 3), keepdim=True)) * contrast + grey.mean(dim=(1, 2, 3), keepdim=True)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - grey) * saturation + grey
    return x.clamp(0.0, 1.0)

