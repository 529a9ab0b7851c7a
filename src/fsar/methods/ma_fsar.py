"""MA-FSAR (Xing et al., Pattern Recognition 2025): CLIP with Fine-grained Multimodal
Adaptation (FgMA, inside the encoder), the Text-guided Prototype Construction Module
(TPCM), a temporal matching metric, and a video-text branch.

One episode (shapes for C-way K-shot, Nq queries, width W)::

    F_S = encoder(support frames, text of each support clip)   (C·K, T, W)   FgMA support branch (LMA)
    F_Q = encoder(query frames)                                 (Nq, T, W)    query branch (LSTA), no text
    text branch:   p_S2T = softmax_C(s · cos(GAP_T F_S, F_T)),  p_Q2T likewise       eqs. 14/15
    visual branch: F~_S = TPCM(F_S, F_T), F~_Q = TPCM(F_Q)  (shared weights)        eqs. 9-12
                   prototypes = mean over K of F~_S              (C, T, W)
                   p_Q2S = softmax_C(τ · metric(prototypes, F~_Q))                  eq. 13
    L = α·½(L_S2T + L_Q2T) + (1−α)·L_Q2S                                            eq. 16
    p = α·p_Q2T + (1−α)·p_Q2S   -> MethodOutput.log_probs = log p                   eq. 17

The KL losses against one-hot targets are cross-entropies. α defaults to the paper's
0.75 for appearance-heavy ("spatial") data sets; ``dataset_kind="temporal"`` (SSv2)
gives 0.25; an explicit ``alpha`` wins.

Backbones:

* ``clip-vit-b32`` / ``clip-vit-b16``: ``finetune="adapters"`` (default) is the full
  model (FgMA); ``"frozen"`` is the paper's "frozen CLIP + TPCM" row (Table 4) and
  accepts cached features; ``"full"`` is the "fine-tuned visual-only" row. Frame and
  text features share CLIP's 512-d space, so no projection is learned.
* ``effnet-lite0+minilm`` / ``effnet-lite0-grid+minilm`` (embedded, always frozen): a CNN
  has no tokens to adapt, so there is **no FgMA** here. With ``start="training-free"`` (the
  default there) the frames stay 1280-d (minus the base-class frame mean, ``base_centring``),
  a zero-weight map sends the MiniLM text (384-d) into that space, TPCM runs in a
  zero-initialised residual bottleneck, and on the grid backbone a zero-initialised temporal
  module works on the grid tokens; ``start="standard"`` projects frames and text into
  ``embed_dim`` (512) by two learned Linear layers instead.

Temperatures: the text logits use a CLIP-style logit scale (init from the CLIP model,
100 for OpenAI weights, capped at 100, learnable unless ``learn_logit_scale=False``; on
learned projections it starts at CLIP's own initial 1/0.07, since random projections
give unstructured cosines).
The metric's logits (−distance for OTAM) are multiplied by ``metric_scale`` (fixed 1.0
by default, as in the OTAM/CLIP-FSAR code) before the softmax giving p_Q2S.

Choices the paper leaves open (spec tags [proposed]), all configurable:

* TPCM: 8 heads, GELU, dropout 0.1, pre-LayerNorm on (``tpcm_pre_ln``; off = the bare
  equations). Width = the common space (512 on CLIP ViT-B, ``embed_dim`` otherwise).
* K-shot: prototypes are the mean of the K TPCM-enhanced support clips (``shots="prototype"``; ``shots="metric"`` hands every clip to the metric).
* Training texts: one random template per support clip; the C-way text classifier of
  eqs. 14/15 uses, per class, the mean of its K clips' draws (for 1-shot: that clip's
  draw, so one draw serves FgMA, TPCM and the losses).
* The metric defaults to ``otam`` (fsar's default OTAM: λ 0.1, both directions averaged).
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
from fsar.encoders.embedded_grid import grid_tokens
from fsar.methods.common import SHOT_HANDOFF, Scale, check_episode, class_means, mix_log_probs
from fsar.methods.grid_temporal import GridTemporalOptions, ResidualBottleneck, check_grid_options, grid_temporal_for
from fsar.methods.text_aware import (
    CLIP_INITIAL_LOGIT_SCALE, CLIP_LOGIT_SCALE, STARTS, CentringOptions, TextAwareMethod, initial_logit_scale,
)
from fsar.methods.memo import ClipMemo
from fsar.methods.text_side import TextSpace, cosine_logits, episode_text
from fsar.methods.tpcm import PROTOTYPE_MODULES, build_prototype_module

__all__ = [
    "ALPHA_BY_DATASET_KIND", "CLIP_INITIAL_LOGIT_SCALE", "CLIP_LOGIT_SCALE", "MAFSAR", "MAFSARConfig",
    "initial_logit_scale",
]

#: The paper's α (§4.1, Table 13): text-heavy on appearance data sets, visual-heavy on SSv2.
ALPHA_BY_DATASET_KIND = {"spatial": 0.75, "temporal": 0.25}

@dataclass
class MAFSARConfig(CentringOptions, GridTemporalOptions):
    """Resolved MA-FSAR options (saved beside checkpoints; JSON-able). Base-feature centring and,
    on grid backbones (effnet-lite0-grid+minilm), the grid temporal module take their options
    from the two bases."""

    backbone: str
    weights: str | None = None
    finetune: str = "adapters"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    metric: str = "otam"
    metric_options: dict[str, Any] = field(default_factory=dict)
    #: "spatial" (α 0.75) or "temporal" (α 0.25); ignored when alpha is given.
    dataset_kind: str = "spatial"
    #: weight of the text branch in eqs. 16/17; None = from dataset_kind.
    alpha: float | None = None
    #: "tpcm" | "unimodal" | "multimodal" | "none" (Table 3/6 ablations).
    prototype_module: str = "tpcm"
    tpcm_heads: int = 8
    tpcm_ffn_dim: int | None = None  # None = 4 x width
    tpcm_dropout: float = 0.1
    tpcm_pre_ln: bool = True
    #: K-shot hand-off to the metric (common.SHOT_HANDOFF): "prototype" = (way, T, W) class
    #: means of the K enhanced supports, labels 0..way-1; "metric" = every enhanced support clip.
    shots: str = "prototype"
    #: width of the learned common space when the encoder has no shared space.
    embed_dim: int = 512
    logit_scale_init: float | None = None  # None = initial_logit_scale(encoder)
    learn_logit_scale: bool = True
    metric_scale: float = 1.0
    learn_metric_scale: bool = False
    #: How the learned maps start (fsar's own, not the paper's): "training-free" = the untrained
    #: method predicts exactly as its metric on the raw features (identity frame space,
    #: zero-weight text map, TPCM inside a zero-initialised residual bottleneck, grid temporal
    #: module zero-initialised); "standard" = the paper's modules with default initialisation
    #: (random projections on encoders without a shared space); "auto" = "training-free" on
    #: encoders without a shared space (the embedded pairs), "standard" on CLIP.
    start: str = "auto"
    #: inner width of TPCM's residual bottleneck when start is "training-free".
    tpcm_bottleneck: int = 128

    def resolved_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else ALPHA_BY_DATASET_KIND[self.dataset_kind]

    def validate(self) -> None:
        if self.dataset_kind not in ALPHA_BY_DATASET_KIND:
            raise ValueError(
                f"ma-fsar: dataset_kind must be one of {sorted(ALPHA_BY_DATASET_KIND)}, got {self.dataset_kind!r}"
            )
        if self.alpha is not None and not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"ma-fsar: alpha must lie in [0, 1], got {self.alpha}")
        if self.prototype_module not in PROTOTYPE_MODULES:
            raise ValueError(f"ma-fsar: prototype_module must be one of {PROTOTYPE_MODULES}, got {self.prototype_module!r}")
        if self.start not in STARTS:
            raise ValueError(f"ma-fsar: start must be 'auto', 'standard' or 'training-free', got {self.start!r}")
        if int(self.base_centring_clips) < 1:
            raise ValueError(f"ma-fsar: base_centring_clips must be positive, got {self.base_centring_clips}")
        check_grid_options("ma-fsar", gate=self.grid_gate, static_rate=self.grid_static_rate)
        if self.shots not in SHOT_HANDOFF:
            raise ValueError(f"ma-fsar: shots must be one of {SHOT_HANDOFF}, got {self.shots!r}")


@METHODS.register("ma-fsar")
class MAFSAR(TextAwareMethod):
    """MA-FSAR: FgMA encoder + TPCM + metric (p_Q2S) + video-text branch (p_Q2T), eqs. 9-17.

    Build with ``fsar.create_method("ma-fsar", backbone=..., weights=..., **options)``;
    the options are the fields of :class:`MAFSARConfig` (``finetune`` defaults to
    ``"adapters"`` on CLIP and ``"frozen"`` elsewhere; ``metric`` may also be an
    ``nn.Module``). Text and support labels only ever reach the support side; the
    query path (encoder branch and TPCM) never sees text.
    """

    name = "ma-fsar"

    def __init__(
        self,
        *,
        backbone: str | Encoder,
        weights: str | Path | None = None,
        finetune: str | None = None,
        metric: str | nn.Module = "otam",
        **options: Any,
    ) -> None:
        super().__init__(
            MAFSARConfig, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune="adapters", metric=metric, options=options,
        )
        cfg = self.config
        # Record the α actually used, so the saved config reproduces the run by itself.
        cfg.alpha = self.alpha = cfg.resolved_alpha()
        start = cfg.start  # resolved by build_space
        bottleneck = start == "training-free" and cfg.prototype_module != "none"
        self.tpcm = build_prototype_module(
            cfg.prototype_module,
            dim=cfg.tpcm_bottleneck if bottleneck else self.space.dim,
            heads=cfg.tpcm_heads,
            ffn_dim=cfg.tpcm_ffn_dim,
            dropout=cfg.tpcm_dropout,
            pre_ln=cfg.tpcm_pre_ln,
        )
        if bottleneck:
            # TPCM at a small width on the raw features; its text is the raw class text.
            self.tpcm = ResidualBottleneck(self.tpcm, dim=self.space.dim, inner=cfg.tpcm_bottleneck,
                                           text_dim=self.encoder.text_dim)
        self._raw_text_to_tpcm = bottleneck
        self.metric = self.build_metric(metric, cfg.metric_options)
        self.logit_scale = self.make_text_logit_scale(cfg.logit_scale_init, learnable=cfg.learn_logit_scale)
        self.metric_scale = Scale(cfg.metric_scale, learnable=cfg.learn_metric_scale)

    @classmethod
    def from_config(cls, values):
        """A config saved before ``grid_gate`` existed was built with one gate per channel (at
        rate 50), one saved before ``base_centring`` existed without centring: rebuild them so,
        so that their checkpoints load and predict as they were trained."""
        values = dict(values)
        if "grid_gate" not in values:
            values.setdefault("grid_gate", "per-channel")
            values.setdefault("grid_static_rate", 50.0)
        values.setdefault("base_centring", False)
        return super().from_config(values)

    def build_space(self, config: MAFSARConfig, encoder: Encoder) -> TextSpace:
        """The grid temporal module (grid backbones), then the video-text space, started as
        ``config.start`` says (resolved and recorded by :meth:`TextAwareMethod.build_space`)."""
        # Grid backbones: a trained temporal module over the grid tokens (fsar's CNN analogue of
        # FgMA's temporal adaptation), identity at initialisation.
        self.grid_temporal = grid_temporal_for(config, encoder)
        return super().build_space(config, encoder)

    def _enhance(self, features: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        return features if self.tpcm is None else self.tpcm(features, text)

    def forward(self, inputs: EpisodeInputs, *, generator: torch.Generator | None = None) -> MethodOutput:
        check_episode(inputs, method=self.name)  # before the labels index the class names
        train = self.training
        text = episode_text(
            self.text_bank, inputs.class_names, inputs.support_labels, train=train, generator=generator
        )
        support, query = self.encode_episode(inputs, support_text=text.per_clip)
        assert support is not None
        device = query.device
        labels = inputs.support_labels.to(device)
        way = inputs.way

        memo = ClipMemo.applies(self, inputs.features, support)  # evaluation from the cache: once per clip
        text_class, text_clip = self.projected_text(text, inputs.class_names, labels, memo=memo)  # (C, W), (Ns, W)
        tpcm_text = text.per_clip.to(device, support.dtype) if self._raw_text_to_tpcm else text_clip

        def frames_of(clips: torch.Tensor) -> torch.Tensor:
            """The joint-space frames (n, T, W): centred on the base-class mean, then through the
            grid tokens' temporal module if any."""
            clips = self.space.centre(clips)
            if self.grid_temporal is not None:
                clips = self.grid_temporal(grid_tokens(clips, self.grid_temporal.cells))
            return self.space.frames(clips, centred=True)

        # Per clip: the joint-space frames, their GAP over T (the text branch, eqs. 14/15, reads
        # the features *before* TPCM) and the shared TPCM (eqs. 9-12).
        def support_part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            frames = frames_of(support[index])
            return frames.mean(1), self._enhance(frames, tpcm_text[index])

        def query_part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            frames = frames_of(query[index])
            return frames.mean(1), self._enhance(frames, None)

        if memo:
            names = [("support", inputs.class_names[c]) for c in labels.tolist()]
            support_mean, support_tilde = self.clip_memo.map(support_part, support, names)
            query_mean, query_tilde = self.clip_memo.map(query_part, query, [("query",)] * query.shape[0])
        else:
            support_mean, support_tilde = support_part(torch.arange(support.shape[0]))
            query_mean, query_tilde = query_part(torch.arange(query.shape[0]))

        scale = self.logit_scale()
        s2t_logits = cosine_logits(support_mean, text_class, scale)  # (Ns, C)
        q2t_logits = cosine_logits(query_mean, text_class, scale)  # (Nq, C)

        # Visual branch (eq. 13): K-shot prototypes of the TPCM outputs, then the metric.
        if self.config.shots == "prototype":
            prototypes = class_means(support_tilde, labels, way)  # (C, T, W)
            proto_labels = torch.arange(way, device=device)
        else:
            prototypes, proto_labels = support_tilde, labels
        q2s_logits = self.metric(prototypes, proto_labels, query_tilde, way) * self.metric_scale()

        log_p_q2t = F.log_softmax(q2t_logits, dim=-1)
        log_p_q2s = F.log_softmax(q2s_logits, dim=-1)
        log_probs = mix_log_probs(log_p_q2t, log_p_q2s, self.alpha)  # eq. 17
        parts = {"log_p_q2t": log_p_q2t.detach(), "log_p_q2s": log_p_q2s.detach()}

        loss = None
        if train and inputs.query_labels is not None:
            query_labels = inputs.query_labels.to(device)
            loss_s2t = F.cross_entropy(s2t_logits, labels)
            loss_q2t = F.cross_entropy(q2t_logits, query_labels)
            loss_q2s = F.cross_entropy(q2s_logits, query_labels)
            loss = self.alpha * 0.5 * (loss_s2t + loss_q2t) + (1.0 - self.alpha) * loss_q2s  # eq. 16
            parts.update(
                loss_s2t=loss_s2t.detach(), loss_q2t=loss_q2t.detach(), loss_q2s=loss_q2s.detach()
            )
        return MethodOutput(log_probs=log_probs, loss=loss, parts=parts)
