"""Training-free baselines on frozen features: ``proto``, ``otam``, ``bimhm`` (frozen
encoder + that metric on the raw per-frame features) and ``zero-shot`` (query video vs
the episode's class texts, no support clips used).

Nothing here trains (``trainable = False``, no loss): the baselines measure what the
backbone's features give by themselves, the floor every trained method must beat.
The metric sees all support clips with their labels (``support_labels``) and applies
its own K-shot convention (e.g. prototypes for ``proto``).

``zero-shot`` needs a backbone whose frame and text features share one space (CLIP).
The embedded ``effnet-lite0+minilm`` pair has no such space (ImageNet CNN features
and MiniLM sentence embeddings were never aligned): an honest zero-shot matcher there
would first need a learned projection, i.e. training, so it raises ValueError instead of
returning chance-level numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.encoders.base import Encoder
from fsar.methods import METHODS
from fsar.methods.base import MethodOutput
from fsar.methods.common import (
    EncoderMethod,
    backbone_label,
    check_metric_name,
    make_config,
    metric_label,
    resolve_encoder,
    resolve_metric,
)
from fsar.methods.text_aware import initial_logit_scale
from fsar.methods.text_side import cosine_logits, text_bank_for

__all__ = ["FrozenMetricBaseline", "MetricBaselineConfig", "ZeroShot", "ZeroShotConfig"]


@dataclass
class MetricBaselineConfig:
    """Options of the ``proto``/``otam``/``bimhm`` baselines (JSON-able)."""

    backbone: str
    weights: str | None = None
    finetune: str = "frozen"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    #: the fsar.metrics name; defaults to the baseline's own name.
    metric: str = "otam"
    metric_options: dict[str, Any] = field(default_factory=dict)


class FrozenMetricBaseline(EncoderMethod):
    """Frozen encoder + one matching metric; log_probs = log_softmax(metric logits).

    Registered once per metric baseline (``proto``, ``otam``, ``bimhm``) as a subclass whose
    ``name`` is that metric; ``name`` may also be given here (and must be then, on this class).
    """

    trainable = False
    name = ""

    def __init__(
        self,
        *,
        backbone: str | Encoder,
        weights: str | Path | None = None,
        metric: str | nn.Module | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        name = name or type(self).name
        if not name:
            raise ValueError("FrozenMetricBaseline needs a name (the metric baseline it is)")
        metric = name if metric is None else metric
        config = make_config(
            MetricBaselineConfig,
            method=name,
            backbone=backbone_label(backbone),
            weights=None if weights is None else str(weights),
            metric=metric_label(metric),
            **options,
        )
        check_metric_name(metric, method=name)
        if config.finetune != "frozen":
            raise ValueError(f"{name}: a training-free baseline needs finetune='frozen', got {config.finetune!r}")
        encoder = resolve_encoder(
            backbone, weights=weights, finetune="frozen", encoder_options=config.encoder_options, method=name
        )
        if not encoder.is_frozen:
            raise ValueError(f"{name}: the backbone {encoder.name} has trainable parameters; baselines need it frozen")
        super().__init__(encoder)
        self.name = name
        self.config = config
        self.metric = resolve_metric(metric, config.metric_options, method=name, feature_dim=encoder.feature_dim)

    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        support, query = self.encode_episode(inputs)
        assert support is not None
        labels = inputs.support_labels.to(query.device)
        logits = self.metric(support, labels, query, inputs.way)
        return MethodOutput(log_probs=F.log_softmax(logits, dim=-1), loss=None, parts={})


def _register_metric_baseline(name: str) -> type[FrozenMetricBaseline]:
    baseline = type(
        f"{name.capitalize()}Baseline",
        (FrozenMetricBaseline,),
        {"name": name, "__doc__": f"Training-free baseline: frozen encoder + the ``{name}`` metric.",
         "__module__": __name__},
    )
    return METHODS.register(name)(baseline)


for _name in ("proto", "otam", "bimhm"):
    _register_metric_baseline(_name)


@dataclass
class ZeroShotConfig:
    """Options of the ``zero-shot`` baseline (JSON-able)."""

    backbone: str
    weights: str | None = None
    finetune: str = "frozen"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    #: softmax scale of the cosines; None = the encoder's CLIP logit scale (100 for OpenAI
    #: weights). Only calibrates the probabilities, never the ranking.
    logit_scale: float | None = None


@METHODS.register("zero-shot")
class ZeroShot(EncoderMethod):
    """Text-only matcher: ``softmax_C(s · cos(GAP_T F_Q, F_T))`` with the 16-template class
    texts (MA-FSAR Table 11). Support clips are not used (not even encoded)."""

    name = "zero-shot"
    trainable = False

    def __init__(self, *, backbone: str | Encoder, weights: str | Path | None = None, **options: Any) -> None:
        config = make_config(
            ZeroShotConfig,
            method=self.name,
            backbone=backbone_label(backbone),
            weights=None if weights is None else str(weights),
            **options,
        )
        if config.finetune != "frozen":
            raise ValueError(f"zero-shot: needs finetune='frozen', got {config.finetune!r}")
        if config.logit_scale is not None and config.logit_scale <= 0:
            raise ValueError(f"zero-shot: logit_scale must be positive, got {config.logit_scale}")
        encoder = resolve_encoder(
            backbone, weights=weights, finetune="frozen", encoder_options=config.encoder_options, method=self.name
        )
        if not encoder.shared_space:
            raise ValueError(
                f"zero-shot: backbone {encoder.name} has no shared video-text space (its frame "
                f"features, {encoder.feature_dim}-d, and text features, {encoder.text_dim}-d, were never "
                "aligned), so zero-shot matching is undefined without a learned projection; use a "
                "CLIP backbone, or a trained text-aware method such as ma-fsar"
            )
        super().__init__(encoder)
        self.config = config
        # Record the scale actually used, so the saved config reproduces the run by itself.
        config.logit_scale = self.logit_scale = config.logit_scale or initial_logit_scale(encoder)
        self.text_bank = text_bank_for(encoder)

    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        _, query = self.encode_episode(inputs, need_support=False)
        class_text = self.text_bank.features(list(inputs.class_names), train=False).detach().float()
        logits = cosine_logits(query.mean(1), class_text.to(query.device), self.logit_scale)
        return MethodOutput(log_probs=F.log_softmax(logits, dim=-1), loss=None, parts={})
