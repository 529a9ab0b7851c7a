"""Shared pieces of the matching metrics: episode validation, frame cosines, shot reductions.

Every metric is called as ``metric(support, support_labels, query, way) -> logits`` with
support ``(n_support, T_s, D)``, support_labels ``(n_support,)`` in ``0..way-1``, query
``(n_query, T_q, D)`` and logits ``(n_query, way)`` (higher = more likely). Column ``c`` of the
logits always belongs to the support clips labelled ``c``.

Two cosines exist in the original code and both are kept, because results differ by ~1% on
unit-norm features (reference README, note 4):

* ``peer_frame_cosine``: ``<x, y> / (|x| |y| + eps)`` with eps = 0.01 added to the *product* of
  the norms (tobyperrett's and CLIP-FSAR's ``cos_sim``; used by OTAM, CLIP-FSAR and TSN).
* ``unit_frame_cosine``: ``F.normalize`` both sides (x / max(|x|, 1e-12)) then a dot product
  (HyRSM's Bi-MHM and the exact cosine used by our default heads).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

COSINES = ("exact", "peer")
PEER_COSINE_EPS = 0.01


def validate_episode(
    support: Tensor, support_labels: Tensor, query: Tensor, way: int, *, metric: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Check one episode and return ``(support, support_labels, query)`` in a common float dtype.

    Raises ``ValueError`` naming the metric and the problem: wrong ranks, mismatched feature
    sizes, labels outside ``0..way-1``, a class without any support clip. NaN/inf features are
    caught after the fact by :func:`check_finite_logits` (every metric propagates them into its
    logits), which saves a pass over all features on every call.
    """
    where = f"metric {metric!r}"
    if not isinstance(way, int) or isinstance(way, bool) or way < 1:
        raise ValueError(f"{where}: way must be a positive int, got {way!r}")
    for name, x in (("support", support), ("query", query)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"{where}: {name} must have shape (n, T, D), got {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"{where}: {name} is empty, shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{where}: {name} must be floating point, got {x.dtype}")
    if support.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"{where}: mismatched feature sizes: support has D={support.shape[-1]}, "
            f"query has D={query.shape[-1]}"
        )
    if not isinstance(support_labels, Tensor):
        support_labels = torch.as_tensor(support_labels)
    if support_labels.dim() != 1 or support_labels.shape[0] != support.shape[0]:
        raise ValueError(
            f"{where}: support_labels must have shape (n_support,) = ({support.shape[0]},), "
            f"got {tuple(support_labels.shape)}"
        )
    if support_labels.dtype.is_floating_point or support_labels.dtype == torch.bool:
        raise ValueError(f"{where}: support_labels must be integers, got {support_labels.dtype}")
    # long, contiguous and beside the features: the C kernels read the labels by pointer
    support_labels = support_labels.to(device=support.device, dtype=torch.long).contiguous()
    # one host sync; the checks then run in Python on a few dozen ints (faster than 4 kernels)
    present = set(support_labels.tolist())
    bad = sorted(v for v in present if not 0 <= v < way)
    if bad:
        raise ValueError(f"{where}: support_labels outside 0..{way - 1}: {bad}")
    if len(present) != way:
        empty = sorted(set(range(way)) - present)
        raise ValueError(f"{where}: class(es) {empty} have no support clip (way={way})")
    if support.dtype != query.dtype:
        dtype = torch.promote_types(support.dtype, query.dtype)
        support, query = support.to(dtype), query.to(dtype)
    return support, support_labels, query


def check_finite_logits(logits: Tensor, support: Tensor, query: Tensor, *, metric: str) -> Tensor:
    """Return ``logits``; if any is NaN/inf, raise ``ValueError`` naming NaN or inf features.

    Non-finite logits from finite features are returned as they are (the original OTAM's naive
    float32 soft-min overflows to inf, which ``stable=False`` reproduces on purpose).
    """
    if math.isfinite(float(logits.detach().sum())):  # any NaN/inf makes the sum NaN/inf: one kernel
        return logits
    for name, x in (("support", support), ("query", query)):
        if bool(torch.isnan(x).any()):
            raise ValueError(f"metric {metric!r}: NaN in {name} features")
        if bool(torch.isinf(x).any()):
            raise ValueError(f"metric {metric!r}: inf in {name} features")
    return logits


def frame_dots_and_norms(query: Tensor, targets: Tensor, *, clamp: bool) -> tuple[Tensor, Tensor, Tensor]:
    """What the C kernels read: the frame-dot matrix ``(n_q * T_q, n_t * T_s)`` in its natural
    layout ``[q, i, t, j]`` and the frame norms ``(n_q * T_q,)``, ``(n_t * T_s,)``, clamped at
    1e-12 as ``F.normalize`` does when ``clamp``. Differentiable."""
    n_query, t_query, dim = query.shape
    n_targets, t_targets, _ = targets.shape
    query_flat = query.reshape(n_query * t_query, dim)
    target_flat = targets.reshape(n_targets * t_targets, dim)
    query_norm, target_norm = query_flat.norm(dim=-1), target_flat.norm(dim=-1)
    if clamp:
        query_norm, target_norm = query_norm.clamp_min(1e-12), target_norm.clamp_min(1e-12)
    return query_flat @ target_flat.T, query_norm, target_norm


