"""Mean-Hausdorff matching: Bi-MHM (HyRSM, Wang et al. CVPR 2022) and AB-MHM (LGA, ICCV 2025).

Frame distance ``d(x, y) = 1 - cos(x, y)`` with the exact cosine (``F.normalize``), as HyRSM.

**Bi-MHM** between frame sets Q and S::

    Bi-MHM(Q, S) = red_{x in Q} min_{y in S} d(x, y) + red_{y in S} min_{x in Q} d(x, y)

``reduction="mean"`` is the paper; ``reduction="sum"`` is what HyRSM's code does (reference
README §2). Shots: ``shots="prototype"`` compares with the frame-wise mean of a class's *raw*
support features (``CNN_HyRSM_5shot``, used by HyRSM for every shot > 1); ``shots="distance"``
averages the per-clip distances over the class (``CNN_HyRSM_1shot``).

**AB-MHM** (Aligned Bidirectional Mean Hausdorff Metric, ``../shared/specs/lga.md`` §5.1): each
clip is cut into L ordered atomic stages and query stage i is matched only with the support
stage i::

    AB-MHM(q, c) = (1/L) Σ_i [ mean_{x in Q_i} min_{y in S_i^c} d(x, y)
                              + mean_{y in S_i^c} min_{x in Q_i} d(x, y) ]

Stages come in as arguments (LGA's CLUSTER-Segment produces them); by default the clips are cut
into ``num_stages`` uniform chunks (the HARD split). A stage specification per clip is either

* a boolean membership mask ``(n, L, T)`` — the general form: stages may overlap (the frames
  CLUSTER-Segment shares between neighbouring stages) but must each be non-empty; or
* integer boundaries ``(n, L + 1)`` ``[0, b_1, ..., b_{L-1}, T]``, strictly increasing
  (a convenience; use :func:`stage_mask` with ``overlap`` to add shared frames).

A 2-D mask ``(L, T)`` or 1-D boundaries ``(L + 1,)`` apply to every clip.

K-shot (spec §4, [proposed]): ``shots="union"`` (default) takes the class's stage-i frame set as
the union of its K support clips' stage-i frames; ``shots="distance"`` averages the per-clip
AB-MHM over the class's shots instead. The optional relaxation ``neighbor_window = w > 0`` lets
query stage i match the best support stage j with ``|i - j| <= w`` at a penalty ``beta |i - j|``
(this breaks the Q/S symmetry; off by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar.metrics import _native
from fsar.metrics._common import (
    check_choice,
    frame_dots_and_norms,
    check_finite_logits,
    class_index,
    class_means,
    shot_average_matrix,
    unit_frame_cosine,
    validate_episode,
)
from fsar.metrics.stages import stage_mask, uniform_boundaries

REDUCTIONS = ("mean", "sum")
BIMHM_SHOTS = ("prototype", "distance")
ABMHM_SHOTS = ("union", "distance")
_NOT_IN_STAGE = 4.0  # > the largest cosine distance (2)


def hausdorff_distances(dists: Tensor, reduction: str = "mean") -> Tensor:
    """Bi-MHM from frame distances ``(..., T_q, T_s)`` -> ``(...)``."""
    reduce = torch.mean if reduction == "mean" else torch.sum
    query_to_support = reduce(dists.amin(-1), -1)  # each query frame to its nearest support frame
    support_to_query = reduce(dists.amin(-2), -1)  # each support frame to its nearest query frame
    return query_to_support + support_to_query


def _fused_bimhm(
    query: Tensor, targets: Tensor, *, reduction: str, labels: Tensor | None, way: int
) -> Tensor | None:
    """The head's logits ``(n_query, way)`` from one C pass after the product (cosines, nearest
    frames, sums, directions, class averages over ``labels``; None when the targets are the
    classes), for float32 CPU calls without autograd; None otherwise, or when a cosine is not
    finite (the torch path then carries the NaN to the error check)."""
    kernels = _native.float32_kernels(query, targets)
    if kernels is None:
        return None
    if torch.is_grad_enabled() and (query.requires_grad or targets.requires_grad):
        return None
    n_query, t_query, _ = query.shape
    n_targets, t_targets, _ = targets.shape
    dots, query_norm, target_norm = frame_dots_and_norms(query, targets, clamp=True)  # F.normalize's clamp
    sums = dots.new_empty((2, n_query, n_targets), dtype=torch.float64)
    logits = dots.new_empty((n_query, way))
    mean = reduction == "mean"
    status = kernels.bimhm_cosine_f32(
        dots.data_ptr(), query_norm.data_ptr(), target_norm.data_ptr(), n_query, t_query, n_targets, t_targets,
        sums[0].data_ptr(), sums[1].data_ptr(), 1.0 / t_query if mean else 1.0, 1.0 / t_targets if mean else 1.0,
        None if labels is None else labels.data_ptr(), way, logits.data_ptr(),
    )
    return logits if status == 1 else None


def bimhm_distances(query: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Bi-MHM between every query and target clip on the exact cosine -> ``(n_query, n_targets)``.

    Equals ``hausdorff_distances(1 - unit_frame_cosine(query, targets))`` in fewer passes: the
    nearest frame under ``1 - cos`` is the one of largest cosine, and a query frame's norm
    factors out of its cosines, so only the targets are normalised (the smaller side in the
    usual episode), the product is divided by the query-frame norms once, and the two
    directions are ``T - sum(max cos)``. (:class:`BiMHM` runs all of it after the product in
    one C pass when no gradient is needed: :func:`_fused_bimhm`.)
    """
    n_query, t_query, dim = query.shape
    n_targets, t_targets, _ = targets.shape
    unit_targets = F.normalize(targets, dim=-1)
    query_norm = query.norm(dim=-1).clamp_min(1e-12)  # F.normalize's clamp
    dots = query.reshape(n_query * t_query, dim) @ unit_targets.reshape(n_targets * t_targets, dim).T
    cos = dots.view(n_query, t_query, n_targets, t_targets) / query_norm[:, :, None, None]
    query_to_support = t_query - cos.amax(-1).sum(1)  # each query frame to its nearest target frame
    support_to_query = t_targets - cos.amax(1).sum(-1)  # each target frame to its nearest query frame
    if reduction == "mean":
        return query_to_support / t_query + support_to_query / t_targets
    return query_to_support + support_to_query


