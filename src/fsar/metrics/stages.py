"""Atomic action stages of a clip: one definition of stage boundaries and stage membership.

A clip of T frames cut into L ordered stages is described by integer **boundaries**
``[0, b_1, ..., b_{L-1}, T]`` (stage i covers ``b_i <= t < b_{i+1}``: contiguous, non-empty,
covering every frame). LGA (``../shared/specs/lga.md`` §3) then shares ``overlap`` frames across
each internal border, giving a boolean **membership** mask ``(L, T)`` per clip.

Both AB-MHM (:mod:`fsar.metrics.hausdorff`) and LGA's visual anatomy (:mod:`fsar.lga.segment`)
use these two functions, so the HARD split and the overlap rule have one meaning everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["stage_mask", "uniform_boundaries"]


def uniform_boundaries(
    num_frames: int, num_stages: int, *, batch: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """HARD split into ``num_stages`` near-equal contiguous chunks.

    Border i is the nearest integer to ``i·T/L`` (halves round up), so stage lengths differ by
    at most one and the split is symmetric in time: T = 8, L = 3 gives ``[0, 3, 5, 8]`` (3, 2, 3
    frames); T = 9, L = 3 gives ``[0, 3, 6, 9]``. Returns ``(L + 1,)``, or ``(batch, L + 1)`` when
    ``batch`` is given.
    """
    if num_stages < 1 or num_frames < num_stages:
        raise ValueError(f"cannot split {num_frames} frames into {num_stages} non-empty stages")
    # round(i T / L) in integer arithmetic: floor((2 i T + L) / 2L)
    borders = [(2 * i * num_frames + num_stages) // (2 * num_stages) for i in range(num_stages + 1)]
    bounds = torch.tensor(borders, dtype=torch.long, device=device)
    return bounds if batch is None else bounds.expand(batch, -1).clone()


def stage_mask(boundaries: Tensor, num_frames: int, *, overlap: int = 0) -> Tensor:
    """Boundaries ``(n, L + 1)`` (or ``(L + 1,)``) -> membership mask ``(n, L, T)`` (or ``(L, T)``).

    With ``overlap = o`` the first o frames of stage i + 1 are appended to stage i and the last
    o frames of stage i are prepended to stage i + 1 (lga.md §3), never reaching past the
    neighbouring stage; so with stages of at least o frames the mask holds T + 2·o·(L − 1)
    memberships (12 for T = 8, L = 3, o = 1).
    """
    boundaries = torch.as_tensor(boundaries)
    single = boundaries.dim() == 1
    if single:
        boundaries = boundaries[None]
    if boundaries.dim() != 2 or boundaries.shape[1] < 2:
        raise ValueError(f"stage boundaries must be (n, L+1) with L >= 1, got shape {tuple(boundaries.shape)}")
    if boundaries.dtype.is_floating_point or boundaries.dtype == torch.bool:
        raise ValueError(f"stage boundaries must be integers, got {boundaries.dtype}")
    if overlap < 0:
        raise ValueError(f"stage overlap must be >= 0, got {overlap}")
    boundaries = boundaries.long()
    bad_ends = (boundaries[:, 0] != 0) | (boundaries[:, -1] != num_frames)
    if bool(bad_ends.any()):
        row = int(torch.nonzero(bad_ends)[0])
        raise ValueError(
            f"stage boundaries must start at 0 and end at T={num_frames}; clip {row} has {boundaries[row].tolist()}"
        )
    starts, ends = boundaries[:, :-1], boundaries[:, 1:]
    not_increasing = (ends <= starts).any(1)
    if bool(not_increasing.any()):
        row = int(torch.nonzero(not_increasing)[0])
        raise ValueError(
            f"stage boundaries must rise strictly (non-empty stages); clip {row} has {boundaries[row].tolist()}"
        )
    # Stage i may reach back into stage i - 1 (not before its start) and forward into stage i + 1
    # (not past its end).
    previous_starts = torch.cat([starts[:, :1], starts[:, :-1]], dim=1)
    next_ends = torch.cat([ends[:, 1:], ends[:, -1:]], dim=1)
    lo = torch.maximum(starts - overlap, previous_starts)
    hi = torch.minimum(ends + overlap, next_ends)
    frames = torch.arange(num_frames, device=boundaries.device)
    mask = (frames >= lo[..., None]) & (frames < hi[..., None])  # (n, L, T)
    return mask[0] if single else mask
