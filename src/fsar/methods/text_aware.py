"""The base of the methods that read class text (MA-FSAR, CLIP-FSAR, LGA, and new ones).

:class:`TextAwareMethod` holds what they all do the same way: the constructor preamble
(fine-tuning mode, config, encoder, the common video-text space, the training classes)
and the CLIP-style logit scales of their video-text cosines. A subclass builds its own
modules after ``super().__init__`` and writes ``forward``.

Logit scales: CLIP's trained logit scale is 100 (its cap); its initial value was 1/0.07.
:func:`initial_logit_scale` picks the start for an encoder (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from fsar.encoders.base import Encoder
from fsar.methods.common import EncoderMethod, Scale, configure_method, resolve_metric
from fsar.methods.text_side import TextSpace, text_bank_for

__all__ = [
    "BASE_CENTRING_CLIPS", "CLIP_INITIAL_LOGIT_SCALE", "CLIP_LOGIT_SCALE", "CentringOptions", "STARTS", "TextAwareMethod",
    "initial_logit_scale", "resolve_start",
]

#: CLIP's trained logit scale is 100 (its cap); its initial value was 1/0.07.
CLIP_LOGIT_SCALE = 100.0
CLIP_INITIAL_LOGIT_SCALE = 1.0 / 0.07


#: How a text-aware method's learned maps start (a config's ``start`` field): "training-free" =
#: the untrained method predicts exactly as its metric on the raw features; "standard" = the
#: paper's modules with default initialisation; "auto" = "training-free" on encoders without a
#: shared space (the embedded pairs), "standard" on CLIP.
STARTS = ("auto", "standard", "training-free")

#: Training clips (counted as drawn, repeats included) whose frames estimate the base-class
#: frame mean of base-feature centring: on ssv2-mini's 35 training clips ~15 draws of each.
BASE_CENTRING_CLIPS = 512


@dataclass(kw_only=True)
class CentringOptions:
    """Base-feature centring's options, as every text-aware method config holds them (a base of
    the config dataclasses; keyword-only, so a config's own required fields may come first)."""

    #: Base-feature centring (fsar's own, after SimpleShot's CL2N idea; training-free start only):
    #: frames minus the mean frame of the training clips, estimated before step 1 from
    #: ``base_centring_clips`` training clips and then fixed (zero until then).
    base_centring: bool = True
    base_centring_clips: int = BASE_CENTRING_CLIPS


def resolve_start(start: str, shared_space: bool, *, method: str) -> str:
    """``start`` ("auto" resolved for the encoder) or a ValueError naming the method."""
    if start not in STARTS:
        raise ValueError(f"{method}: start must be 'auto', 'standard' or 'training-free', got {start!r}")
    if start == "auto":
        return "standard" if shared_space else "training-free"
    return start


def initial_logit_scale(encoder: Encoder) -> float:
    """Start of the learnable text logit scale: the encoder's own CLIP scale when it has a
    shared space (``logit_scale_init``, 100 for OpenAI weights, capped at 100); on learned
    projections CLIP's training start 1/0.07, since random projections give unstructured
    cosines that a scale of 100 would turn into near one-hot softmaxes."""
    if encoder.shared_space:
        return min(float(getattr(encoder, "logit_scale_init", CLIP_LOGIT_SCALE)), CLIP_LOGIT_SCALE)
    return CLIP_INITIAL_LOGIT_SCALE


