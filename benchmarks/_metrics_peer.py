"""Re-implementations of the original heads' *loop structure*, for honest speed comparisons.

Our own code, written from the conventions in ``../shared/reference/README.md``; it reproduces
how the originals compute (per-cell Python loop for OTAM, support repeated per query for HyRSM's
1-shot head, a Python loop over classes for TRX, list comprehensions over classes for the
reductions), so that ``benchmarks/metrics.py`` can time them beside ``fsar.metrics`` in one run.
Outputs are checked against ``fsar.metrics`` before timing.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def peer_cos_sim(x: Tensor, y: Tensor, epsilon: float = 0.01) -> Tensor:
    """The originals' cos_sim between rows: ``x (a, D)``, ``y (b, D)`` -> ``(a, b)``, one matmul,
    ``<x, y> / (|x| |y| + epsilon)``."""
    numerator = torch.matmul(x, y.T)
    denominator = torch.matmul(x.norm(dim=-1)[:, None], y.norm(dim=-1)[None, :]) + epsilon
    return numerator / denominator


def _frame_dists(query: Tensor, targets: Tensor) -> Tensor:
    """``1 - cos_sim`` of all frames as the originals lay it out: ``(n_q, n_t, T_q, T_t)``."""
    n_q, t_q, dim = query.shape
    n_t, t_t, _ = targets.shape
    sims = peer_cos_sim(query.reshape(-1, dim), targets.reshape(-1, dim))
    return 1 - sims.view(n_q, t_q, n_t, t_t).permute(0, 2, 1, 3)


def otam_cum_dist_cellwise(dists: Tensor, lam: float) -> Tensor:
    """OTAM recursion, one cell at a time (each cell op batched over the leading dims)."""
    dists = F.pad(dists, (1, 1), "constant", 0)  # (..., R, C+2)
    cum = torch.zeros(dists.shape)  # default dtype, as the originals
    rows, cols = dists.shape[-2], dists.shape[-1]
    for m in range(1, cols):
        cum[..., 0, m] = dists[..., 0, m] + cum[..., 0, m - 1]
    for l in range(1, rows):
        cum[..., l, 1] = dists[..., l, 1] - lam * torch.log(
            torch.exp(-cum[..., l - 1, 0] / lam)
            + torch.exp(-cum[..., l - 1, 1] / lam)
            + torch.exp(-cum[..., l, 0] / lam)
        )
        for m in range(2, cols - 1):
            cum[..., l, m] = dists[..., l, m] - lam * torch.log(
                torch.exp(-cum[..., l - 1, m - 1] / lam) + torch.exp(-cum[..., l, m - 1] / lam)
            )
        m = cols - 1
        cum[..., l, m] = dists[..., l, m] - lam * torch.log(
            torch.exp(-cum[..., l - 1, m - 1] / lam)
            + torch.exp(-cum[..., l - 1, m] / lam)
            + torch.exp(-cum[..., l, m - 1] / lam)
        )
    return cum[..., -1, -1]


def _class_rows(labels: Tensor, c: int) -> Tensor:
    return torch.nonzero(labels == c).flatten()


def otam_plain(support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
    """tobyperrett CNN_OTAM: OTAM per (query, support clip), both directions summed, class mean."""
    dists = _frame_dists(query, support)  # (n_q, n_s, T, T)
    cum = otam_cum_dist_cellwise(dists, 0.1) + otam_cum_dist_cellwise(dists.transpose(-1, -2), 0.1)
    class_dists = [cum.index_select(1, _class_rows(labels, c)).mean(1) for c in range(way)]
    return -torch.stack(class_dists, 1)


def otam_clipfsar(support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
    """CNN_OTAM_CLIPFSAR: class prototype clips first, then OTAM (λ 0.5), both directions summed."""
    protos = torch.stack([support.index_select(0, _class_rows(labels, c)).mean(0) for c in range(way)])
    dists = _frame_dists(query, protos)
    cum = otam_cum_dist_cellwise(dists, 0.5) + otam_cum_dist_cellwise(dists.transpose(-1, -2), 0.5)
    return -cum


def bimhm_hyrsm1shot(support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
    """CNN_HyRSM_1shot: the support set repeated for every query, normalised, one matmul."""
    n_q = query.shape[0]
    support_rep = support.unsqueeze(0).repeat(n_q, 1, 1, 1)  # (n_q, n_s, T, D)
    query_rep = query.unsqueeze(1)  # (n_q, 1, T, D)
    sims = torch.matmul(F.normalize(support_rep, dim=-1), F.normalize(query_rep, dim=-1).transpose(-1, -2))
    dists = 1 - sims  # (n_q, n_s, T_s, T_q)
    cum = dists.min(3)[0].sum(2) + dists.min(2)[0].sum(2)
    class_dists = [cum.index_select(1, _class_rows(labels, c)).mean(1) for c in range(way)]
    return -torch.stack(class_dists, 1)


def bimhm_hyrsm5shot(support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
    """CNN_HyRSM_5shot: raw-feature class prototypes first."""
    protos = torch.stack([support.index_select(0, _class_rows(labels, c)).mean(0) for c in range(way)])
    n_q = query.shape[0]
    protos_rep = protos.unsqueeze(0).repeat(n_q, 1, 1, 1)
    sims = torch.matmul(F.normalize(protos_rep, dim=-1), F.normalize(query.unsqueeze(1), dim=-1).transpose(-1, -2))
    dists = 1 - sims
    return -(dists.min(3)[0].sum(2) + dists.min(2)[0].sum(2))


def proto_tsn_cos(support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
    s = support.mean(1)
    q = query.mean(1)
    sims = peer_cos_sim(q, s)  # (n_q, n_s)
    return torch.stack([sims.index_select(1, _class_rows(labels, c)).mean(1) for c in range(way)], 1)


def proto_tsn_sqeuclid(support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
    s = support.mean(1)
    q = query.mean(1)
    protos = torch.stack([s.index_select(0, _class_rows(labels, c)).mean(0) for c in range(way)])
    return -((q.unsqueeze(1) - protos.unsqueeze(0)) ** 2).sum(-1)


class PeerTRX(torch.nn.Module):
    """TRX with the original's structure: tuples built by index_select per tuple, loop over classes.

    Shares the parameters of a :class:`fsar.metrics.TRX` (``source``) so outputs can be compared.
    """

    def __init__(self, source: torch.nn.Module, seq_len: int) -> None:
        super().__init__()
        self.source = source
        self.tuples = [
            [torch.tensor(t) for t in itertools.combinations(range(seq_len), tc.cardinality)]
            for tc in source.transformers
        ]

    def _one(self, tc, tuples, support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
        support = tc.pe(support)
        query = tc.pe(query)
        n_s, n_q = support.shape[0], query.shape[0]
        s = torch.stack([torch.index_select(support, -2, p).reshape(n_s, -1) for p in tuples], -2)
        q = torch.stack([torch.index_select(query, -2, p).reshape(n_q, -1) for p in tuples], -2)
        s_k = tc.norm_k(tc.k_linear(s))
        q_k = tc.norm_k(tc.k_linear(q))
        s_v = tc.v_linear(s)
        q_v = tc.v_linear(q)
        dists = torch.zeros(n_q, way)
        for c in range(way):
            rows = _class_rows(labels, c)
            k_c = torch.index_select(s_k, 0, rows)
            v_c = torch.index_select(s_v, 0, rows)
            k_c = k_c.reshape(-1, k_c.shape[-1])
            v_c = v_c.reshape(-1, v_c.shape[-1])
            scores = torch.matmul(q_k, k_c.T) / math.sqrt(tc.out_dim)  # (n_q, P, k*P)
            attention = F.softmax(scores, dim=-1)
            proto = torch.matmul(attention, v_c)  # (n_q, P, out)
            diff = q_v - proto
            dists[:, c] = diff.pow(2).sum((-2, -1)) / len(tuples)
        return -dists

    def forward(self, support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
        outs = [
            self._one(tc, tuples, support, labels, query, way)
            for tc, tuples in zip(self.source.transformers, self.tuples)
        ]
        return torch.stack(outs).mean(0)


PEER_HEADS = {
    "otam_plain": otam_plain,
    "otam_clipfsar": otam_clipfsar,
    "bimhm_hyrsm1shot": bimhm_hyrsm1shot,
    "bimhm_hyrsm5shot": bimhm_hyrsm5shot,
    "proto_tsn_cos": proto_tsn_cos,
    "proto_tsn_sqeuclid": proto_tsn_sqeuclid,
}
