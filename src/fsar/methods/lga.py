"""LGA -- Language-Guided Action Anatomy for few-shot action recognition (Qian et al., ICCV 2025).

One episode (C-way K-shot, Nq queries, width W, L stages)::

    f_S, f_Q      = encoder(frames)                        per-frame features (n, T, D)
    stages        = CLUSTER-Segment(f.detach(), L) + overlap          visual anatomy
    t^c_1..t^c_L  = text_encoder(LLM stage descriptions of class c)   textual anatomy
    f~_S          = Fusion(Q_i = t^{y}_i + f_{S_i}, K = V = concat_i f_{S_i})   support
    f~_Q          = Fusion(Q_i = f_{Q_i},           K = V = concat_i f_{Q_i})   query: no text
    p_vv          = softmax_c(-AB-MHM(f~_Q, f~_S^c) / τ_v)              fsar.metrics "abmhm"
    p_vt          = softmax_c(s · 1/L Σ_i cos(mean f~_{Q_i}, t^c_i))
    p             ∝ p_vv^α · p_vt^(1-α)          (evaluation; training predicts with p_vv only)
    L             = CE(-AB-MHM/τ_v, y) + λ · L_con

``L_con`` (stage-level video-text contrastive loss, spec §6 [proposed]): for every labelled
clip of the episode (support and query) and every stage i, cross-entropy of
``s · cos(mean f~_{S_i}, t^{c'}_i)`` over all training classes c' (set with
:meth:`LGA.set_training_classes`; without it, over the episode's classes).

Descriptions: ``descriptions={class name: [L strings]}`` (from the cache file, see
:mod:`fsar.lga.descriptions`; on the command line ``--descriptions`` and the ``--llm-*`` options
of :meth:`LGA.options`, loaded by :meth:`LGA.load_resources`); a class without one is described on the fly by ``describer``
when given, else by the documented template fallback (one warning line with the count). The
method never opens files.

Start from the training-free core (fsar's own, not the paper's; ``start``, default ``"auto"``
= ``"training-free"`` on encoders without a shared space, i.e. the embedded pairs, and
``"standard"`` on CLIP, which is the paper's modules with default initialisation). With
``"training-free"`` the untrained method predicts exactly as **AB-MHM on the CLUSTER-Segment
stage packs of the raw features** (``fsar.metrics`` "abmhm" with the method's metric options;
the stage boundaries always come from the raw frames), so validation decides how far training
moves away from that metric:

* the frame map is the identity (:class:`~fsar.methods.text_side.TextSpace` with
  ``start="training-free"``: width = the encoder's ``feature_dim``), minus the base-class frame
  mean (``base_centring``, on by default: estimated from training clips before step 1, zero
  until then, so the metric is then AB-MHM on the centred stage packs), and the stage texts' map
  starts with zero weights and a constant bias, so every class's stage texts are one vector:
  the untrained V-T probabilities are uniform, and the geometric mean keeps p_vv's ranking;
* the Fine-grained Multimodal Fusion runs inside a zero-initialised residual bottleneck
  (:class:`~fsar.lga.fusion.ResidualStageFusion`, width ``fusion_bottleneck``; support stages
  read their raw stage texts through the bottleneck's own text map), so the untrained fused
  stages are the raw stages;
* on grid backbones (``effnet-lite0-grid+minilm``) the grid tokens first pass MA-FSAR's
  :class:`~fsar.methods.grid_temporal.GridTemporalModule` (the identity at the start), so the
  fusion and AB-MHM can see where things are and how they move.

* on an encoder without a shared space the evaluation predicts with V-V alone (``alpha``
  resolves to 1.0 instead of the spec's 0.5): the stage texts' map is learned from the training
  classes' names only, and on ssv2-mini (5 training classes, before base-feature centring) it did not transfer to the 5 unseen
  ones (V-T alone 18.8% at 5-way 1-shot, below chance, while V-V alone rose from its start, 32.2
  to 33.3%, and the geometric mean fell to 26.4%; benchmarks/README.md). The V-T branch still
  trains (the stage-level contrastive loss shapes the fused stages) and ``-O alpha=0.5`` brings
  it back into the prediction.

The weights that start at zero receive gradients from the first backward (the bottleneck's and
the grid module's up-projections, the static-suppression gate, the text map's weights through
the stage-level contrastive loss). A config saved before ``start`` existed loads as
``"standard"``, the behaviour it was trained with. ``start="training-free"`` on CLIP keeps
CLIP's own text space (no text map to zero), so there the untrained method is AB-MHM on the raw
stages combined with CLIP's stage-text zero-shot scores.

Everything the paper leaves open is a config field (see :class:`LGAConfig`), with the
spec's proposals as defaults. Ablations: ``textual_anatomy=False`` (every stage uses the
label text "a video of <label>"), ``visual_anatomy=False`` (one stage = whole clip, text
= mean of the stage texts), ``segmentation="uniform"`` (HARD) or ``"tw-finch"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.encoders.base import Encoder
from fsar.lga.descriptions import DESCRIPTIONS_OPTION, descriptions_for
from fsar.lga.llm import DESCRIBER_OPTIONS, Describer, TemplateDescriber, describer_from_options
from fsar.encoders.embedded_grid import grid_tokens
from fsar.lga.fusion import ResidualStageFusion, StageFusion
from fsar.lga.segment import SEGMENTATIONS, gather_stages, segment
from fsar.metrics.stages import stage_mask
from fsar.methods import METHODS
from fsar.methods.base import MethodOutput
from fsar.methods.common import Scale
from fsar.methods.grid_temporal import GridTemporalOptions, check_grid_options, grid_temporal_for
from fsar.methods.text_aware import STARTS, CentringOptions, TextAwareMethod, resolve_start
from fsar.methods.memo import ClipMemo
from fsar.methods.text_side import TextSpace

__all__ = ["LGA", "LGAConfig", "geometric_mean_log_probs"]

log = logging.getLogger(__name__)


@dataclass
class LGAConfig(CentringOptions, GridTemporalOptions):
    """Resolved LGA options (JSON-able). [proposed] = our choice where the paper is silent."""

    backbone: str
    weights: str | None = None
    #: CLIP is fine-tuned in the paper ("full"); the embedded pair is always frozen.
    finetune: str = "full"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    #: L, the number of atomic stages (onset, progression, completion).
    num_stages: int = 3
    #: frames shared across each internal stage border (CLUSTER-Segment's overlap) [proposed 1].
    overlap: int = 1
    #: "cluster" (CLUSTER-Segment), "uniform" (HARD) or "tw-finch".
    segmentation: str = "cluster"
    #: options of fsar.metrics "abmhm" (shots="union"|"distance", neighbor_window, ...).
    metric_options: dict[str, Any] = field(default_factory=dict)
    #: weight of p_vv in the geometric mean p = p_vv^α p_vt^(1-α) [proposed 0.5]; None = 0.5,
    #: except with the training-free start on an encoder without a shared space, where it is 1.0
    #: (fsar's own: there the text space is a map learned from the training classes' names, which
    #: did not transfer to unseen classes on ssv2-mini, see the module docstring). Recorded resolved.
    alpha: float | None = None
    #: λ of the stage-level video-text contrastive loss (0 = off).
    contrastive_weight: float = 1.0
    #: τ_v: V-V logits are -AB-MHM / τ_v [proposed: learnable, init 0.1].
    metric_temperature: float = 0.1
    learn_metric_temperature: bool = True
    #: s = 1/τ_t of the V-T cosines; None = the encoder's CLIP scale (100) or 1/0.07 on projections.
    text_logit_scale: float | None = None
    learn_text_logit_scale: bool = True
    fusion_heads: int = 8
    fusion_ffn_mult: int = 4
    fusion_dropout: float = 0.1
    #: "query": f~ = Q + MHA(...) (spec); "visual": f~ = f_S + MHA(...) (text only steers attention).
    fusion_residual: str = "query"
    #: V-T matching on the fused query stages ("fused", spec) or the raw backbone frames ("raw").
    vt_features: str = "fused"
    #: width of the learned joint space when the encoder has no shared space and start is
    #: "standard" (with "training-free" the frames keep their own width).
    embed_dim: int = 512
    textual_anatomy: bool = True
    visual_anatomy: bool = True
    #: How the learned maps start (fsar's own, not the paper's): "training-free" = the untrained
    #: method predicts exactly as AB-MHM on the raw features' CLUSTER-Segment stage packs
    #: (identity frame map, zero-weight text map, the fusion inside a zero-initialised residual
    #: bottleneck, the grid temporal module on grid backbones); "standard" = the paper's modules
    #: with default initialisation (random projections into embed_dim on encoders without a
    #: shared space); "auto" = "training-free" on encoders without a shared space (the embedded
    #: pairs), "standard" on CLIP. Recorded resolved in the saved config.
    start: str = "auto"
    #: inner width of the fusion's residual bottleneck when start is "training-free".
    fusion_bottleneck: int = 128

    def validate(self) -> None:
        if self.num_stages < 1:
            raise ValueError(f"lga: num_stages must be >= 1, got {self.num_stages}")
        if self.overlap < 0:
            raise ValueError(f"lga: overlap must be >= 0, got {self.overlap}")
        if self.segmentation not in SEGMENTATIONS:
            raise ValueError(f"lga: segmentation must be one of {SEGMENTATIONS}, got {self.segmentation!r}")
        if self.alpha is not None and not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"lga: alpha must lie in [0, 1], got {self.alpha}")
        if self.contrastive_weight < 0:
            raise ValueError(f"lga: contrastive_weight must be >= 0, got {self.contrastive_weight}")
        if self.metric_temperature <= 0:
            raise ValueError(f"lga: metric_temperature must be > 0, got {self.metric_temperature}")
        if self.vt_features not in ("fused", "raw"):
            raise ValueError(f"lga: vt_features must be 'fused' or 'raw', got {self.vt_features!r}")
        if self.start not in STARTS:
            raise ValueError(f"lga: start must be 'auto', 'standard' or 'training-free', got {self.start!r}")
        if int(self.fusion_bottleneck) < 1 or int(self.base_centring_clips) < 1:
            raise ValueError(
                f"lga: fusion_bottleneck and base_centring_clips must be >= 1, got {self.fusion_bottleneck}, "
                f"{self.base_centring_clips}"
            )
        check_grid_options("lga", gate=self.grid_gate, static_rate=self.grid_static_rate)


def geometric_mean_log_probs(log_p_vv: torch.Tensor, log_p_vt: torch.Tensor, alpha: float) -> torch.Tensor:
    """LGA's weighted geometric mean p ∝ p_vv^α · p_vt^(1-α), in log space, renormalised over classes."""
    return F.log_softmax(alpha * log_p_vv + (1.0 - alpha) * log_p_vt, dim=-1)


