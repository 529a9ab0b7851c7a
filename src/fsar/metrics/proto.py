"""Prototype matching (TSN-style): mean over frames, then compare with the class's shots.

Default (``proto``): ``p_c = mean over shots of the frame-mean``; ``logits = cos(q̄, p_c)``.
The two reference heads of tobyperrett's ``CNN_TSN`` are presets (reference README §4):

* ``proto_tsn_cos``: the **mean of per-video cosines** ``mean_{s in c} cos(q̄, s̄)`` with the
  +0.01 peer cosine (``shots="distance"``, ``cosine="peer"``), not the cosine to a mean prototype.
* ``proto_tsn_sqeuclid``: ``-|q̄ - p_c|²`` to the mean prototype.

Frame order is irrelevant here by construction (the mean over frames), unlike OTAM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsar.metrics._common import (
    class_means,
    COSINES,
    PEER_COSINE_EPS,
    check_choice,
    check_finite_logits,
    shot_average_matrix,
    validate_episode,
)

DISTANCES = ("cos", "sqeuclid")
SHOT_MODES = ("prototype", "distance")


def _cosine_matrix(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """``a (n_a, D)``, ``b (n_b, D)`` -> ``(n_a, n_b)`` cosines of the requested kind."""
    if kind == "peer":
        return (a @ b.T) / torch.outer(a.norm(dim=-1), b.norm(dim=-1)).add_(PEER_COSINE_EPS)
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return a @ b.T


def _neg_sq_euclid(a: Tensor, b: Tensor) -> Tensor:
    """``-|a_i - b_j|²`` as ``(n_a, n_b)``; computed from the differences, not the expansion,
    so that it stays exact for nearby points (query identical to a prototype -> exactly 0)."""
    return -((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


class PrototypeMetric(nn.Module):
    """Prototype / TSN matching on frame-averaged features.

    Args:
        distance: ``"cos"`` (similarity, higher = closer) or ``"sqeuclid"`` (negative squared
            Euclidean distance).
        shots: ``"prototype"`` averages each class's frame-mean features first (class prototype);
            ``"distance"`` scores every support clip and averages the scores per class.
        cosine: ``"exact"`` (F.normalize) or ``"peer"`` (+0.01 in the denominator).
    """

    def __init__(
        self, *, distance: str = "cos", shots: str = "prototype", cosine: str = "exact"
    ) -> None:
        super().__init__()
        self.distance = check_choice("distance", distance, DISTANCES, metric="proto")
        self.shots = check_choice("shots", shots, SHOT_MODES, metric="proto")
        self.cosine = check_choice("cosine", cosine, COSINES, metric="proto")

    def extra_repr(self) -> str:
        return f"distance={self.distance}, shots={self.shots}, cosine={self.cosine}"

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> Tensor:
        support, support_labels, query = validate_episode(
            support, support_labels, query, way, metric="proto"
        )
        support_mean = support.mean(1)  # (n_support, D)
        query_mean = query.mean(1)  # (n_query, D)
        if self.shots == "prototype":
            targets = class_means(support_mean, support_labels, way)  # (way, D)
        else:
            targets = support_mean  # (n_support, D)
        if self.distance == "cos":
            scores = _cosine_matrix(query_mean, targets, self.cosine)
        else:
            scores = _neg_sq_euclid(query_mean, targets)
        if self.shots == "distance":
            scores = scores @ shot_average_matrix(support_labels, way, scores.dtype)  # (n_query, way)
        return check_finite_logits(scores, support, query, metric="proto")
