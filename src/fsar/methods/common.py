"""Plumbing every encoder-based method shares: backbone resolution, episode checks,
frame encoding (or cached features), metric resolution and K-shot prototypes.

Methods differ in what they do *after* the encoder (TPCM, prototype modulation, text
branch, losses); everything here is the part that must behave identically for all of
them so that every method runs on every backbone the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.encoders.base import Encoder
from fsar.methods.memo import ClipMemo
from fsar.methods.base import FewShotMethod
from fsar.metrics._common import class_means  # the one K-shot mean, shared with the metrics

__all__ = [
    "EncoderMethod",
    "Scale",
    "backbone_label",
    "check_metric_name",
    "make_config",
    "metric_label",
    "check_episode",
    "SHOT_HANDOFF",
    "class_means",
    "default_finetune",
    "resolve_finetune",
    "mix_log_probs",
    "resolve_encoder",
    "resolve_metric",
]

log = logging.getLogger(__name__)


def default_finetune(backbone: str | Encoder, preferred: str) -> str:
    """The fine-tuning mode a method asks of ``backbone`` when the user gives none.

    Only the CLIP backbones can be adapted or fine-tuned; every other backbone here
    (the embedded ``effnet-lite0+minilm`` pair) is always frozen, so a method that
    prefers ``"adapters"`` or ``"full"`` falls back to ``"frozen"`` there.
    """
    name = backbone.name if isinstance(backbone, Encoder) else str(backbone)
    return preferred if name.startswith("clip") else "frozen"


def resolve_finetune(backbone: str | Encoder, finetune: str | None, preferred: str, *, method: str) -> str:
    """The fine-tuning mode to build with (registry name) or that a ready encoder already has.

    A ready :class:`Encoder` keeps its own mode (its ``finetune`` attribute, else ``"frozen"``
    or ``"trainable"`` from :attr:`Encoder.is_frozen`); asking it for another mode is an error.
    """
    if not isinstance(backbone, Encoder):
        return finetune or default_finetune(backbone, preferred)
    actual = getattr(backbone, "finetune", None) or ("frozen" if backbone.is_frozen else "trainable")
    if finetune is not None and finetune != actual:
        raise ValueError(
            f"{method}: finetune={finetune!r} does not apply to a ready encoder, which is {actual!r}; "
            "build the encoder with that mode, or pass the backbone name"
        )
    return actual


def resolve_encoder(
    backbone: str | Encoder,
    *,
    weights: str | Path | None,
    finetune: str,
    encoder_options: dict[str, Any] | None,
    method: str,
) -> Encoder:
    """Build the encoder from a registry name, or take a ready :class:`Encoder`.

    ``weights``/``finetune``/``encoder_options`` only apply when building by name; passing
    them with a ready encoder is an error (they would be silently ignored otherwise).
    """
    if isinstance(backbone, Encoder):
        if weights is not None or encoder_options:
            raise ValueError(
                f"{method}: weights/encoder_options are only used when backbone is a registry "
                f"name, not with a ready Encoder ({type(backbone).__name__})"
            )
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(
            f"{method}: backbone must be a registry name or an fsar Encoder, got {type(backbone).__name__}"
        )
    from fsar.encoders import create_encoder

    options = dict(encoder_options or {})
    return create_encoder(
        backbone,
        weights=None if weights is None else str(weights),
        finetune=finetune,
        **options,
    )


def resolve_metric(
    metric: str | nn.Module, options: dict[str, Any] | None, *, method: str, feature_dim: int | None = None
) -> nn.Module:
    """``fsar.metrics.build(name, **options)``, or a ready metric module (for experiments).

    Metrics with learned weights sized by the feature width (TRX) get ``feature_dim`` (the
    width the method feeds them) unless the options set it.
    """
    if isinstance(metric, nn.Module):
        if options:
            raise ValueError(f"{method}: metric_options only apply when metric is a name")
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"{method}: metric must be a fsar.metrics name or an nn.Module, got {metric!r}")
    from fsar import metrics

    options = dict(options or {})
    if metric.startswith("trx") and feature_dim is not None:
        options.setdefault("feature_dim", feature_dim)
    return metrics.build(metric, **options)


def check_metric_name(metric: str | nn.Module, *, method: str) -> None:
    """Fail on an unknown metric name *before* building a (possibly large) encoder."""
    if isinstance(metric, str):
        from fsar import metrics

        if metric not in metrics.available():
            raise ValueError(f"{method}: unknown metric {metric!r}; available: {', '.join(metrics.available())}")


def backbone_label(backbone: str | Encoder) -> str:
    """What the JSON config records for a backbone given as name or ready encoder."""
    return backbone.name if isinstance(backbone, Encoder) else str(backbone)


#: How a method hands a class's K support clips to its metric (one vocabulary with the
#: metrics' ``shots``): "prototype" = the mean of the K enhanced clips (the metric sees one
#: clip per class); "metric" = every clip, combined as the metric's own ``shots`` says.
SHOT_HANDOFF = ("prototype", "metric")

#: Options renamed in 0.2; the old spelling is accepted (with a warning) for one release, so
#: configs and checkpoints written before still build. old name -> (new name, value map).
RENAMED_OPTIONS = {"prototype": ("shots", {"mean": "prototype", "raw": "metric"})}


def _renamed(values: dict[str, Any], known: set[str], *, method: str) -> dict[str, Any]:
    values = dict(values)
    for old, (new, value_map) in RENAMED_OPTIONS.items():
        if old in values and old not in known and new in known:
            value = values.pop(old)
            mapped = value_map.get(value, value)
            log.warning("%s: option %s=%r is deprecated; use %s=%r", method, old, value, new, mapped)
            values.setdefault(new, mapped)
    return values


def make_config(config_cls, *, method: str, **values):
    """Build a config dataclass, turning unknown options and values of the wrong type into a clear
    :class:`~fsar.errors.ModelError` (``-O alpha=notanumber``: "option alpha: expected a number")."""
    import typing

    from fsar.engine.config import coerce_value
    from fsar.errors import ConfigError, ModelError

    known = {f.name for f in dataclasses.fields(config_cls)}
    values = _renamed(values, known, method=method)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelError(f"{method}: unknown option(s) {unknown}; known options: {sorted(known)}")
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved: no type check
        hints = {}
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = coerce_value(value, hints[key], f"{method}: option {key}") if key in hints else value
        except ConfigError as error:
            if "unsupported config type" in str(error):
                checked[key] = value  # e.g. a module instance: the constructor checks it
                continue
            raise ModelError(str(error)) from None
    return config_cls(**checked)


def configure_method(
    config_cls,
    *,
    method: str,
    backbone: str | Encoder,
    weights: str | Path | None,
    finetune: str | None,
    preferred_finetune: str,
    metric: str | nn.Module | None = None,
    options: dict[str, Any],
):
    """The constructor preamble every encoder method shares, in one order: resolve the
    fine-tuning mode, build and validate the config (unknown options fail before anything
    is built), check the metric name, then build or take the encoder.

    Returns ``(config, encoder)``. ``metric`` is recorded in the config only for methods
    that have one (``metric=None`` leaves the config without a ``metric`` value).
    """
    finetune = resolve_finetune(backbone, finetune, preferred_finetune, method=method)
    values: dict[str, Any] = dict(
        backbone=backbone_label(backbone),
        weights=None if weights is None else str(weights),
        finetune=finetune,
        **options,
    )
    if metric is not None:
        values["metric"] = metric_label(metric)
    config = make_config(config_cls, method=method, **values)
    config.validate()
    if metric is not None:
        check_metric_name(metric, method=method)
    encoder = resolve_encoder(
        backbone, weights=weights, finetune=finetune, encoder_options=config.encoder_options, method=method
    )
    return config, encoder


def metric_label(metric: str | nn.Module) -> str:
    """What the JSON config records for a metric given as name or module."""
    return metric if isinstance(metric, str) else f"module:{type(metric).__name__}"


def check_episode(inputs: EpisodeInputs, *, method: str) -> None:
    """Reject malformed episodes with a message naming the problem (never guess)."""
    support, query, labels = inputs.support, inputs.query, inputs.support_labels
    want = 3 if inputs.features else 5
    kind = "features (n, T, D)" if inputs.features else "frames (n, T, C, H, W)"
    for name, tensor in (("support", support), ("query", query)):
        if tensor.dim() != want:
            raise ValueError(f"{method}: {name} must be {kind}, got shape {tuple(tensor.shape)}")
    if support.shape[1] != query.shape[1]:
        raise ValueError(
            f"{method}: support and query must have the same number of frames T, "
            f"got {support.shape[1]} and {query.shape[1]}"
        )
    if labels.dim() != 1 or labels.shape[0] != support.shape[0]:
        raise ValueError(
            f"{method}: support_labels must be ({support.shape[0]},), got {tuple(labels.shape)}"
        )
    way = inputs.way
    if way < 1:
        raise ValueError(f"{method}: the episode has no class names")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= way):
        raise ValueError(f"{method}: support_labels must lie in 0..{way - 1}, got {labels.tolist()}")
    missing = sorted(set(range(way)) - set(labels.tolist()))
    if missing:
        raise ValueError(
            f"{method}: classes {[inputs.class_names[c] for c in missing]} have no support clip"
        )
    if inputs.query_labels is not None:
        q = inputs.query_labels
        if q.dim() != 1 or q.shape[0] != query.shape[0]:
            raise ValueError(f"{method}: query_labels must be ({query.shape[0]},), got {tuple(q.shape)}")
        if q.numel() and (int(q.min()) < 0 or int(q.max()) >= way):
            raise ValueError(f"{method}: query_labels must lie in 0..{way - 1}, got {q.tolist()}")


def mix_log_probs(log_p_a: torch.Tensor, log_p_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """``log(w·p_a + (1−w)·p_b)`` computed in log space (exact at w = 0 and w = 1)."""
    if weight_a >= 1.0:
        return log_p_a
    if weight_a <= 0.0:
        return log_p_b
    return torch.logaddexp(log_p_a + math.log(weight_a), log_p_b + math.log1p(-weight_a))


class Scale(nn.Module):
    """A positive multiplier kept as a log, learnable or fixed, optionally capped.

    Used for CLIP-style logit scales (init 100, capped at 100 as CLIP does) and for the
    temperature applied to metric logits.
    """

    def __init__(self, init: float, *, learnable: bool, max_value: float | None = None) -> None:
        super().__init__()
        if init <= 0:
            raise ValueError(f"Scale: init must be positive, got {init}")
        log_value = torch.tensor(math.log(init), dtype=torch.float32)
        if learnable:
            self.log_value = nn.Parameter(log_value)
        else:
            self.register_buffer("log_value", log_value)
        self.max_value = max_value

    def forward(self) -> torch.Tensor:
        value = self.log_value.exp()
        return value if self.max_value is None else value.clamp(max=self.max_value)


class EncoderMethod(FewShotMethod):
    """A :class:`FewShotMethod` built around one :class:`Encoder`.

    Handles the two input kinds of :class:`EpisodeInputs`: frames go through
    ``encoder.encode_frames``; cached features (``features=True``) are accepted only
    when the encoder is frozen, because a trainable encoder would have produced
    different features than the cache holds.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self._encoder_frozen: bool | None = None
        #: per-clip results of evaluation from the cache (fsar.methods.memo); forgotten on train()/eval()
        self.clip_memo = ClipMemo()
        if self.encoder_frozen:
            encoder.eval()

    @property
    def encoder_frozen(self) -> bool:
        """``encoder.is_frozen``, remembered between :meth:`train` / :meth:`eval` calls.

        ``is_frozen`` walks every parameter (266 µs for the embedded pair, several times per
        episode); the engine calls ``train()``/``eval()`` before every loop, which re-reads it,
        so a change of ``requires_grad`` made before a loop is seen.
        """
        if self._encoder_frozen is None:
            self._encoder_frozen = bool(self.encoder.is_frozen)
        return self._encoder_frozen

    @property
    def backbone_name(self) -> str:
        return self.encoder.name

    def encoder_is_frozen(self) -> bool:
        return self.encoder_frozen

    def train(self, mode: bool = True) -> "EncoderMethod":
        # Every mode switch (the engine's before each loop) re-reads is_frozen and forgets the
        # per-clip memory of the last evaluation.
        self._encoder_frozen = None
        self.clip_memo.clear()
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self.clip_memo.clear()  # remembered per-clip results belong to the old weights
        return super().load_state_dict(*args, **kwargs)

    def _encode(self, tensor: torch.Tensor, text_features: torch.Tensor | None, features: bool) -> torch.Tensor:
        if features:
            if tensor.shape[-1] != self.encoder.feature_dim:
                raise ValueError(
                    f"{self.name}: cached features have D={tensor.shape[-1]} but backbone "
                    f"{self.backbone_name} gives D={self.encoder.feature_dim}"
                )
            return tensor.float()
        if self.encoder_frozen:
            with torch.no_grad():
                return self.encoder.encode_frames(tensor, text_features)
        return self.encoder.encode_frames(tensor, text_features)

    def encode_episode(
        self,
        inputs: EpisodeInputs,
        *,
        support_text: torch.Tensor | None = None,
        need_support: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """-> support (n_support, T, D) (or None if not needed), query (n_query, T, D).

        ``support_text`` (n_support, D_text) goes to the support branch only; the query
        branch never receives text.
        """
        check_episode(inputs, method=self.name)
        if inputs.features and not self.encoder_frozen:
            raise ValueError(
                f"{self.name}: cached features (features=True) need a frozen encoder, but "
                f"{self.backbone_name} trains here (fine-tuned or adapted); pass frames instead"
            )
        support = (
            self._encode(inputs.support, support_text, inputs.features) if need_support else None
        )
        query = self._encode(inputs.query, None, inputs.features)
        rows = inputs.cached_rows if inputs.features else None
        if rows is not None and ClipMemo.applies(self, True, query):
            # The cache's names of these very rows: the per-clip memory finds them by name.
            if support is not None:
                self.clip_memo.note(support, rows.rows_of(inputs.support))
            self.clip_memo.note(query, rows.rows_of(inputs.query))
        return support, query
