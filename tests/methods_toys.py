"""Shared pieces of the methods tests: tiny real backbones, a toy encoder, toy episodes.

The tiny CLIP is the real ``clip-vit-b32`` architecture with random weights and small sizes;
the embedded pair is built with ``weights="random"`` (same architecture, no pretrained load).
"""

from __future__ import annotations

import functools
import zlib

import torch
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.encoders.base import Encoder

#: A tiny random CLIP (32x32 frames, 4x4 patches of 8 px, 2 blocks, joint width 32).
TINY_CLIP = dict(
    vision_layers=2, width=64, heads=2, patch_size=8, image_size=32,
    text_layers=1, text_width=32, text_heads=2, projection_dim=32,
)
TINY_TPCM = dict(tpcm_heads=4)
TINY_MODULATION = dict(modulation_heads=4)
CLASSES = ["pushing something left", "lifting a cup", "waving hand", "opening door", "drinking tea"]


def tiny_clip(finetune: str = "frozen"):
    """A fresh tiny random CLIP (use :func:`shared_frozen_clip` when a frozen one will do)."""
    from fsar.encoders import create_encoder

    return create_encoder("clip-vit-b32", weights="random", finetune=finetune, **TINY_CLIP)


@functools.lru_cache(maxsize=None)
def shared_frozen_clip():
    """One frozen tiny CLIP for the whole session (nothing in it can change)."""
    return tiny_clip("frozen")


@functools.lru_cache(maxsize=None)
def shared_embedded_pair():
    """One ``effnet-lite0+minilm`` (random weights: same architecture, no pretrained load)."""
    from fsar.encoders import create_encoder

    return create_encoder("effnet-lite0+minilm", weights="random")


def frames_episode(*, way=3, shot=1, queries=2, frames=4, size=32, seed=0, names=None) -> EpisodeInputs:
    g = torch.Generator().manual_seed(seed)
    names = list(names or CLASSES[:way])
    return EpisodeInputs(
        support=torch.randn(way * shot, frames, 3, size, size, generator=g),
        support_labels=torch.arange(way).repeat_interleave(shot),
        query=torch.randn(way * queries, frames, 3, size, size, generator=g),
        query_labels=torch.arange(way).repeat_interleave(queries),
        class_names=names,
    )


def features_episode(*, dim, way=3, shot=1, queries=2, frames=4, seed=0, names=None) -> EpisodeInputs:
    g = torch.Generator().manual_seed(seed)
    names = list(names or CLASSES[:way])
    return EpisodeInputs(
        support=torch.randn(way * shot, frames, dim, generator=g),
        support_labels=torch.arange(way).repeat_interleave(shot),
        query=torch.randn(way * queries, frames, dim, generator=g),
        query_labels=torch.arange(way).repeat_interleave(queries),
        class_names=names,
        features=True,
    )


def hashed_vector(text: str, dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(dim, generator=g)


class ToyEncoder(Encoder):
    """A small encoder with a frozen frame projection and (optionally) a trainable adapter
    that fuses support text, like FgMA's LMA. Records whether each call got text."""

    name = "toy"
    image_size = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, *, feature_dim=16, text_dim=16, shared_space=True, adapters=False) -> None:
        super().__init__()
        self.feature_dim, self.text_dim, self.shared_space = feature_dim, text_dim, shared_space
        self.frame_proj = nn.Linear(3, feature_dim)
        self.frame_proj.requires_grad_(False)
        self.adapter = nn.Linear(text_dim, feature_dim) if adapters else None
        self.calls: list[bool] = []  # True when the call received text_features

    def encode_frames(self, frames, text_features=None):
        self.calls.append(text_features is not None)
        out = self.frame_proj(frames.mean(dim=(-1, -2)))  # (B, T, D)
        if self.adapter is not None and text_features is not None:
            out = out + self.adapter(text_features).unsqueeze(1)
        return out

    def encode_text(self, texts):
        return torch.stack([hashed_vector(t, self.text_dim) for t in texts])


class OrderTask:
    """Toy features=True task: a class is a temporal *order* of shared frame patterns plus a
    weak appearance offset, all inside a small ``signal_dims`` subspace, buried in noise
    over all ``dim`` dimensions (per-dimension std ``noise_norm / sqrt(dim)``, so the
difficulty does not depend on the width). Mean pooling barely separates classes, temporal matching
    does once the signal subspace is found, which a learned projection (or TPCM's FFN) can
    do. Deterministic from (seed, index)."""

    def __init__(
        self, *, dim: int, frames: int = 4, classes=CLASSES, noise_norm: float = 6.0, signal_dims: int = 8, seed: int = 0
    ) -> None:
        g = torch.Generator().manual_seed(1234)
        self.classes = list(classes)
        self.frames, self.dim, self.seed = frames, dim, seed
        self.noise = noise_norm / dim**0.5
        patterns = torch.zeros(frames, dim)
        patterns[:, :signal_dims] = 2.0 * torch.randn(frames, signal_dims, generator=g)
        self.means = {}
        for name in self.classes:
            order = torch.randperm(frames, generator=g)
            offset = torch.zeros(dim)
            offset[:signal_dims] = 0.5 * torch.randn(signal_dims, generator=g)
            self.means[name] = patterns[order] + offset

    def episode(self, index: int, *, way=3, shot=1, queries=2) -> EpisodeInputs:
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        chosen = torch.randperm(len(self.classes), generator=g)[:way].tolist()
        names = [self.classes[i] for i in chosen]

        def clips(k):
            return torch.stack(
                [self.means[n] + self.noise * torch.randn(self.frames, self.dim, generator=g)
                 for n in names for _ in range(k)]
            )

        return EpisodeInputs(
            support=clips(shot),
            support_labels=torch.arange(way).repeat_interleave(shot),
            query=clips(queries),
            query_labels=torch.arange(way).repeat_interleave(queries),
            class_names=names,
            features=True,
        )
