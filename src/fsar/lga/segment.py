"""Visual anatomy for LGA: split a video's frame features into L atomic action stages.

Three strategies, all returning stage *boundaries* ``(B, L + 1)`` (stage i covers the
frames ``boundaries[:, i] <= t < boundaries[:, i + 1]``, contiguous, non-empty, covering
all T frames):

* :func:`cluster_segment` -- **CLUSTER-Segment** (LGA, ICCV 2025): every frame starts as
  its own cluster; the most cosine-similar *adjacent* pair of clusters is merged until L
  clusters remain. Clusters are represented by the mean of their L2-normalised frame
  features (centroid linkage, recomputed after each merge); ties go to the earliest pair.
  Because every video performs exactly T - L merges, the whole batch is merged in lock
  step with tensor operations (no per-video Python loop), on the T x T Gram matrix of the
  frames, so the cost is independent of the feature width.
* :func:`uniform_segment` -- **HARD**: L equal chunks (the ablation baseline).
* :func:`tw_finch_segment` -- **TW-FINCH** (Sarfraz et al., CVPR 2021): temporally
  weighted first-neighbour clustering, cut to exactly L clusters; it is not constrained
  to temporal neighbours, so its clusters are turned into contiguous stages by time.

:func:`fsar.metrics.stages.stage_mask` then adds the **overlap** frames (o frames shared
across each internal border, as LGA does for robustness) and returns a ``(B, L, T)`` boolean
membership mask -- the form ``fsar.metrics`` AB-MHM accepts, and the one definition both
use -- and
:func:`gather_stages` packs the stages into a padded ``(B, L, n_max, D)`` tensor with a
``(B, L, n_max)`` validity mask for the fusion module.

Segmentation choices are discrete, so they are computed on detached features; the stage
features are gathered from the original tensor, so gradients still reach the backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsar.metrics.stages import uniform_boundaries

__all__ = [
    "SEGMENTATIONS",
    "cluster_segment",
    "gather_stages",
    "segment",
    "tw_finch_segment",
    "uniform_segment",
]


def _check_features(features: torch.Tensor, num_stages: int) -> None:
    if features.dim() != 3:
        raise ValueError(f"expected frame features (B, T, D), got shape {tuple(features.shape)}")
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if features.shape[1] < num_stages:
        raise ValueError(
            f"cannot split {features.shape[1]} frames into {num_stages} non-empty stages"
        )


def cluster_segment(features: torch.Tensor, num_stages: int) -> torch.Tensor:
    """CLUSTER-Segment: ``features`` (B, T, D) -> stage boundaries (B, L + 1) int64.

    Agglomerative clustering that only merges temporal neighbours: start from T
    singleton clusters, merge the adjacent pair whose centroids have the highest cosine
    similarity (earliest pair on ties), repeat until ``num_stages`` clusters remain.
    """
    _check_features(features, num_stages)
    batch, num_frames, _ = features.shape
    device = features.device
    # Everything runs on the (B, T, T) Gram matrix of the unit frames, so the cost does not
    # depend on D: for clusters A and B with member indicators m_A, m_B,
    # cos(mean_A, mean_B) = m_A G m_B / sqrt(m_A G m_A * m_B G m_B). float64 keeps merges of
    # identical frames exact ties, so the earliest pair wins.
    unit = F.normalize(features.detach().to(torch.float64), dim=-1)
    gram = unit @ unit.transpose(1, 2)  # (B, T, T)
    members = torch.eye(num_frames, dtype=torch.float64, device=device).expand(batch, -1, -1)  # (B, K, T)
    starts = torch.arange(num_frames, device=device).expand(batch, -1)  # (B, K) first frame of each cluster
    rows = torch.arange(batch, device=device)
    for clusters in range(num_frames, num_stages, -1):
        pair_dots = members @ gram @ members.transpose(1, 2)  # (B, K, K) = sum_A . sum_B
        norms_sq = pair_dots.diagonal(dim1=1, dim2=2)  # (B, K)
        adjacent = pair_dots.diagonal(offset=1, dim1=1, dim2=2)  # (B, K - 1)
        similarity = adjacent / (norms_sq[:, :-1] * norms_sq[:, 1:]).sqrt().clamp_min(1e-300)
        merge = similarity.argmax(dim=1)  # first maximum = earliest pair
        # Cluster merge+1 folds into cluster merge; new index k reads old k (k <= merge) or k + 1.
        new_index = torch.arange(clusters - 1, device=device).expand(batch, -1)
        source = new_index + (new_index > merge[:, None]).long()
        absorbed = (new_index == merge[:, None]).to(members.dtype)  # (B, K - 1)
        partner = members[rows, merge + 1]  # (B, T)
        members = torch.gather(members, 1, source[..., None].expand(-1, -1, num_frames))
        members = members + absorbed[..., None] * partner[:, None]
        starts = torch.gather(starts, 1, source)
    ends = torch.full((batch, 1), num_frames, dtype=torch.long, device=device)
    return torch.cat([starts.long(), ends], dim=1)


def uniform_segment(
    num_frames: int, num_stages: int, *, batch: int = 1, device: torch.device | str | None = None
) -> torch.Tensor:
    """HARD segmentation: ``num_stages`` near-equal chunks -> boundaries (batch, L + 1).

    The split of :func:`fsar.metrics.stages.uniform_boundaries` (T = 8, L = 3: stages of 3, 2, 3).
    """
    return uniform_boundaries(num_frames, num_stages, batch=batch, device=device)


def tw_finch_segment(features: torch.Tensor, num_stages: int) -> torch.Tensor:
    """TW-FINCH cut to ``num_stages`` clusters, as contiguous stages: (B, T, D) -> (B, L + 1).

    Each round links every cluster to its first neighbour under the temporally weighted
    distance ``(1 - cos) * |t_i - t_j| / T`` (cluster time = mean frame index) and takes
    the connected components as the next partition. When a round would drop below
    ``num_stages`` clusters, the closest pair is merged one at a time instead (FINCH's
    "required clusters" refinement). The final clusters are ordered by mean time and
    stage i gets as many frames as cluster i has, so temporally contiguous clusters are
    reproduced exactly and interleaved ones become contiguous, non-empty stages of the
    same sizes (AB-MHM needs contiguous stages).
    """
    _check_features(features, num_stages)
    out = []
    for video in features.detach().to(torch.float64):
        out.append(_tw_finch_one(video, num_stages))
    return torch.stack(out).to(features.device)


def _tw_finch_distance(centroids: torch.Tensor, times: torch.Tensor, num_frames: int) -> torch.Tensor:
    unit = F.normalize(centroids, dim=-1)
    feature_distance = 1.0 - unit @ unit.T
    temporal_distance = (times[:, None] - times[None, :]).abs() / num_frames
    distance = feature_distance.clamp_min(0) * temporal_distance
    distance.fill_diagonal_(float("inf"))
    return distance


def _tw_finch_one(video: torch.Tensor, num_stages: int) -> torch.Tensor:
    num_frames = video.shape[0]
    assignment = torch.arange(num_frames)  # frame -> cluster id
    frame_times = torch.arange(num_frames, dtype=torch.float64)

    def summarise(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = labels.max().item() + 1
        sizes = torch.bincount(labels, minlength=count).to(torch.float64)
        centroids = torch.zeros(count, video.shape[1], dtype=torch.float64).index_add_(0, labels, video)
        times = torch.zeros(count, dtype=torch.float64).index_add_(0, labels, frame_times)
        return centroids / sizes[:, None], times / sizes

    while assignment.max().item() + 1 > num_stages:
        centroids, times = summarise(assignment)
        count = centroids.shape[0]
        neighbour = _tw_finch_distance(centroids, times, num_frames).argmin(dim=1)
        # Connected components of the first-neighbour graph (undirected), by label propagation.
        labels = torch.arange(count)
        for _ in range(count):
            merged = torch.minimum(labels, labels[neighbour])
            merged = merged.scatter_reduce(0, neighbour, labels, reduce="amin")
            if torch.equal(merged, labels):
                break
            labels = merged
        _, labels = torch.unique(labels, return_inverse=True)
        if labels.max().item() + 1 >= num_stages and labels.max().item() + 1 < count:
            assignment = labels[assignment]
            continue
        # Would fall below num_stages (or made no progress): merge the closest pair only.
        distance = _tw_finch_distance(centroids, times, num_frames)
        flat = int(distance.argmin())
        a, b = sorted(divmod(flat, count))
        labels = torch.arange(count)
        labels[b] = a
        _, labels = torch.unique(labels, return_inverse=True)
        assignment = labels[assignment]
    _, times = summarise(assignment)
    sizes = torch.bincount(assignment, minlength=times.numel())
    borders = torch.cumsum(sizes[torch.argsort(times)], 0)
    return torch.cat([torch.tensor([0]), borders])


SEGMENTATIONS = ("cluster", "uniform", "tw-finch")


def segment(features: torch.Tensor, num_stages: int, method: str = "cluster") -> torch.Tensor:
    """Stage boundaries (B, L + 1) of ``features`` (B, T, D) by ``method`` in :data:`SEGMENTATIONS`."""
    if method == "cluster":
        return cluster_segment(features, num_stages)
    if method == "uniform":
        _check_features(features, num_stages)
        return uniform_segment(
            features.shape[1], num_stages, batch=features.shape[0], device=features.device
        )
    if method == "tw-finch":
        return tw_finch_segment(features, num_stages)
    raise ValueError(f"unknown segmentation {method!r}; available: {', '.join(SEGMENTATIONS)}")


def gather_stages(
    features: torch.Tensor, membership: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack stages: features (B, T, D) + membership (B, L, T) -> ((B, L, n_max, D), (B, L, n_max)).

    Each stage's frames are kept in time order; slots past a stage's length are zero and
    marked False in the validity mask. Gradients flow to ``features``.
    """
    batch, num_frames, dim = features.shape
    if membership.shape[0] != batch or membership.shape[2] != num_frames:
        raise ValueError(
            f"membership {tuple(membership.shape)} does not match features {tuple(features.shape)}"
        )
    lengths = membership.sum(-1)  # (B, L)
    n_max = int(lengths.max())
    frames = torch.arange(num_frames, device=features.device)
    # Members first, in time order: sort key t for members, T + t for the rest.
    order = torch.argsort(torch.where(membership, frames, frames + num_frames), dim=-1)[..., :n_max]
    valid = torch.arange(n_max, device=features.device) < lengths[..., None]  # (B, L, n_max)
    num_stages = membership.shape[1]
    flat_index = order.reshape(batch, num_stages * n_max)
    gathered = torch.gather(features, 1, flat_index[..., None].expand(-1, -1, dim))
    gathered = gathered.reshape(batch, num_stages, n_max, dim) * valid[..., None]
    return gathered, valid