class BiMHM(nn.Module):
    """Bi-directional Mean Hausdorff Metric head (HyRSM). logits = ``-Bi-MHM``.

    Args:
        reduction: ``"mean"`` over frames (paper) or ``"sum"`` (HyRSM code).
        shots: ``"prototype"`` (raw-feature class mean first) or ``"distance"`` (average per clip).
    """

    def __init__(self, *, reduction: str = "mean", shots: str = "prototype") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, REDUCTIONS, metric="bimhm")
        self.shots = check_choice("shots", shots, BIMHM_SHOTS, metric="bimhm")

    def extra_repr(self) -> str:
        return f"reduction={self.reduction}, shots={self.shots}"

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> Tensor:
        support, support_labels, query = validate_episode(
            support, support_labels, query, way, metric="bimhm"
        )
        if self.shots == "prototype":
            targets = class_means(support, support_labels, way)  # (way, T_s, D)
        else:
            targets = support
        logits = _fused_bimhm(
            query, targets, reduction=self.reduction,
            labels=support_labels if self.shots == "distance" else None, way=way,
        )
        if logits is not None:
            return check_finite_logits(logits, support, query, metric="bimhm")
        distance = bimhm_distances(query, targets, self.reduction)  # (n_query, n_targets)
        if self.shots == "distance":
            distance = distance @ shot_average_matrix(support_labels, way, distance.dtype)
        return check_finite_logits(-distance, support, query, metric="bimhm")