def shot_average_matrix(support_labels: Tensor, way: int, dtype: torch.dtype) -> Tensor:
    """``(n_support, way)`` matrix M with ``M[s, c] = [label_s == c] / n_c``.

    ``x @ M`` averages a per-support-clip quantity ``x (..., n_support)`` over each class's
    shots; ``M.T @ f`` gives class means of per-clip features. Labels must be validated.
    """
    classes = torch.arange(way, device=support_labels.device)
    one_hot = (support_labels[:, None] == classes).to(dtype)  # no host sync, unlike F.one_hot
    return one_hot / one_hot.sum(0, keepdim=True)


def class_means(features: Tensor, labels: Tensor, way: int) -> Tensor:
    """Mean over each class's support items: ``(n_support, ...) -> (way, ...)``.

    The one K-shot prototype of fsar: metrics average raw frame features with it
    (``shots="prototype"``), methods their enhanced support clips. Labels must be validated
    (every class present). With one shot per class the prototypes are the clips themselves
    (``features`` as it is, when on the CPU the labels are already in class order).
    """
    if features.shape[0] == way:
        # One shot per class (validated labels are then a permutation): each prototype is its
        # clip, exactly what the averaging product gives, without a pass over every feature
        # (on wide frames, such as the grid backbone's, that pass costs as much as a matmul).
        if labels.device.type == "cpu" and torch.equal(labels, torch.arange(way)):  # no device sync on the CPU
            return features
        return features.index_select(0, torch.argsort(labels))
    average = shot_average_matrix(labels, way, features.dtype)
    return (average.T @ features.flatten(1)).view(way, *features.shape[1:])


def class_index(support_labels: Tensor, way: int) -> tuple[Tensor, Tensor]:
    """Support clips grouped by class, padded to the largest shot count.

    Returns ``index (way, max_shot)`` of support rows (padding points at row 0) and
    ``valid (way, max_shot)`` bool. Lets a metric gather ``(way, max_shot, ...)`` blocks
    without a Python loop over classes, for any (possibly unequal) shot counts.
    """
    counts = torch.bincount(support_labels, minlength=way)
    max_shot = int(counts.max())
    order = torch.argsort(support_labels, stable=True)
    sorted_labels = support_labels[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=order.device) - starts[sorted_labels]
    index = torch.zeros(way, max_shot, dtype=torch.long, device=order.device)
    valid = torch.zeros(way, max_shot, dtype=torch.bool, device=order.device)
    index[sorted_labels, rank] = order
    valid[sorted_labels, rank] = True
    return index, valid


def _pairwise_frame_dots(a: Tensor, b: Tensor) -> Tensor:
    """``a (n_a, T_a, D)``, ``b (n_b, T_b, D)`` -> dot products ``(n_a, n_b, T_a, T_b)``."""
    n_a, t_a, dim = a.shape
    n_b, t_b, _ = b.shape
    dots = a.reshape(n_a * t_a, dim) @ b.reshape(n_b * t_b, dim).T
    return dots.view(n_a, t_a, n_b, t_b).permute(0, 2, 1, 3)


def peer_frame_cosine(a: Tensor, b: Tensor, eps: float = PEER_COSINE_EPS) -> Tensor:
    """The originals' ``cos_sim``: ``<x, y> / (|x| |y| + eps)``, all frame pairs.

    ``a (n_a, T_a, D)``, ``b (n_b, T_b, D)`` -> ``(n_a, n_b, T_a, T_b)``.
    """
    norm_a = a.norm(dim=-1)  # (n_a, T_a)
    norm_b = b.norm(dim=-1)  # (n_b, T_b)
    denominator = norm_a[:, None, :, None] * norm_b[None, :, None, :] + eps
    return _pairwise_frame_dots(a, b) / denominator


def unit_frame_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Exact cosine via ``F.normalize`` (HyRSM convention), all frame pairs ``(n_a, n_b, T_a, T_b)``."""
    return _pairwise_frame_dots(F.normalize(a, dim=-1), F.normalize(b, dim=-1))


def frame_cosine(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """Dispatch on ``kind`` in :data:`COSINES`."""
    if kind == "exact":
        return unit_frame_cosine(a, b)
    if kind == "peer":
        return peer_frame_cosine(a, b)
    raise ValueError(f"unknown cosine {kind!r}; choose from {COSINES}")


def check_choice(name: str, value: str, choices: tuple[str, ...], *, metric: str) -> str:
    """Validate a string option at construction time (fail early, with the allowed values)."""
    if value not in choices:
        raise ValueError(f"metric {metric!r}: {name}={value!r}; choose from {choices}")
    return value
