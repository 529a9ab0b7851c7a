"""The one interface every frame+text encoder implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

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

    Named streams (what the feature cache stores; every hook has a default, so an encoder
    that only implements :meth:`encode_frames` produces the single stream ``"features"``):
        :meth:`clip_stream_names` / :meth:`encode_clips`: extra per-clip tensors computed in the
            same forward as the frame features (e.g. a middle layer's tokens).
        :meth:`class_stream_names` / :meth:`encode_class_streams`: per-class-name tensors (e.g.
            prompt-bank text features).
        :meth:`label_stream_names`: the clip streams computed *with the clip's class name* (a
            prompt that names the label); the cache extraction then calls
            ``encode_clips(frames, labels=[class name per clip])`` and the cache hands these streams
            to support clips only, never to queries.
        :meth:`stream_key`: everything besides the weights that changes a stream (layer, prompt
            text hash ...); the cache refuses features extracted under another key.
        :meth:`weight_files`: the files the weights were loaded from, which makes
            :func:`fsar.encoders.cache.weights_fingerprint` fast for a large model.
    An encoder that adds streams documents each stream's shape in its docstring.
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

    # ------------------------------------------------------------------ named streams

    def clip_stream_names(self) -> tuple[str, ...]:
        """Names of the extra per-clip streams :meth:`encode_clips` returns besides ``"features"``."""
        return ()

    def class_stream_names(self) -> tuple[str, ...]:
        """Names of the per-class-name streams :meth:`encode_class_streams` returns."""
        return ()

    def label_stream_names(self) -> tuple[str, ...]:
        """The names of :meth:`clip_stream_names` that depend on the clip's class name (support-only).

        An encoder that declares any takes ``encode_clips(frames, labels=None)``: with ``labels``
        (one class name per clip) it returns these streams too, without them it leaves them out.
        Default ``()``: no stream sees a label, and ``encode_clips`` is called without ``labels``.
        """
        return ()

    def encode_clips(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` (B, T, C, H, W) -> ``{"features": (B, T, D), <extra name>: (B, ...)}``.

        One forward for all streams; every name of :meth:`clip_stream_names` is a key, and each
        extra tensor has the same shape for every clip. Default: ``{"features": encode_frames(frames)}``.
        """
        return {"features": self.encode_frames(frames)}

    def encode_class_streams(self, class_names: list[str]) -> dict[str, torch.Tensor]:
        """``class_names`` (N) -> ``{name: (N, ...)}`` for every name of :meth:`class_stream_names`; default ``{}``."""
        return {}

    def stream_key(self) -> dict:
        """JSON-able settings besides the weights that change the streams (layer index, a hash of
        the prompt texts ...). Part of the feature-cache key; default ``{}``."""
        return {}

    def weight_files(self) -> tuple[Path, ...]:
        """Files the weights were loaded from (``()`` when built in memory, e.g. random init).

        When given, the weights fingerprint samples these files instead of the tensors' bytes
        (see :func:`fsar.encoders.cache.weights_fingerprint`).
        """
        return ()

    def weights_identity(self) -> dict | None:
        """For an encoder that loads its weights lazily: a JSON-able description of the architecture
        and precision (e.g. the model config and dtype) that, with :meth:`weight_files`, identifies
        the weights without loading them; the weights fingerprint then uses it instead of sampling
        tensors. Default None (the fingerprint reads the tensors)."""
        return None

    @property
    def is_frozen(self) -> bool:
        """True when no parameter of the encoder trains (features can come from a cache)."""
        return not any(p.requires_grad for p in self.parameters())
