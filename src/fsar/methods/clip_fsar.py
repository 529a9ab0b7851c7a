"""CLIP-FSAR (Wang et al., IJCV 2023): a fully fine-tuned CLIP visual encoder, prototype
modulation with the class text, OTAM, and a classification loss against the texts of
all training classes.

One episode (C-way K-shot, Nq queries, width W)::

    F_S, F_Q = encoder(frames)                                 no text inside the encoder
    F~_S = modulation([F_S ; F_T])[:T]    F~_Q = modulation(F_Q)  (one 1-layer transformer, shared)
    logits_Q2S = τ · metric(mean_K F~_S, F~_Q)                 (Nq, C), CLIP-FSAR's OTAM by default
    L = CE(logits_Q2S, query labels)
        + w · CE(s · cos(GAP_T [F_S; F_Q], texts of ALL training classes), global labels)

Prediction: the metric branch only (``log_softmax(logits_Q2S)``), as CLIP-FSAR's
default evaluation does; the classification head is a training signal. The training
class names come from :meth:`CLIPFSAR.set_training_classes` (the engine calls it with
the training split's classes); their texts are the 16-template means (frozen text
encoder, cached). The support text in the modulation follows the same rule as MA-FSAR
(one random template per clip in training, 16-template mean at evaluation).

Backbones: CLIP with ``finetune="full"`` (default, the paper's setting); on the embedded
pairs (always frozen) the encoder cannot fine-tune, and what trains instead starts as
``start`` says (fsar's own, not the paper's): ``"training-free"`` (the default there, via
``"auto"``) keeps the frames as they are (minus the base-class frame mean, ``base_centring``),
runs the modulation layer at width ``modulation_bottleneck`` inside a zero-initialised
residual bottleneck (fed the raw class text) and maps the text through a zero-weight Linear,
so the untrained method is exactly its metric on the raw features; ``"standard"`` is the
earlier behaviour, random projections into ``embed_dim`` plus the modulation layer at that
width. CLIP is unchanged (its shared space needs no projection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.encoders.base import Encoder
from fsar.methods import METHODS
from fsar.methods.base import MethodOutput
from fsar.methods.common import SHOT_HANDOFF, Scale, check_episode, class_means
from fsar.methods.grid_temporal import ResidualBottleneck
from fsar.methods.text_aware import STARTS, CentringOptions, TextAwareMethod
from fsar.methods.text_side import cosine_logits, episode_text
from fsar.methods.memo import ClipMemo
from fsar.methods.tpcm import PrototypeModulation

__all__ = ["CLIPFSAR", "CLIPFSARConfig"]


@dataclass
class CLIPFSARConfig(CentringOptions):
    """Resolved CLIP-FSAR options (JSON-able)."""

    backbone: str
    weights: str | None = None
    finetune: str = "full"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    #: CLIP-FSAR's own OTAM head (λ 0.5, both directions summed, prototype shots).
    metric: str = "otam_clipfsar"
    metric_options: dict[str, Any] = field(default_factory=dict)
    #: weight w of the classification loss against all training-class texts (0 = off).
    classification_weight: float = 1.0
    modulation_heads: int = 8
    modulation_ffn_dim: int | None = None
    modulation_dropout: float = 0.1
    modulation_pre_ln: bool = True
    #: K-shot hand-off to the metric (common.SHOT_HANDOFF): "prototype" = class means of the
    #: K modulated supports; "metric" = every support clip, combined by the metric.
    shots: str = "prototype"
    embed_dim: int = 512
    logit_scale_init: float | None = None
    learn_logit_scale: bool = True
    metric_scale: float = 1.0
    learn_metric_scale: bool = False
    #: How the learned maps start (text_aware.STARTS): "auto" = "training-free" on encoders
    #: without a shared space, "standard" on CLIP; see the module docstring.
    start: str = "auto"
    #: inner width of the modulation layer's residual bottleneck when start is "training-free".
    modulation_bottleneck: int = 128

    def validate(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"clip-fsar: start must be 'auto', 'standard' or 'training-free', got {self.start!r}")
        if int(self.modulation_bottleneck) < 1 or int(self.base_centring_clips) < 1:
            raise ValueError(
                f"clip-fsar: modulation_bottleneck and base_centring_clips must be positive, got "
                f"{self.modulation_bottleneck}, {self.base_centring_clips}"
            )
        if self.shots not in SHOT_HANDOFF:
            raise ValueError(f"clip-fsar: shots must be one of {SHOT_HANDOFF}, got {self.shots!r}")
        if self.classification_weight < 0:
            raise ValueError(f"clip-fsar: classification_weight must be >= 0, got {self.classification_weight}")


@METHODS.register("clip-fsar")
class CLIPFSAR(TextAwareMethod):
    """CLIP-FSAR: fine-tuned encoder + prototype modulation + metric + classification loss.

    Options are the fields of :class:`CLIPFSARConfig`; ``finetune`` defaults to
    ``"full"`` on CLIP and ``"frozen"`` elsewhere. Call :meth:`set_training_classes`
    before training with ``classification_weight > 0``.
    """

    name = "clip-fsar"

    def __init__(
        self,
        *,
        backbone: str | Encoder,
        weights: str | Path | None = None,
        finetune: str | None = None,
        metric: str | nn.Module = "otam_clipfsar",
        training_classes: list[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            CLIPFSARConfig, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune="full", metric=metric, training_classes=training_classes, options=options,
        )
        config = self.config
        bottleneck = config.start == "training-free" and not self.encoder.shared_space
        self.modulation = PrototypeModulation(
            dim=config.modulation_bottleneck if bottleneck else self.space.dim,
            heads=config.modulation_heads,
            ffn_dim=config.modulation_ffn_dim,
            dropout=config.modulation_dropout,
            pre_ln=config.modulation_pre_ln,
        )
        if bottleneck:
            # The modulation layer at a small width on the raw features; its text is the raw class text.
            self.modulation = ResidualBottleneck(self.modulation, dim=self.space.dim,
                                                 inner=config.modulation_bottleneck, text_dim=self.encoder.text_dim)
        self._raw_text_to_modulation = bottleneck
        self.metric = self.build_metric(metric, config.metric_options)
        self.logit_scale = self.make_text_logit_scale(config.logit_scale_init, learnable=config.learn_logit_scale)
        self.metric_scale = Scale(config.metric_scale, learnable=config.learn_metric_scale)

    @classmethod
    def from_config(cls, values):
        """A config saved before ``start`` existed was built with the standard start and no
        centring: rebuild it so, so that its checkpoint loads and predicts as it was trained."""
        values = dict(values)
        if "start" not in values:
            values["start"] = "standard"
        values.setdefault("base_centring", False)
        return super().from_config(values)

    def _classification_loss(
        self, inputs: EpisodeInputs, f_support: torch.Tensor, f_query: torch.Tensor, query_labels: torch.Tensor
    ) -> torch.Tensor:
        if self.training_classes is None:
            raise ValueError(
                "clip-fsar: the classification loss needs the training classes; call "
                "method.set_training_classes(names) first (or set classification_weight=0)"
            )
        unknown = [c for c in inputs.class_names if c not in self.training_class_index]
        if unknown:
            raise ValueError(f"clip-fsar: episode classes {unknown} are not among the training classes")
        device = f_query.device
        episode_to_global = torch.tensor([self.training_class_index[c] for c in inputs.class_names], device=device)
        targets = torch.cat([episode_to_global[inputs.support_labels.to(device)], episode_to_global[query_labels]])
        class_text = self.text_bank.features(self.training_classes, train=False).detach().float().to(device)
        video = torch.cat([f_support.mean(1), f_query.mean(1)])  # GAP over T, before modulation
        logits = cosine_logits(video, self.space.text(class_text), self.logit_scale())
        return F.cross_entropy(logits, targets)

    def forward(self, inputs: EpisodeInputs, *, generator: torch.Generator | None = None) -> MethodOutput:
        check_episode(inputs, method=self.name)  # before the labels index the class names
        train = self.training
        text = episode_text(
            self.text_bank, inputs.class_names, inputs.support_labels, train=train, generator=generator
        )
        support, query = self.encode_episode(inputs)  # CLIP-FSAR puts no text into the encoder
        assert support is not None
        device = query.device
        labels = inputs.support_labels.to(device)
        way = inputs.way

        memo = ClipMemo.applies(self, inputs.features, support)  # evaluation from the cache: once per clip
        if self._raw_text_to_modulation:
            text_clip = text.per_clip.to(device, support.dtype)
        else:
            _, text_clip = self.projected_text(text, inputs.class_names, labels, memo=memo, need_class=False)

        def support_part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            frames = self.space.frames(support[index])
            return frames, self.modulation(frames, text_clip[index])

        def query_part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            frames = self.space.frames(query[index])
            return frames, self.modulation(frames, None)

        if memo:
            names = [("support", inputs.class_names[c]) for c in labels.tolist()]
            f_support, support_mod = self.clip_memo.map(support_part, support, names)
            f_query, query_mod = self.clip_memo.map(query_part, query, [("query",)] * query.shape[0])
        else:
            f_support, support_mod = support_part(torch.arange(support.shape[0]))
            f_query, query_mod = query_part(torch.arange(query.shape[0]))
        if self.config.shots == "prototype":
            prototypes, proto_labels = class_means(support_mod, labels, way), torch.arange(way, device=device)
        else:
            prototypes, proto_labels = support_mod, labels
        logits = self.metric(prototypes, proto_labels, query_mod, way) * self.metric_scale()
        log_probs = F.log_softmax(logits, dim=-1)
        parts: dict[str, torch.Tensor] = {"log_p_q2s": log_probs.detach()}

        loss = None
        if train and inputs.query_labels is not None:
            query_labels = inputs.query_labels.to(device)
            loss_q2s = F.cross_entropy(logits, query_labels)
            loss = loss_q2s
            parts["loss_q2s"] = loss_q2s.detach()
            if self.config.classification_weight > 0:
                loss_cls = self._classification_loss(inputs, f_support, f_query, query_labels)
                loss = loss + self.config.classification_weight * loss_cls
                parts["loss_classification"] = loss_cls.detach()
        return MethodOutput(log_probs=log_probs, loss=loss, parts=parts)
