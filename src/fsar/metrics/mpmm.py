"""MPMM: FSAR-LLaVA's training-free Multimodal Prototype Matching Metric (spec ``fsar_llava.md`` section 7).

Nothing here learns (no ``nn.Parameter``). For every query q and class c four cue scores are formed
from the visual frames V (n, T, d) and textual vectors t (n, d) of MFEM/CTPC:

=============  =====================================================================================
``temporal``   s1 = -OTAM(V_q, P_v^c): frame distance 1 - cos, both directions averaged, λ 0.5
``global``     s2 = cos(mean_T V_q, mean_T P_v^c)
``text``       s3 = cos(t_q, P_t^c)
``cross``      s4 = cos(mean_T V_q, P_t^c)
=============  =====================================================================================

Each cue is standardised across the C classes, ``z_m = (s_m - mean_c) / (std_c + eps)``, and turned into
``p_m = softmax_c(z_m / τ)`` (τ 0.5). The confidence of cue m for a query is its top-1 minus top-2 margin
``γ_m``; the cues are then fused (``fusion=``):

* ``soft`` (default): ``w = softmax_m(γ_m / κ + log π_m)`` (κ 0.05), ``p = Σ_m w_m p_m``;
* ``hard``: the single cue with the largest ``γ_m / κ + log π_m``;
* ``equal``: fixed weights ``w ∝ π`` (equal without a prior; the spec's ablation (iii)).

π is the optional α prior (``alpha=``): α for the textual cues (text, cross), 1 - α for the visual ones
(temporal, global); None = uniform. It enters as a log-prior on the cue weights, our reading of
"multiply the text cues by α and the visual cues by 1 - α before the softmax" [proposed].

With a single cue MPMM is nearest-prototype classification on that cue: its log-probabilities are
``log_softmax(z / τ)``, a monotone map of the cue score, so the arg-max is the closest prototype.

Two ways to call it:

* :meth:`MPMM.match` with the prototypes already built (FSAR-LLaVA's CTPC): returns an
  :class:`MPMMResult` with the fused log-probabilities, the per-cue logits ``z/τ`` (for the per-cue
  training loss), the raw scores and the cue weights;
* the metric form shared by ``fsar.metrics``: ``mpmm(support, support_labels, query, way,
  support_text=None, query_text=None) -> (n_query, way)`` log-probabilities, prototypes as class means
  (the textual one re-normalised). ``cues="auto"`` (the default) uses the textual cues only when texts
  are given; a cue list that names a textual cue without texts is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar.metrics import _native
from fsar.metrics._common import check_choice, check_finite_logits, class_means, validate_episode
from fsar.metrics.otam import OTAM

__all__ = ["CUES", "FUSIONS", "MPMM", "MPMMResult", "TEXT_CUES", "VISUAL_CUES"]

CUES = ("temporal", "global", "text", "cross")
VISUAL_CUES = ("temporal", "global")
TEXT_CUES = ("text", "cross")
FUSIONS = ("soft", "hard", "equal")


@dataclass
class MPMMResult:
    """log_probs (n_query, C): fused prediction. cue_logits (n_query, C, M): z_m / τ per cue.
    scores (n_query, C, M): the raw cue scores s_m. weights (n_query, M): the cue weights w.
    cues: the M cue names in order."""

    log_probs: Tensor
    cue_logits: Tensor
    scores: Tensor
    weights: Tensor
    cues: tuple[str, ...]


def _check_cues(cues: Sequence[str] | str) -> tuple[str, ...] | None:
    if cues == "auto":
        return None
    if isinstance(cues, str):
        cues = tuple(c.strip() for c in cues.split(",") if c.strip())
    cues = tuple(cues)
    unknown = [c for c in cues if c not in CUES]
    if not cues or unknown or len(set(cues)) != len(cues):
        raise ValueError(f"metric 'mpmm': cues must be distinct names from {CUES} (or 'auto'), got {cues!r}")
    return cues


class MPMM(nn.Module):
    """The training-free multi-cue metric; see the module docstring.

    Args:
        cues: which cue scores to fuse, a subset of :data:`CUES` in any order, or ``"auto"``.
        fusion: ``soft`` | ``hard`` | ``equal``.
        tau: temperature τ of the per-cue softmax over classes.
        kappa: temperature κ of the soft cue selection.
        alpha: optional prior weight of the textual cues (visual: 1 - α), in [0, 1].
        otam_lambda: OTAM's soft-min temperature for the temporal cue.
        eps: added to the per-class standard deviation.
    """

    def __init__(
        self,
        *,
        cues: Sequence[str] | str = "auto",
        fusion: str = "soft",
        tau: float = 0.5,
        kappa: float = 0.05,
        alpha: float | None = None,
        otam_lambda: float = 0.5,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.cues = _check_cues(cues)
        self.fusion = check_choice("fusion", fusion, FUSIONS, metric="mpmm")
        if not tau > 0 or not kappa > 0 or not eps > 0:
            raise ValueError(f"metric 'mpmm': tau, kappa and eps must be > 0, got {tau}, {kappa}, {eps}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"metric 'mpmm': alpha must be in [0, 1] or None, got {alpha}")
        self.tau, self.kappa, self.alpha, self.eps = float(tau), float(kappa), alpha, float(eps)
        if self.cues is not None:
            self._log_prior(self.cues)  # a prior that rules out every chosen cue fails here
        self.otam = OTAM(lam=otam_lambda, variant="reference", directions="both", combine="mean",
                         shots="prototype", cosine="exact")

    def extra_repr(self) -> str:
        return (f"cues={self.cues or 'auto'}, fusion={self.fusion}, tau={self.tau}, kappa={self.kappa}, "
                f"alpha={self.alpha}")

    def active_cues(self, with_text: bool) -> tuple[str, ...]:
        if self.cues is None:
            return CUES if with_text else VISUAL_CUES
        if not with_text and any(c in TEXT_CUES for c in self.cues):
            raise ValueError(
                f"metric 'mpmm': cues {[c for c in self.cues if c in TEXT_CUES]} need textual features "
                "(query and prototype texts); none were given"
            )
        return self.cues

    def _log_prior(self, cues: tuple[str, ...]) -> Tensor:
        if self.alpha is None:
            return torch.zeros(len(cues))
        prior = torch.tensor([self.alpha if c in TEXT_CUES else 1.0 - self.alpha for c in cues])
        if not (prior > 0).any():
            raise ValueError(f"metric 'mpmm': alpha={self.alpha} gives every chosen cue {cues} zero weight")
        return prior.log()

    # -- cues --------------------------------------------------------------------------------------
    def cue_scores(
        self,
        query_frames: Tensor,
        proto_frames: Tensor,
        query_text: Tensor | None = None,
        proto_text: Tensor | None = None,
        cues: tuple[str, ...] | None = None,
    ) -> Tensor:
        """(n_query, C, M) raw scores of ``cues`` (default: the active ones)."""
        cues = cues or self.active_cues(query_text is not None and proto_text is not None)
        way = proto_frames.shape[0]
        scores = []
        q_mean = F.normalize(query_frames.mean(1), dim=-1)
        for cue in cues:
            if cue == "temporal":
                labels = torch.arange(way, device=proto_frames.device)
                scores.append(self.otam(proto_frames, labels, query_frames, way))
            elif cue == "global":
                scores.append(q_mean @ F.normalize(proto_frames.mean(1), dim=-1).T)
            elif cue == "text":
                scores.append(F.normalize(query_text, dim=-1) @ F.normalize(proto_text, dim=-1).T)
            else:  # cross
                scores.append(q_mean @ F.normalize(proto_text, dim=-1).T)
        return torch.stack(scores, dim=-1)

    def standardise(self, scores: Tensor) -> Tensor:
        """z = (s - mean over classes) / (std over classes + eps), per query and cue."""
        mean = scores.mean(dim=1, keepdim=True)
        std = scores.std(dim=1, unbiased=False, keepdim=True)
        return (scores - mean) / (std + self.eps)

    # -- fusion ------------------------------------------------------------------------------------
    def fuse(self, scores: Tensor, cues: tuple[str, ...]) -> MPMMResult:
        """Fuse raw cue scores (n_query, C, M) into an :class:`MPMMResult`."""
        cue_logits = self.standardise(scores) / self.tau
        log_p = F.log_softmax(cue_logits, dim=1)  # (n_q, C, M)
        log_prior = self._log_prior(cues).to(scores.device, scores.dtype)
        n_query, way, m = scores.shape
        if self.fusion == "equal":
            weights = F.softmax(log_prior, dim=0).expand(n_query, m)
        else:
            p = log_p.exp()
            if way > 1:
                top2 = p.topk(2, dim=1).values  # (n_q, 2, M)
                gamma = top2[:, 0] - top2[:, 1]
            else:
                gamma = torch.zeros(n_query, m, dtype=scores.dtype, device=scores.device)
            selection = gamma / self.kappa + log_prior
            if self.fusion == "soft":
                weights = F.softmax(selection, dim=-1)
            else:
                weights = F.one_hot(selection.argmax(-1), m).to(scores.dtype)
        log_w = torch.where(weights > 0, weights.clamp_min(1e-45).log(), torch.full_like(weights, -math.inf))
        log_probs = torch.logsumexp(log_p + log_w[:, None, :], dim=-1)
        return MPMMResult(log_probs=log_probs, cue_logits=cue_logits, scores=scores, weights=weights, cues=cues)

    def match(
        self,
        query_frames: Tensor,
        proto_frames: Tensor,
        query_text: Tensor | None = None,
        proto_text: Tensor | None = None,
    ) -> MPMMResult:
        """Query frames (n_q, T, d) [+ texts (n_q, d)] against C prototypes (C, T, d) [+ (C, d)]."""
        if query_frames.dim() != 3 or proto_frames.dim() != 3 or query_frames.shape[-1] != proto_frames.shape[-1]:
            raise ValueError(
                f"metric 'mpmm': frames must be (n_query, T, d) and (C, T, d), got {tuple(query_frames.shape)} "
                f"and {tuple(proto_frames.shape)}"
            )
        with_text = query_text is not None and proto_text is not None
        if with_text and (query_text.shape != (query_frames.shape[0], query_text.shape[-1])
                          or proto_text.shape != (proto_frames.shape[0], query_text.shape[-1])):
            raise ValueError(
                f"metric 'mpmm': texts must be (n_query, d) and (C, d), got {tuple(query_text.shape)} "
                f"and {tuple(proto_text.shape)}"
            )
        cues = self.active_cues(with_text)
        if any(c == "cross" for c in cues) and proto_text.shape[-1] != query_frames.shape[-1]:
            raise ValueError("metric 'mpmm': the cross cue needs frames and texts of one width")
        scores = self.cue_scores(query_frames, proto_frames, query_text, proto_text, cues)
        return self.fuse(scores, cues)

    def match_episodes(
        self,
        query_frames: Tensor,
        proto_frames: Tensor,
        query_text: Tensor | None = None,
        proto_text: Tensor | None = None,
    ) -> list[MPMMResult]:
        """:meth:`match` of B episodes of one shape at once: query frames (B, n_q, T, d) [+ texts
        (B, n_q, d)] against (B, C, T, d) [+ (B, C, d)]; one result per episode, equal to ``match``
        of that episode up to float rounding (the fusion is per query, so it runs on all at once)."""
        if query_frames.dim() != 4 or proto_frames.dim() != 4 or query_frames.shape[0] != proto_frames.shape[0]:
            raise ValueError(
                f"metric 'mpmm': batched frames must be (B, n_query, T, d) and (B, C, T, d), got "
                f"{tuple(query_frames.shape)} and {tuple(proto_frames.shape)}"
            )
        batch, n_query = query_frames.shape[:2]
        way = proto_frames.shape[1]
        with_text = query_text is not None and proto_text is not None
        cues = self.active_cues(with_text)
        if batch == 1:
            scores = self.cue_scores(query_frames[0], proto_frames[0], None if not with_text else query_text[0],
                                     None if not with_text else proto_text[0], cues)
        else:
            q_mean = F.normalize(query_frames.mean(2), dim=-1)  # (B, n_q, d)
            columns = []
            for cue in cues:
                if cue == "temporal":
                    columns.append(self._temporal_episodes(query_frames, proto_frames))
                elif cue == "global":
                    columns.append(q_mean @ F.normalize(proto_frames.mean(2), dim=-1).transpose(1, 2))
                elif cue == "text":
                    columns.append(F.normalize(query_text, dim=-1) @ F.normalize(proto_text, dim=-1).transpose(1, 2))
                else:  # cross
                    columns.append(q_mean @ F.normalize(proto_text, dim=-1).transpose(1, 2))
            scores = torch.stack(columns, dim=-1).reshape(batch * n_query, way, len(cues))
        fused = self.fuse(scores, cues)
        return [
            MPMMResult(log_probs=fused.log_probs[rows], cue_logits=fused.cue_logits[rows], scores=fused.scores[rows],
                       weights=fused.weights[rows], cues=cues)
            for rows in (slice(b * n_query, (b + 1) * n_query) for b in range(batch))
        ]

    def _temporal_episodes(self, query_frames: Tensor, proto_frames: Tensor) -> Tensor:
        """The temporal cue of B episodes (B, n_q, C): the frame-dot matrices of all episodes in one
        batched product, then OTAM's C kernel once per episode on its block (what ``self.otam`` runs
        per episode: exact cosine, both directions averaged, the prototypes as targets). An episode
        the kernel refuses, or one with non-finite scores, takes ``self.otam`` (which says why)."""
        batch, n_query, t_query, dim = query_frames.shape
        way, t_proto = proto_frames.shape[1:3]
        labels = torch.arange(way, device=proto_frames.device)
        otam = self.otam

        def one(b: int) -> Tensor:
            return otam(proto_frames[b], labels, query_frames[b], way)

        kernels = _native.float32_kernels(query_frames, proto_frames)
        grad = torch.is_grad_enabled() and (query_frames.requires_grad or proto_frames.requires_grad)
        if kernels is None or grad or not otam.stable or otam.directions != "both" or otam.cosine != "exact":
            return torch.stack([one(b) for b in range(batch)])
        query = query_frames.reshape(batch, n_query * t_query, dim)
        protos = proto_frames.reshape(batch, way * t_proto, dim)
        dots = torch.bmm(query, protos.transpose(1, 2))  # (B, n_q T_q, C T_p), each block [q, i, c, j]
        query_norm = torch.linalg.vector_norm(query, dim=-1).clamp_min(1e-12)
        proto_norm = torch.linalg.vector_norm(protos, dim=-1).clamp_min(1e-12)
        totals = dots.new_empty((batch, 2, n_query * way), dtype=torch.float64)
        logits = dots.new_empty((batch, n_query, way))
        combine = 0.5 if otam.combine == "mean" else 1.0
        reference = int(otam.variant == "reference")
        for b in range(batch):
            status = kernels.otam_cosine_forward_f32(
                dots[b].data_ptr(), query_norm[b].data_ptr(), proto_norm[b].data_ptr(), n_query, t_query, way,
                t_proto, 0.0, otam.lam, 0b11, reference, totals[b].data_ptr(), combine, None, way,
                logits[b].data_ptr(),
            )
            if status != 1:
                logits[b] = one(b)
        finite = torch.isfinite(logits).flatten(1).all(1)
        if not bool(finite.all()):
            for b in (~finite).nonzero()[:, 0].tolist():
                logits[b] = one(b)  # raises, naming the problem (non-finite features)
        return logits

    def forward(
        self,
        support: Tensor,
        support_labels: Tensor,
        query: Tensor,
        way: int,
        support_text: Tensor | None = None,
        query_text: Tensor | None = None,
    ) -> Tensor:
        """The ``fsar.metrics`` form: class-mean prototypes -> fused log-probabilities (n_query, way)."""
        support, support_labels, query = validate_episode(support, support_labels, query, way, metric="mpmm")
        proto_frames = class_means(support, support_labels, way)
        proto_text = None
        if support_text is not None and query_text is not None:
            proto_text = F.normalize(class_means(support_text[:, None], support_labels, way)[:, 0], dim=-1)
        elif support_text is not None or query_text is not None:
            raise ValueError("metric 'mpmm': give both support_text and query_text, or neither")
        result = self.match(query, proto_frames, query_text if proto_text is not None else None, proto_text)
        return check_finite_logits(result.log_probs, support, query, metric="mpmm")
