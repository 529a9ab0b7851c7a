"""Matching metrics: query vs. support frame sequences -> class logits.

Every metric is an ``nn.Module`` called as ``metric(support, support_labels, query, way)`` with
support ``(n_support, T, D)``, support_labels ``(n_support,)`` in ``0..way-1``, query
``(n_query, T, D)``; it returns logits ``(n_query, way)``, higher = more likely, differentiable
end to end, vectorised over all query-support pairs (no Python loop over pairs or classes).

``build(name, **options)`` / ``available()``:

=====================  ==========================================================================
``proto``              prototype matching on frame means (:class:`PrototypeMetric`)
``otam``               OTAM (:class:`OTAM`); default: reference recursion, λ 0.1, exact cosine,
                       both directions averaged, distances averaged over shots
``bimhm``              Bi-MHM of HyRSM (:class:`BiMHM`); default: mean reduction, prototype shots
``abmhm``              AB-MHM of LGA (:class:`ABMHM`), stages as extra keyword arguments
``trx``                TRX (:class:`TRX`); needs ``feature_dim=``
``mpmm``               FSAR-LLaVA's training-free multi-cue metric (:class:`MPMM`); optional
                       ``support_text=``/``query_text=`` add the textual cues
=====================  ==========================================================================

Presets reproduce the original heads of ``../shared/reference`` (see its README):
``otam_plain`` (tobyperrett CNN_OTAM), ``otam_clipfsar`` (CNN_OTAM_CLIPFSAR),
``bimhm_hyrsm1shot``, ``bimhm_hyrsm5shot``, ``proto_tsn_cos``, ``proto_tsn_sqeuclid``
(CNN_TSN). Options given to a preset override its settings. TRX weights of the original load
with :func:`trx_from_reference`.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from fsar.metrics.hausdorff import ABMHM, BiMHM
from fsar.metrics.mpmm import MPMM, MPMMResult
from fsar.metrics.stages import stage_mask, uniform_boundaries
from fsar.metrics.otam import OTAM, otam_cum_dist
from fsar.metrics.proto import PrototypeMetric
from fsar.metrics.trx import TRX, trx_from_reference
from fsar.registry import Registry

METRICS: Registry[nn.Module] = Registry("metric")


def _preset(factory: Callable[..., nn.Module], **settings: Any) -> Callable[..., nn.Module]:
    def build_preset(**overrides: Any) -> nn.Module:
        return factory(**{**settings, **overrides})

    return build_preset


METRICS.register("proto")(PrototypeMetric)
METRICS.register("otam")(OTAM)
METRICS.register("bimhm")(BiMHM)
METRICS.register("abmhm")(ABMHM)
METRICS.register("trx")(TRX)
METRICS.register("mpmm")(MPMM)

# reference README §1b: λ 0.1, directions summed, OTAM distances averaged over a class's clips
METRICS.register("otam_plain")(
    _preset(OTAM, lam=0.1, variant="reference", combine="sum", shots="distance", cosine="peer")
)
# reference README §1c: λ 0.5, directions summed, features averaged into a prototype first
METRICS.register("otam_clipfsar")(
    _preset(OTAM, lam=0.5, variant="reference", combine="sum", shots="prototype", cosine="peer")
)
# reference README §2: sum over frames; 1-shot head averages distances, 5-shot head features
METRICS.register("bimhm_hyrsm1shot")(_preset(BiMHM, reduction="sum", shots="distance"))
METRICS.register("bimhm_hyrsm5shot")(_preset(BiMHM, reduction="sum", shots="prototype"))
# reference README §4: mean of per-video peer cosines; -squared distance to the mean prototype
METRICS.register("proto_tsn_cos")(
    _preset(PrototypeMetric, distance="cos", shots="distance", cosine="peer")
)
METRICS.register("proto_tsn_sqeuclid")(
    _preset(PrototypeMetric, distance="sqeuclid", shots="prototype")
)


def build(name: str, **options: Any) -> nn.Module:
    """Build metric ``name`` (see :func:`available`) with keyword ``options``."""
    return METRICS.build(name, **options)


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return METRICS.names()


__all__ = [
    "ABMHM",
    "METRICS",
    "MPMM",
    "MPMMResult",
    "OTAM",
    "TRX",
    "BiMHM",
    "PrototypeMetric",
    "available",
    "build",
    "otam_cum_dist",
    "stage_mask",
    "trx_from_reference",
    "uniform_boundaries",
]