@METHODS.register("lga")
class LGA(TextAwareMethod):
    """LGA: textual + visual anatomy, stage-level fusion, AB-MHM and video-text matching.

    Build with ``fsar.create_method("lga", backbone=..., descriptions=..., describer=...,
    **options)``; options are the fields of :class:`LGAConfig` (``num_stages``, ``alpha``,
    ...). Query clips never see text or labels: their fusion is visual-only and their
    V-T scores compare them with every episode class.
    """

    name = "lga"

    def __init__(
        self,
        *,
        backbone: str | Encoder,
        weights: str | Path | None = None,
        finetune: str | None = None,
        descriptions: dict[str, list[str]] | None = None,
        describer: Describer | None = None,
        training_classes: list[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            LGAConfig, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune="full", training_classes=training_classes, options=options,
        )
        config = self.config
        residual = config.start == "training-free"  # resolved by build_space
        self.fusion = StageFusion(
            config.fusion_bottleneck if residual else self.space.dim,
            heads=config.fusion_heads,
            ffn_mult=config.fusion_ffn_mult,
            dropout=config.fusion_dropout,
            residual=config.fusion_residual,
        )
        if residual:
            # the fusion at a small width on the raw frames; support stages read their raw stage texts
            self.fusion = ResidualStageFusion(self.fusion, dim=self.space.dim, inner=config.fusion_bottleneck,
                                              text_dim=self.encoder.text_dim)
        self._raw_text_to_fusion = residual
        from fsar import metrics

        self.metric = metrics.build("abmhm", **{"num_stages": config.num_stages, **config.metric_options})
        self.metric_temperature = Scale(config.metric_temperature, learnable=config.learn_metric_temperature)
        self.text_logit_scale = self.make_text_logit_scale(
            config.text_logit_scale, learnable=config.learn_text_logit_scale
        )
        self.descriptions: dict[str, list[str]] = {}
        for name, stages in (descriptions or {}).items():
            self.descriptions[name] = self._check_description(name, stages)
        self.describer = describer
        self._template = TemplateDescriber()
        self._templated: set[str] = set()
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @classmethod
    def from_config(cls, values):
        """A config saved before ``start`` existed was built with the paper's modules on every
        encoder: rebuild it so, so that its checkpoint loads as it was trained."""
        values = dict(values)
        values.setdefault("start", "standard")
        values.setdefault("alpha", 0.5)
        values.setdefault("base_centring", False)
        return super().from_config(values)

    def build_space(self, config: LGAConfig, encoder: Encoder) -> TextSpace:
        """On grid backbones with the training-free start the grid temporal module, then the
        video-text space, started as ``config.start`` says (resolved and recorded by
        :meth:`TextAwareMethod.build_space`, base-feature centring included)."""
        start = resolve_start(config.start, encoder.shared_space, method=self.name)
        if config.alpha is None:
            config.alpha = 1.0 if start == "training-free" and not encoder.shared_space else 0.5
        self.grid_temporal = grid_temporal_for(config, encoder) if start == "training-free" else None
        return super().build_space(config, encoder)

    def _frames(self, clips: torch.Tensor) -> torch.Tensor:
        """Encoder features (n, T, D) -> the frames the method matches (n, T, W): centred on the
        base-class mean (a statistic of the encoder's features, so before any trained module),
        then through the grid tokens' temporal module if any, then the space's frame map."""
        clips = self.space.centre(clips)
        if self.grid_temporal is not None:
            clips = self.grid_temporal(grid_tokens(clips, self.grid_temporal.cells))
        return self.space.frames(clips, centred=True)

    # ------------------------------------------------------------------ options and resources

    @classmethod
    def options(cls):
        """``--descriptions CACHE.json`` and the ``--llm-*`` options choosing the describer."""
        return (DESCRIPTIONS_OPTION, *DESCRIBER_OPTIONS)

    def load_resources(self, values, *, class_names=None) -> None:
        """Read the description cache (completed for ``class_names`` and saved when given) and
        set up the LLM describer the options select (it describes classes met later)."""
        describer = describer_from_options(values)
        descriptions = descriptions_for(
            values.get("descriptions"), describer=describer, class_names=class_names,
            num_stages=self.config.num_stages,
        )
        for name, stages in (descriptions or {}).items():
            self.descriptions[name] = self._check_description(name, stages)
        if describer is not None:
            self.describer = describer
        if class_names and self.describer is None and self.config.textual_anatomy:
            self._note_templated([n for n in dict.fromkeys(class_names) if n not in self.descriptions])

    # ------------------------------------------------------------------ text side

    @property
    def stages_used(self) -> int:
        """Stages actually matched: L, or 1 with visual anatomy off."""
        return self.config.num_stages if self.config.visual_anatomy else 1

    def _check_description(self, name: str, stages: Any) -> list[str]:
        L = self.config.num_stages
        if not isinstance(stages, (list, tuple)) or len(stages) != L or not all(
            isinstance(s, str) and s.strip() for s in stages
        ):
            raise ValueError(
                f"lga: description of class {name!r} must be {L} non-empty strings "
                f"(num_stages={L}), got {stages!r}"
            )
        return list(stages)

    def describe(self, class_name: str) -> list[str]:
        """The L stage descriptions of ``class_name`` (given, described on the fly, or template)."""
        if class_name in self.descriptions:
            return self.descriptions[class_name]
        if self.describer is not None:
            stages = self._check_description(class_name, self.describer.describe(class_name, self.config.num_stages))
        else:
            stages = self._template.describe(class_name, self.config.num_stages)
            self._note_templated([class_name])
        self.descriptions[class_name] = stages
        return stages

    def _note_templated(self, class_names: list[str]) -> None:
        """One warning line for the classes (not yet noted) that get the template fallback: the
        first time with their count and the fix; later ones at debug level."""
        new = [n for n in class_names if n not in self._templated]
        if not new:
            return
        first = not self._templated
        self._templated.update(new)
        if not first:
            log.debug("lga: template fallback also for %s", ", ".join(repr(n) for n in new))
            return
        shown = ", ".join(repr(n) for n in new[:3]) + (f" and {len(new) - 3} more" if len(new) > 3 else "")
        log.warning(
            "lga: %d class(es) have no stage description and there is no describer (%s): using the "
            "template fallback 'the start/middle/end of <label>' for them and for any class met later; "
            "for real textual anatomy run `fsar describe` and pass --descriptions, or --llm-url/--llm-folder",
            len(new), shown,
        )

    def _stage_prompts(self, name: str) -> tuple[str, ...]:
        """The L texts whose features are class ``name``'s stage texts."""
        if self.config.textual_anatomy:
            return tuple(self.describe(name))
        from fsar.encoders.prompts import normalise_class_name

        return (f"a video of {normalise_class_name(name)}",) * self.config.num_stages

    def _prompts_of(self, class_names: list[str]) -> list[tuple[str, ...]]:
        """:meth:`_stage_prompts` of every name (the template fallback noted for all at once)."""
        if self.describer is None and self.config.textual_anatomy:
            self._note_templated([n for n in class_names if n not in self.descriptions])
        return [self._stage_prompts(name) for name in class_names]

    def _class_texts(self, class_names: list[str], device: torch.device, *, prompts=None) -> torch.Tensor:
        """Raw stage text features (C, L_used, D_text) of the frozen text encoder (cached)."""
        out = []
        for texts in prompts or self._prompts_of(class_names):
            cached = self._text_cache.get(texts)
            if cached is None:
                with torch.no_grad():
                    cached = self.encoder.encode_text(list(texts)).detach().float().cpu()
                self._text_cache[texts] = cached
            out.append(cached)
        texts = torch.stack(out).to(device)  # (C, L, D_text)
        if not self.config.visual_anatomy:
            texts = texts.mean(1, keepdim=True)
        return texts

    # ------------------------------------------------------------------ forward

    def _stages(self, raw: torch.Tensor, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visual anatomy: boundaries from the raw frames, stage packs of the projected ones."""
        num_frames = raw.shape[1]
        if self.config.visual_anatomy:
            boundaries = segment(raw.detach(), self.stages_used, self.config.segmentation)
            membership = stage_mask(boundaries, num_frames, overlap=self.config.overlap)
        else:
            membership = torch.ones(raw.shape[0], 1, num_frames, dtype=torch.bool, device=raw.device)
        stages, valid = gather_stages(projected, membership)
        return stages, valid, membership

    @staticmethod
    def _pool(stages: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mean over each stage's valid frames: (n, L, n_max, W) -> (n, L, W)."""
        weight = valid.to(stages.dtype)
        return (stages * weight[..., None]).sum(2) / weight.sum(2, keepdim=True).clamp_min(1.0)

    def _stage_cosines(self, pooled: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """1/L Σ_i cos(pooled_i, text^c_i): (n, L, W) x (C, L, W) -> (n, C)."""
        unit_video, unit_text = F.normalize(pooled, dim=-1).flatten(1), F.normalize(texts, dim=-1).flatten(1)
        return (unit_video @ unit_text.T) / pooled.shape[1]  # the sum over stages and width in one product

    def _memo_parts(self, support, query, labels, class_names, device):
        """(valid, fused support, fused query (both as unit vectors), pooled query stages for V-T,
        class texts) of an episode, each clip's part computed once (:class:`ClipMemo`). Stages are stored padded to
        T slots and cut back to the episode's longest stage, the layout :func:`gather_stages`
        gives the whole episode (padded slots are zeros and never attended to, so a clip's fused
        stages do not depend on the other clips of its episode)."""
        num_frames = support.shape[1]
        # A class's stage texts are a function of its L prompts (the frozen text encoder): the
        # prompts name the memo's rows, and the projected texts are computed once per class.
        prompts = self._prompts_of(class_names)
        (class_text,) = self.clip_memo.map(
            lambda index: (self.space.text(self._class_texts([], device, prompts=[prompts[i] for i in index])),),
            None, [("stage text",)] * len(class_names), ids=prompts,
        )

        def padded(tensor: torch.Tensor) -> torch.Tensor:
            pad = num_frames - tensor.shape[2]
            if pad == 0:
                return tensor
            shape = list(tensor.shape)
            shape[2] = pad
            return torch.cat([tensor, tensor.new_zeros(shape)], dim=2)

        raw_vt = self.config.vt_features == "raw"

        def part(clips: torch.Tensor, texts: torch.Tensor | None):
            def compute(index: torch.Tensor):
                stages, valid, _ = self._stages(clips[index], self._frames(clips[index]))
                fused = self.fusion(stages, valid, None if texts is None else texts[index])
                # At evaluation the fused stages only meet the metric, which reads unit vectors:
                # normalised once per clip here (padded slots stay zero).
                unit = F.normalize(fused, dim=-1)
                if texts is not None:
                    return padded(valid), padded(unit)
                return padded(valid), padded(unit), self._pool(stages if raw_vt else fused, valid)
            return compute

        support_names = [("lga support", class_names[c]) for c in labels.tolist()]
        # the fusion reads the raw stage texts in the residual bottleneck (training-free start)
        fusion_text = self._class_texts([], device, prompts=prompts) if self._raw_text_to_fusion else class_text
        s_valid, fused_support = self.clip_memo.map(part(support, fusion_text[labels]), support, support_names)
        q_valid, fused_query, pooled_query = self.clip_memo.map(part(query, None), query,
                                                                [("lga query",)] * query.shape[0])
        n_max = int(max(s_valid.sum(-1).max(), q_valid.sum(-1).max()))
        return (s_valid[:, :, :n_max], fused_support[:, :, :n_max], q_valid[:, :, :n_max], fused_query[:, :, :n_max],
                pooled_query, class_text)

    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        support, query = self.encode_episode(inputs)
        assert support is not None
        device = query.device
        n_support = support.shape[0]
        labels = inputs.support_labels.to(device)
        way = inputs.way

        memoised = ClipMemo.applies(self, inputs.features, support)
        if memoised:
            # Evaluation from the cache: anatomy, fusion and the V-T pooling once per clip (they
            # depend on the clip and, for a support clip, its class's stage texts only), then the
            # episode's matching.
            support_valid, fused_support, query_valid, fused_query, pooled_query, class_text = self._memo_parts(
                support, query, labels, inputs.class_names, device
            )
        else:
            raw = torch.cat([support, query])  # (Ns + Nq, T, D)
            stages, valid, _ = self._stages(raw, self._frames(raw))
            raw_text = self._class_texts(inputs.class_names, device)  # (C, L, D_text)
            class_text = self.space.text(raw_text)  # (C, L, W)
            fusion_text = raw_text if self._raw_text_to_fusion else class_text
            support_valid, query_valid = valid[:n_support], valid[n_support:]

            # Fine-grained multimodal fusion: support stages with their class's stage texts,
            # query stages visual-only (same weights).
            fused_support = self.fusion(stages[:n_support], support_valid, fusion_text[labels])
            fused_query = self.fusion(stages[n_support:], query_valid, None)
            # Video-text: pooled query stages vs each class's stage texts.
            query_stages = fused_query if self.config.vt_features == "fused" else stages[n_support:]
            pooled_query = self._pool(query_stages, query_valid)

        # Video-video: AB-MHM between the fused stages (prototype f~ = concat_i f~_{S_i}; stage i
        # meets stage i, so the metric reads the stage packs directly).
        vv_logits = self.metric.stage_packs(
            fused_support, support_valid, labels, fused_query, query_valid, way, unit=memoised
        ) / self.metric_temperature()
        log_p_vv = F.log_softmax(vv_logits, dim=-1)

        scale = self.text_logit_scale()
        vt_logits = scale * self._stage_cosines(pooled_query, class_text)
        log_p_vt = F.log_softmax(vt_logits, dim=-1)

        if self.training:
            log_probs = log_p_vv  # training classifies with V-V only (paper, for stability)
        else:
            log_probs = geometric_mean_log_probs(log_p_vv, log_p_vt, self.config.alpha)
        parts: dict[str, torch.Tensor] = {"log_p_vv": log_p_vv.detach(), "log_p_vt": log_p_vt.detach()}

        loss = None
        if self.training and inputs.query_labels is not None:
            query_labels = inputs.query_labels.to(device)
            loss_vv = F.cross_entropy(vv_logits, query_labels)
            loss = loss_vv
            parts["loss_vv"] = loss_vv.detach()
            if self.config.contrastive_weight > 0:
                fused = torch.cat([fused_support, fused_query])
                targets_episode = torch.cat([labels, query_labels])
                loss_con = self._contrastive_loss(
                    self._pool(fused, torch.cat([support_valid, query_valid])), targets_episode, inputs.class_names,
                    class_text, scale
                )
                loss = loss + self.config.contrastive_weight * loss_con
                parts["loss_contrastive"] = loss_con.detach()
        return MethodOutput(log_probs=log_probs, loss=loss, parts=parts)

    def _contrastive_loss(
        self,
        pooled: torch.Tensor,
        episode_labels: torch.Tensor,
        class_names: list[str],
        class_text: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """Stage-level CE of cos(pooled stage, stage text) over the training (or episode) classes."""
        if self.training_classes is None:
            texts, targets = class_text, episode_labels
        else:
            unknown = [c for c in class_names if c not in self.training_class_index]
            if unknown:
                raise ValueError(f"lga: episode classes {unknown} are not among the training classes")
            device = pooled.device
            to_global = torch.tensor([self.training_class_index[c] for c in class_names], device=device)
            texts = self.space.text(self._class_texts(self.training_classes, device))
            targets = to_global[episode_labels]
        # (n, L, C): per-stage cosines, CE over classes, averaged over clips and stages.
        logits = scale * torch.einsum(
            "nlw,clw->nlc", F.normalize(pooled, dim=-1), F.normalize(texts, dim=-1)
        )
        num_stages = logits.shape[1]
        return F.cross_entropy(logits.flatten(0, 1), targets.repeat_interleave(num_stages))