# ----------------------------------------------------------------------------- stages


def _as_stage_mask(
    stages: Tensor | None, *, count: int, num_frames: int, num_stages: int, who: str, device
) -> Tensor:
    """Normalise a stage specification to a bool mask ``(count, L, T)`` (module docstring)."""
    if stages is None:  # uniform HARD split: valid by construction, no checks needed
        try:
            mask = stage_mask(uniform_boundaries(num_frames, num_stages, device=device), num_frames)
        except ValueError as error:
            raise ValueError(f"metric 'abmhm': {error}") from None
        return mask[None].expand(count, -1, -1)
    stages = torch.as_tensor(stages, device=device)
    if stages.dtype == torch.bool:
        mask = stages
        if mask.dim() == 2:
            mask = mask[None].expand(count, -1, -1)
        if mask.dim() != 3 or mask.shape[0] != count or mask.shape[2] != num_frames:
            raise ValueError(
                f"metric 'abmhm': {who}_stages mask must be ({count}, L, {num_frames}) or "
                f"(L, {num_frames}), got {tuple(stages.shape)}"
            )
        empty = ~mask.any(-1)  # (count, L)
        if bool(empty.any()):
            clip, stage = (int(v) for v in torch.nonzero(empty)[0])
            raise ValueError(f"metric 'abmhm': {who} clip {clip} has an empty stage {stage}")
        return mask
    if stages.dim() == 2 and stages.shape[0] != count:
        raise ValueError(
            f"metric 'abmhm': {who}_stages boundaries must be ({count}, L+1) or (L+1,), "
            f"got {tuple(stages.shape)}"
        )
    try:
        mask = stage_mask(stages, num_frames)
    except ValueError as error:
        raise ValueError(f"metric 'abmhm': {who}_stages: {error}") from None
    return mask[None].expand(count, -1, -1) if mask.dim() == 2 else mask


def stage_hausdorff_matrix(
    dists: Tensor, query_mask: Tensor, target_mask: Tensor
) -> Tensor:
    """Bi-MHM (mean form) between every query stage i and target stage j.

    dists ``(n_q, n_t, T_q, T_t)``; query_mask ``(n_q, L, T_q)``; target_mask ``(n_t, L, T_t)``
    (bool, every stage non-empty) -> ``(n_q, n_t, L_i, L_j)``.
    """
    # Non-members get +4: cosine distances lie in [0, 2], so a penalised frame is never the
    # nearest one while the stage has a member (one broadcast add instead of clone + masked_fill).
    query_weight = query_mask.to(dists.dtype)
    target_weight = target_mask.to(dists.dtype)
    query_penalty = (1.0 - query_weight) * _NOT_IN_STAGE  # (n_q, L, T_q)
    target_penalty = (1.0 - target_weight) * _NOT_IN_STAGE  # (n_t, L, T_t)
    query_weight = query_weight / query_weight.sum(-1, keepdim=True)  # (n_q, L, T_q)
    target_weight = target_weight / target_weight.sum(-1, keepdim=True)  # (n_t, L, T_t)
    # nearest frame of target stage j for every query frame: (n_q, n_t, L_j, T_q)
    to_target = (dists[:, :, None] + target_penalty[None, :, :, None, :]).amin(-1)
    # nearest frame of query stage i for every target frame: (n_q, n_t, L_i, T_t)
    to_query = (dists[:, :, None] + query_penalty[:, None, :, :, None]).amin(-2)
    query_side = torch.einsum("qtja,qia->qtij", to_target, query_weight)
    target_side = torch.einsum("qtib,tjb->qtij", to_query, target_weight)
    return query_side + target_side