class TextAwareMethod(EncoderMethod):
    """An encoder method with a text side: ``config`` (the subclass's config dataclass, which
    has an ``embed_dim`` field), ``encoder``, ``space`` (:class:`TextSpace`: identity on a
    shared CLIP space, learned projections into ``embed_dim`` otherwise) and a lazily built
    ``text_bank`` of prompt-template class texts.

    ``training_classes``, when given, goes to :meth:`set_training_classes`.
    """

    def __init__(
        self,
        config_cls,
        *,
        backbone: str | Encoder,
        weights: str | Path | None,
        finetune: str | None,
        preferred_finetune: str,
        metric: str | nn.Module | None = None,
        training_classes: Sequence[str] | None = None,
        options: dict[str, Any],
    ) -> None:
        config, encoder = configure_method(
            config_cls, method=self.name, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune=preferred_finetune, metric=metric, options=options,
        )
        super().__init__(encoder)
        self.config = config
        self.space = self.build_space(config, encoder)
        self._text_bank = None
        if training_classes is not None:
            self.set_training_classes(training_classes)

    def build_space(self, config, encoder: Encoder) -> TextSpace:
        """The common video-text space (a hook: a subclass may build modules that must exist
        before it): identity on a shared space; otherwise as ``config.start`` says (a config
        without that field: "standard", learned projections into ``config.embed_dim``).

        A config with a ``start`` field gets it resolved here (and recorded, so the saved
        config reproduces the run); one with a ``base_centring`` field gets the base-class
        frame mean when the start is training-free (recorded as used: False elsewhere).
        """
        start = "standard"
        if hasattr(config, "start"):
            config.start = start = resolve_start(config.start, encoder.shared_space, method=self.name)
        if encoder.shared_space:
            start = "standard"
        centring = start == "training-free" and bool(getattr(config, "base_centring", False))
        if hasattr(config, "base_centring"):
            config.base_centring = centring
        return TextSpace(
            feature_dim=encoder.feature_dim,
            text_dim=encoder.text_dim,
            shared_space=encoder.shared_space,
            embed_dim=config.embed_dim,
            start=start,
            base_centring=centring,
        )

    def prepare_training(
        self, episodes: Iterable, *, reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Base-feature centring: the mean of the encoder's frame features over the first
        ``config.base_centring_clips`` training clips (support and query, as drawn). Once per
        method: a mean already estimated (or loaded from a checkpoint) is kept. A method with a
        module between the encoder and the space centres before it (``space.centre``, then
        ``space.frames(..., centred=True)``)."""
        if not self.space.centres or self.space.frame_mean_estimated:
            return {}
        wanted = int(getattr(self.config, "base_centring_clips", BASE_CENTRING_CLIPS))

        def clips():
            seen = 0
            for inputs in episodes:
                support, query = self.encode_episode(inputs)
                yield support
                yield query
                seen += support.shape[0] + query.shape[0]
                if seen >= wanted:
                    return

        frames = self.space.estimate_frame_mean(clips(), reduce_sum=reduce_sum)
        return {"base_centring_frames": frames}

    @property
    def text_bank(self):
        """Prompt-template class texts over the frozen text encoder (a cache, not a submodule)."""
        if self._text_bank is None:
            self._text_bank = text_bank_for(self.encoder)
        return self._text_bank

    def projected_text(
        self, text, class_names: Sequence[str], labels: torch.Tensor, *, memo: bool, need_class: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The episode's class texts in the common space: ``(per class (C, W) or None, per support
        clip (Ns, W))`` from :class:`~fsar.methods.text_side.EpisodeText` ``text``.

        ``memo`` (evaluation from the cache, :meth:`ClipMemo.applies`): a class's text is then its
        16-template mean, a function of its name alone (the text encoder is frozen), so each name
        is projected once per evaluation and a support clip's text is its class's row. Otherwise
        ``per_clip`` is projected as drawn (one template per clip in training), and the per-class
        texts only when ``need_class``.
        """
        device = labels.device
        if memo:
            per_class = text.per_class.to(device)
            (text_class,) = self.clip_memo.map(
                lambda index: (self.space.text(per_class[index]),), None,
                [("class text",)] * len(class_names), ids=list(class_names),
            )
            return text_class, text_class[labels]
        text_clip = self.space.text(text.per_clip.to(device))
        return (self.space.text(text.per_class.to(device)) if need_class else None), text_clip

    def build_metric(self, metric: str | nn.Module, options: dict[str, Any] | None) -> nn.Module:
        """The matching metric, fed features of the common space's width."""
        return resolve_metric(metric, options, method=self.name, feature_dim=self.space.dim)

    def make_text_logit_scale(self, init: float | None, *, learnable: bool) -> Scale:
        """A CLIP-style logit scale for video-text cosines: starts at ``init`` (None:
        :func:`initial_logit_scale` of the encoder), capped at CLIP's 100."""
        return Scale(init or initial_logit_scale(self.encoder), learnable=learnable, max_value=CLIP_LOGIT_SCALE)
