"""The one interface every frame+text encoder implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Encoder(nn.Module, ABC):
    """Frames to per-frame features, texts to text features.

    Attributes every encoder sets:
        name: registry name (``clip-vit-b32``, ``effnet-lite0+minilm`` ...).
        feature_dim: D of the frame features returned by :meth:`encode_frames`.
        text_dim: D_text of the features returned by :meth:`encode_text`.
        image_size: square input side in pixels.
        mean, std: per-channel normalisation (RGB, for pixels in [0, 1]) the encoder expects.
        shared_space: True when frame and text features live in one embedding space
            (CLIP); False when a method must learn projections (the embedded pair).
    """

    name: str
    feature_dim: int
    text_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    shared_space: bool

    @abstractmethod
    def encode_frames(
        self, frames: torch.Tensor, text_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``frames`` (B, T, C, H, W) float, already normalised -> features (B, T, D).

        ``text_features`` (B, D_text), one per clip, is given for the support branch of
        encoders that fuse text into the visual tokens (MA-FSAR's LMA). Query clips never
        receive it. Encoders without such fusion ignore it.
        """

    @abstractmethod
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``texts`` -> text features (N, D_text)."""

    @property
    def is_frozen(self) -> bool:
        """True when no parameter of the encoder trains (features can come from a cache)."""
        return not any(p.requires_grad for p in self.parameters())