def _class_index_of_few(labels: list[int], way: int, device) -> tuple[Tensor, Tensor]:
    """:func:`class_index` from labels already on the host (a few dozen ints: two tensors built
    in Python instead of a dozen kernels). Labels must be validated."""
    rows: list[list[int]] = [[] for _ in range(way)]
    for row, label in enumerate(labels):
        rows[label].append(row)
    max_shot = max(len(r) for r in rows)
    index = torch.tensor([r + [0] * (max_shot - len(r)) for r in rows], dtype=torch.long, device=device)
    valid = torch.tensor([[True] * len(r) + [False] * (max_shot - len(r)) for r in rows], device=device)
    return index, valid


def aligned_stage_pack_distances(
    query: Tensor, query_valid: Tensor, targets: Tensor, target_valid: Tensor, *, unit: bool = False
) -> Tensor:
    """Strictly aligned AB-MHM (``neighbor_window=0``) between clips given as stage packs.

    query ``(n_q, L, a, D)`` with query_valid ``(n_q, L, a)`` bool, targets ``(n_t, L, b, D)``
    with target_valid ``(n_t, L, b)`` (every stage has a valid slot) -> distances ``(n_q, n_t)``.
    Stage i of a query meets stage i of a target only, so only the L diagonal blocks of frame
    distances are formed (the concatenated form, :meth:`ABMHM.forward` on ``L * a`` frames, forms
    all L² blocks and uses L of them); equal to it up to float rounding. ``unit``: the frames
    are unit vectors already (normalised once per clip), so they are not normalised again.
    """
    n_q, num_stages, a, dim = query.shape
    n_t, _, b, _ = targets.shape
    # one batched product per stage: (L, n_q * a, D) x (L, D, n_t * b), kept in the stage-major layout
    if not unit:
        query, targets = F.normalize(query, dim=-1), F.normalize(targets, dim=-1)
    unit_q = query.transpose(0, 1).reshape(num_stages, n_q * a, dim)
    unit_t = targets.transpose(0, 1).reshape(num_stages, n_t * b, dim)
    dists = (1.0 - torch.bmm(unit_q, unit_t.transpose(1, 2))).view(num_stages, n_q, a, n_t, b)
    query_weight = query_valid.to(dists.dtype).transpose(0, 1)  # (L, n_q, a)
    target_weight = target_valid.to(dists.dtype).transpose(0, 1)  # (L, n_t, b)
    query_penalty = (1.0 - query_weight) * _NOT_IN_STAGE
    target_penalty = (1.0 - target_weight) * _NOT_IN_STAGE
    query_weight = query_weight / query_weight.sum(-1, keepdim=True)
    target_weight = target_weight / target_weight.sum(-1, keepdim=True)
    to_target = (dists + target_penalty[:, None, None]).amin(-1)  # (L, n_q, a, n_t)
    to_query = (dists + query_penalty[:, :, :, None, None]).amin(2)  # (L, n_q, n_t, b)
    query_side = (to_target * query_weight[..., None]).sum(2)  # (L, n_q, n_t)
    target_side = (to_query * target_weight[:, None]).sum(-1)  # (L, n_q, n_t)
    return (query_side + target_side).mean(0)


class ABMHM(nn.Module):
    """Aligned Bidirectional Mean Hausdorff Metric (LGA). logits = ``-AB-MHM``.

    Called as ``metric(support, support_labels, query, way, *, support_stages=None,
    query_stages=None)``; stage formats in the module docstring.

    Args:
        num_stages: L for the default uniform stages (3 in LGA).
        shots: ``"union"`` (class stage = union of its shots' stage frames) or ``"distance"``.
        neighbor_window: w >= 0; 0 = strict stage alignment (default).
        neighbor_penalty: β per stage of offset when ``neighbor_window > 0`` (0.1 in the spec).
    """

    def __init__(
        self,
        *,
        num_stages: int = 3,
        shots: str = "union",
        neighbor_window: int = 0,
        neighbor_penalty: float = 0.1,
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"metric 'abmhm': num_stages must be >= 1, got {num_stages}")
        if neighbor_window < 0:
            raise ValueError(f"metric 'abmhm': neighbor_window must be >= 0, got {neighbor_window}")
        self.num_stages = int(num_stages)
        self.shots = check_choice("shots", shots, ABMHM_SHOTS, metric="abmhm")
        self.neighbor_window = int(neighbor_window)
        self.neighbor_penalty = float(neighbor_penalty)

    def extra_repr(self) -> str:
        return (
            f"num_stages={self.num_stages}, shots={self.shots}, "
            f"neighbor_window={self.neighbor_window}, neighbor_penalty={self.neighbor_penalty}"
        )

    def _aligned(self, matrix: Tensor) -> Tensor:
        """``(..., L, L)`` stage-pair distances -> ``(...)`` AB-MHM."""
        num_stages = matrix.shape[-1]
        if self.neighbor_window == 0:
            return matrix.diagonal(dim1=-2, dim2=-1).mean(-1)
        stage = torch.arange(num_stages, device=matrix.device)
        offset = (stage[:, None] - stage[None, :]).abs()
        penalty = (self.neighbor_penalty * offset).to(matrix.dtype)
        penalty = penalty.masked_fill(offset > self.neighbor_window, float("inf"))
        return (matrix + penalty).amin(-1).mean(-1)

    def stage_packs(
        self,
        support: Tensor,
        support_valid: Tensor,
        support_labels: Tensor,
        query: Tensor,
        query_valid: Tensor,
        way: int,
        *,
        unit: bool = False,
    ) -> Tensor:
        """-AB-MHM logits ``(n_query, way)`` of clips given as stage packs (LGA's fused stages):
        support ``(n_support, L, n, D)`` with support_valid ``(n_support, L, n)`` bool, query
        ``(n_query, L, n, D)`` likewise. The same as :meth:`forward` on the packs laid side by
        side (stage i owning slots ``[i n, (i + 1) n)``); with strict alignment
        (``neighbor_window=0``) computed on the L diagonal blocks only. ``unit``: every valid slot
        holds a unit vector already (normalised once per clip; padded slots zero)."""
        if support.dim() != 4 or query.dim() != 4 or support.shape[1:2] != query.shape[1:2]:
            raise ValueError(
                f"metric 'abmhm': stage packs must be (n, L, slots, D) with one L, got support "
                f"{tuple(support.shape)} and query {tuple(query.shape)}"
            )
        if support_valid.shape != support.shape[:3] or query_valid.shape != query.shape[:3]:
            raise ValueError(
                f"metric 'abmhm': stage pack masks {tuple(support_valid.shape)} / {tuple(query_valid.shape)} do "
                f"not match the packs {tuple(support.shape[:3])} / {tuple(query.shape[:3])}"
            )
        if self.neighbor_window > 0:  # stage pairs off the diagonal count: the concatenated form
            def laid_out(packs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
                n, num_stages, slots, dim = packs.shape
                block = torch.eye(num_stages, dtype=torch.bool, device=valid.device)
                membership = (block[None, :, :, None] & valid[:, None]).reshape(n, num_stages, num_stages * slots)
                return packs.reshape(n, num_stages * slots, dim), membership

            sequence_s, mask_s = laid_out(support, support_valid)
            sequence_q, mask_q = laid_out(query, query_valid)
            return self(sequence_s, support_labels, sequence_q, way, support_stages=mask_s, query_stages=mask_q)
        # checks of ranks, sizes and labels on one stage's slots (views: no copy of the packs)
        _, support_labels, _ = validate_episode(support[:, 0], support_labels, query[:, 0], way, metric="abmhm")
        if support.dtype != query.dtype:
            dtype = torch.promote_types(support.dtype, query.dtype)
            support, query = support.to(dtype), query.to(dtype)
        if not bool(support_valid.any(-1).all() & query_valid.any(-1).all()):  # one host sync for both
            for who, valid in (("support", support_valid), ("query", query_valid)):
                empty = ~valid.any(-1)
                if bool(empty.any()):
                    clip, stage = (int(v) for v in torch.nonzero(empty)[0])
                    raise ValueError(f"metric 'abmhm': {who} clip {clip} has an empty stage {stage}")
        if self.shots == "distance":
            distance = aligned_stage_pack_distances(query, query_valid, support, support_valid, unit=unit)
            distance = distance @ shot_average_matrix(support_labels, way, distance.dtype)
            return check_finite_logits(-distance, support, query, metric="abmhm")
        # union: a class's stage i = the stage-i slots of all its shots side by side
        labels = support_labels.tolist()
        if labels == list(range(way)):  # one shot per class, in class order: the packs are the classes'
            class_packs, class_valid = support, support_valid
        else:
            index, valid = _class_index_of_few(labels, way, support.device)  # (way, max_shot)
            n_support, num_stages, slots, dim = support.shape
            max_shot = index.shape[1]
            # index_select rather than support[index]: the same rows, and a backward that adds
            # rows instead of an accumulating index_put (several ms on the grid backbone's packs)
            class_packs = support.index_select(0, index.flatten()).view(way, max_shot, num_stages, slots, dim)
            class_packs = class_packs.permute(0, 2, 1, 3, 4).reshape(way, num_stages, max_shot * slots, dim)
            class_valid = (support_valid[index] & valid[:, :, None, None]).permute(0, 2, 1, 3)
            class_valid = class_valid.reshape(way, num_stages, max_shot * slots)
        distance = aligned_stage_pack_distances(query, query_valid, class_packs, class_valid, unit=unit)
        return check_finite_logits(-distance, support, query, metric="abmhm")

    def forward(
        self,
        support: Tensor,
        support_labels: Tensor,
        query: Tensor,
        way: int,
        *,
        support_stages: Tensor | None = None,
        query_stages: Tensor | None = None,
    ) -> Tensor:
        support, support_labels, query = validate_episode(
            support, support_labels, query, way, metric="abmhm"
        )
        n_support, t_support, _ = support.shape
        n_query, t_query, _ = query.shape
        support_mask = _as_stage_mask(
            support_stages, count=n_support, num_frames=t_support,
            num_stages=self.num_stages, who="support", device=support.device,
        )  # (n_support, L, T_s)
        query_mask = _as_stage_mask(
            query_stages, count=n_query, num_frames=t_query,
            num_stages=self.num_stages, who="query", device=query.device,
        )  # (n_query, L, T_q)
        if support_mask.shape[1] != query_mask.shape[1]:
            raise ValueError(
                f"metric 'abmhm': support has {support_mask.shape[1]} stages, "
                f"query has {query_mask.shape[1]}"
            )
        num_stages = support_mask.shape[1]
        dists = 1.0 - unit_frame_cosine(query, support)  # (n_query, n_support, T_q, T_s)
        if self.shots == "distance":
            matrix = stage_hausdorff_matrix(dists, query_mask, support_mask)
            distance = self._aligned(matrix)  # (n_query, n_support)
            distance = distance @ shot_average_matrix(support_labels, way, distance.dtype)
            return check_finite_logits(-distance, support, query, metric="abmhm")
        # union: each class's shots side by side as one clip of max_shot * T_s frames
        index, valid = class_index(support_labels, way)  # (way, max_shot)
        max_shot = index.shape[1]
        class_dists = dists[:, index]  # (n_query, way, max_shot, T_q, T_s)
        class_dists = class_dists.permute(0, 1, 3, 2, 4).reshape(
            n_query, way, t_query, max_shot * t_support
        )
        class_mask = support_mask[index] & valid[:, :, None, None]  # (way, max_shot, L, T_s)
        class_mask = class_mask.permute(0, 2, 1, 3).reshape(way, num_stages, max_shot * t_support)
        matrix = stage_hausdorff_matrix(class_dists, query_mask, class_mask)
        return check_finite_logits(-self._aligned(matrix), support, query, metric="abmhm")
