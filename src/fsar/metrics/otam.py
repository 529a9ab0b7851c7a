"""OTAM: Ordered Temporal Alignment Module (Cao et al., CVPR 2020), batched over all pairs.

The frame distance is ``d = 1 - cos`` between every "from" frame (rows, R of them) and every
"to" frame (columns, C of them). A zero column is padded on the left and on the right of the
``(R, C)`` matrix, and a soft-min (temperature λ) dynamic programme accumulates the cost of a
monotone alignment from the left padding column to the bottom-right cell: every real column
(frame of the "to" sequence) is consumed once, the row advances by 0 or 1 between columns, and
the zero columns let the path enter and leave at any row for free.

Two variants of the recursion (``variant=``), indices on the padded matrix ``P = [0 | d | 0]``:

``"reference"`` — the widely used implementation (tobyperrett/few-shot-action-recognition
``OTAM_cum_dist``; CLIP-FSAR ``OTAM_cum_dist_v2`` is the same with λ = 0.5), reproduced exactly:

* row 0 is a plain (hard) prefix sum;
* the left padding column is never computed (stays 0);
* the *first real column* takes a 3-term soft-min ``(Cm[l-1,0]=0, Cm[l-1,1], Cm[l,0]=0)``, i.e. it
  allows a vertical move inside column 1 and always contains two ``exp(0)`` terms;
* middle columns: diagonal or horizontal predecessor only;
* the right padding column: 3-term soft-min (diagonal, vertical, horizontal).

``"paper"`` — the soft-DTW recursion as the OTAM paper writes it on the padded matrix, with
+inf outside the grid: padding columns take the 3-term soft-min, *every* real column (including
the first) the 2-term one. The left padding column is then exactly 0 and the first real column
is ``d[l, 0] + softmin(0, 0) = d[l, 0] - λ log 2`` for l > 0. The two variants differ only in
that first real column (the hard first row and the right padding column agree in exact
arithmetic). As λ -> 0 the paper variant tends to the hard minimum over monotone alignments.

Numerics (reference README note 2): the originals compute the soft-min naively,
``-λ log Σ exp(-a/λ)``, which in float32 at λ = 0.1 underflows to ``log 0 = inf`` once all
cumulative costs exceed ~10. fsar never does: ``stable=True`` (the default) matches the float64
reference outputs (``*_f64``) everywhere and stays finite where the peer's float32 gives inf;
``stable=False`` (reference variant only) reproduces the naive float32 behaviour, including its
inf, for comparisons.

Speed: all pairs (and both directions, which read the same distance matrices) run at once and
only the recursion over time is sequential. Two implementations of the same stable programme:

* the exp domain, in C (:class:`_ExpDomainOTAM`, ``kernels/matching.c``, compiled on first use
  by :mod:`fsar.metrics._native`). With ``E = exp(-Cm/λ)`` the soft-min of the predecessors is
  their plain sum, so a cell costs a multiply and an add, with no exp or log. Tables are float64
  and pairs are processed in cache-sized chunks; backward recomputes them (forward-backward
  rule), so an autograd-enabled forward costs what a no-grad one does. A total outside
  float64's safe range (very long clips, very small λ) sends the call to the log domain.
* the log domain, in torch (:class:`_ScaledOTAM`): ``X = -Cm/λ`` with ``logaddexp``, one
  vectorised step per column, and a hand-written backward. It runs without a C compiler, on
  CUDA, and where the exp domain cannot hold the values.

The originals instead loop in Python over all ``R x (C + 2)`` cells, each a handful of tiny
tensor ops.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fsar.metrics._common import (
    COSINES,
    PEER_COSINE_EPS,
    check_choice,
    check_finite_logits,
    class_means,
    frame_cosine,
    frame_dots_and_norms,
    shot_average_matrix,
    validate_episode,
)
from fsar.metrics import _native  # called through the module: one switch for every path

VARIANTS = ("reference", "paper")
DIRECTIONS = ("both", "query_to_support", "support_to_query")
COMBINES = ("mean", "sum")
SHOT_MODES = ("distance", "prototype")

_LOG2 = math.log(2.0)


def _first_column_(scaled: Tensor, out: Tensor, variant: str) -> None:
    """Write rows 1.. of the first real column ``X[l, 1]`` into ``out (R, B)`` (no autograd);
    row 0 (``E[0, 0]``) is already there."""
    first = scaled[0]
    if variant == "paper":
        torch.add(first[1:], _LOG2, out=out[1:])  # d[l, 0] + softmin(0, 0) for l > 0
        return
    log2 = scaled.new_tensor(_LOG2)
    for l in range(1, first.shape[0]):  # 3-term soft-min (0, X[l-1, 1], 0): sequential in l
        torch.logaddexp(out[l - 1], log2, out=out[l])
        out[l] += first[l]


def _last_column_weights(rows: int, like: Tensor) -> Tensor:
    """``w_l`` of the closed-form right padding column: log 2 for l < R-1, 0 for the last row."""
    weights = torch.full((rows, 1), _LOG2, dtype=like.dtype, device=like.device)
    weights[-1] = 0.0
    return weights


class _ScaledOTAM(torch.autograd.Function):
    """OTAM dynamic programme in the scaled log domain with a hand-written backward.

    Forward runs without building a graph, writing every column in place into one
    ``(C, R, B)`` buffer (2 kernels per column, no allocations); backward walks the columns in
    reverse with the soft-min weights ``exp(X_pred + E - X)``. This keeps the
    autograd-enabled forward as fast as the no-grad one. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, scaled: Tensor, variant: str) -> Tensor:  # type: ignore[override]
        cols, rows, batch = scaled.shape
        columns = torch.empty_like(scaled)  # X[:, m] for every real column m
        # row 0 has only the horizontal predecessor: the hard prefix sum, all columns at once
        torch.cumsum(scaled[:, 0], 0, out=columns[:, 0])
        _first_column_(scaled, columns[0], variant)
        # later columns, rows 1..: X[l, m] = E[l, m] + logaddexp(X[l-1, m-1], X[l, m-1])
        heads = columns[:, :-1].unbind(0)  # X[:-1, m] views
        tails = columns[:, 1:].unbind(0)  # X[1:, m] views
        scaled_tails = scaled[:, 1:].unbind(0)
        for m in range(1, cols):
            torch.logaddexp(heads[m - 1], tails[m - 1], out=tails[m])
            tails[m].add_(scaled_tails[m])
        result = torch.logsumexp(columns[-1] + _last_column_weights(rows, scaled), 0)
        ctx.save_for_backward(scaled, columns, result)
        ctx.variant = variant
        return result

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_result: Tensor):  # type: ignore[override]
        scaled, columns, result = ctx.saved_tensors
        cols, rows, _ = scaled.shape
        grad_scaled = torch.empty_like(scaled)
        # right padding column: result = logsumexp_l(X[C, l] + w_l)
        weights = _last_column_weights(rows, scaled)
        grad = torch.exp(columns[-1] + weights - result) * grad_result  # dResult/dX[:, C]  (R, B)
        for m in range(cols - 1, 0, -1):
            grad_scaled[m] = grad
            softmin = columns[m] - scaled[m]  # logaddexp of the predecessors
            previous = columns[m - 1]
            horizontal = torch.exp(previous - softmin)  # row 0: 1 (up to rounding)
            diagonal = torch.exp(previous[:-1] - softmin[1:])
            new_grad = grad * horizontal
            new_grad[:-1] += grad[1:] * diagonal
            grad = new_grad
        first = columns[0]
        if ctx.variant == "reference":
            grad = grad.clone()
            for l in range(rows - 1, 0, -1):  # X[l] = E[l] + logaddexp(X[l-1], log 2)
                grad[l - 1] += grad[l] * torch.exp(first[l - 1] - (first[l] - scaled[0, l]))
        grad_scaled[0] = grad
        return grad_scaled, None


# An OTAM head's reduction of the per-pair distances to logits, done in C (otam_totals_to_logits):
# distance = factor * sum over directions of -log E_total (factor = λ, halved when the two
# directions are averaged), then logits[q, c] = -mean of distance[q, t] over the targets t of
# class c (labels; None when the targets are the classes themselves). (factor, labels, way).
Head = tuple[float, "Tensor | None", int]


def _logits_from_totals(kernels, totals: Tensor, n_query: int, n_targets: int, head: Head, dtype) -> Tensor:
    factor, labels, way = head
    logits = totals.new_empty((n_query, way), dtype=dtype)
    float32 = dtype == torch.float32
    status = kernels.otam_totals_to_logits(
        totals.data_ptr(), totals.shape[0], n_query, n_targets, factor,
        None if labels is None else labels.data_ptr(), way,
        logits.data_ptr() if float32 else None, None if float32 else logits.data_ptr(),
    )
    if status != 1:
        raise MemoryError("metric 'otam': the C kernel could not allocate its working memory")
    return logits


class _ExpDomainOTAM(torch.autograd.Function):
    """OTAM dynamic programme in the exp domain, ``E = exp(-Cm/λ)``, run by the C kernel.

    There the soft-min of the predecessors is a plain sum, ``E[l,m] = w[l,m] (E[l-1,m-1] +
    E[l,m-1])`` with ``w = exp(-d/λ)``: no exp or log per cell (the log-domain
    :class:`_ScaledOTAM` needs a ``logaddexp`` per cell), and the whole programme is one call of
    ``kernels/matching.c`` instead of torch calls per column. The kernel keeps its tables in
    float64 and reports when a total leaves the safe range (very long clips or very small λ);
    :func:`_exp_domain_otam` then returns None and the log-domain programme runs instead.

    Forward receives what :func:`_exp_domain_otam` computed (the weights and the totals), so
    that the fallback decision is made before autograd is involved, and returns ``log E_total``
    or, given a ``head``, the head's logits (:data:`Head`), which spares the autograd graph the
    dozen small operations of that reduction. Backward is the forward-backward rule
    ``dX/d(-d/λ)[l,m] = E[l,m] B[l,m] / E_total`` with ``B = dE_total/dE`` accumulated right to
    left, both directions summed into one gradient; the kernel recomputes the tables chunk by
    chunk instead of storing them. Not twice differentiable.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, scaled: Tensor, weights: Tensor, totals: Tensor, variant: str, transposes: tuple[int, ...],
        head: Head | None,
    ) -> Tensor:
        ctx.save_for_backward(weights, totals)
        ctx.variant, ctx.transposes, ctx.head = variant, transposes, head
        if head is None:
            return torch.log(totals)
        outer, _, _, inner = weights.shape
        return _logits_from_totals(_native.native_kernels(), totals, outer, inner, head, scaled.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        weights, totals = ctx.saved_tensors
        if ctx.head is None:
            grad_log = grad_output.to(torch.float64)
        else:
            grad_log = _grad_log_totals(grad_output, ctx.head, len(ctx.transposes))
        kernels = _native.native_kernels()
        backward = kernels.otam_backward_f32 if weights.dtype == torch.float32 else kernels.otam_backward_f64
        scales = (grad_log / totals).contiguous()  # d loss / d E_total
        grad = torch.empty_like(weights)
        status = backward(weights.data_ptr(), *weights.shape, _direction_mask(ctx.transposes),
                          int(ctx.variant == "reference"), scales.data_ptr(), grad.data_ptr())
        if status != 1:
            raise MemoryError("metric 'otam': the C kernel could not allocate its working memory")
        return grad, None, None, None, None, None


def _grad_log_totals(grad_logits: Tensor, head: Head, directions: int) -> Tensor:
    """d loss / d log E_d[q, t] from d loss / d logits: ``factor / n_c`` for t of class c."""
    factor, labels, way = head
    grad_pairs = grad_logits.to(torch.float64)
    if labels is not None:
        counts = torch.bincount(labels, minlength=way).to(torch.float64)
        grad_pairs = grad_pairs[:, labels] / counts[labels]
    return (grad_pairs * factor).reshape(1, -1).expand(directions, -1)


def _direction_mask(transposes: tuple[int, ...]) -> int:
    return sum(1 << transpose for transpose in transposes)


def _exp_domain_otam(
    scaled: Tensor, variant: str, transposes: tuple[int, ...], head: Head | None = None
) -> Tensor | None:
    """``log E_total`` (``(len(transposes), outer * inner)``, float64) of the OTAM programme on
    ``scaled = -d/λ (outer, A, B, inner)`` through the C kernel, or, given a ``head``, the
    head's logits ``(outer, way)`` in ``scaled``'s dtype (pairs are (outer, inner) = (query,
    target)). None when the kernel is unavailable (no compiler, not a CPU tensor) or a total
    leaves float64's safe range. ``transposes`` must be sorted (the kernel stacks the directions
    in order). The caller guarantees ``scaled <= 0`` up to rounding (distances >= 0)."""
    kernels = _native.native_kernels() if scaled.device.type == "cpu" else None
    if kernels is None or scaled.dtype not in (torch.float32, torch.float64) or sorted(transposes) != list(transposes):
        return None
    weights = scaled.detach().exp().contiguous()  # float32's exp is vectorised, ~20x faster than float64's
    outer, _, _, inner = weights.shape
    totals = weights.new_empty((len(transposes), outer * inner), dtype=torch.float64)
    forward = kernels.otam_forward_f32 if weights.dtype == torch.float32 else kernels.otam_forward_f64
    status = forward(weights.data_ptr(), *weights.shape, _direction_mask(transposes), int(variant == "reference"),
                     totals.data_ptr())
    if status != 1:  # 0: a total outside float64's safe range; -1: out of memory
        return None
    if scaled.requires_grad and torch.is_grad_enabled():
        return _ExpDomainOTAM.apply(scaled, weights, totals, variant, transposes, head)
    if head is None:
        return torch.log(totals)
    return _logits_from_totals(kernels, totals, outer, inner, head, scaled.dtype)


class _FusedCosineOTAM(torch.autograd.Function):
    """The fused path's logits as a differentiable function of the frame-dot matrix and the
    frame norms. Forward receives what :func:`_fused_cosine_otam` computed (logits, totals);
    backward maps the logits' gradient to the totals (as :class:`_ExpDomainOTAM` does) and lets
    the kernel (``otam_cosine_backward_f32``) recompute weights and tables chunk by chunk and
    chain them through the cosine to dots and norms. Not twice differentiable."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, dots: Tensor, query_norm: Tensor, target_norm: Tensor, logits: Tensor, totals: Tensor,
        meta: tuple, head: Head,
    ) -> Tensor:
        ctx.save_for_backward(dots, query_norm, target_norm, totals)
        ctx.meta, ctx.head = meta, head
        return logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logits: Tensor):  # type: ignore[override]
        dots, query_norm, target_norm, totals = ctx.saved_tensors
        shape, eps, lam, mask, reference = ctx.meta
        grad_log = _grad_log_totals(grad_logits, ctx.head, totals.shape[0])
        scales = (grad_log / totals).contiguous()
        grad_dots = torch.empty_like(dots)
        grad_query_norm, grad_target_norm = torch.empty_like(query_norm), torch.empty_like(target_norm)
        status = _native.native_kernels().otam_cosine_backward_f32(
            dots.data_ptr(), query_norm.data_ptr(), target_norm.data_ptr(), *shape, eps, lam, mask, reference,
            scales.data_ptr(), grad_dots.data_ptr(), grad_query_norm.data_ptr(), grad_target_norm.data_ptr(),
        )
        if status != 1:
            raise MemoryError("metric 'otam': the C kernel could not allocate its working memory")
        return grad_dots, grad_query_norm, grad_target_norm, None, None, None, None


def _fused_cosine_otam(
    query: Tensor, targets: Tensor, *, cosine: str, lam: float, variant: str, transposes: tuple[int, ...],
    combine: float, labels: Tensor | None, way: int,
) -> Tensor | None:
    """The head's logits ``(n_query, way)`` straight from the features, or None.

    The path for float32 CPU features: the frame-dot matrix in its natural layout, the frame
    norms, and one C call (``otam_cosine_forward_f32``) that forms ``w = exp(-d/λ)`` chunk by
    chunk, runs the programmes, combines the directions (``distance = combine * (q2s + s2q)``)
    and averages over each class's targets (``labels``; None when the targets are the classes),
    so that no ``(pairs, T, T)`` tensor is built and no torch call runs after the matrix
    product. With autograd the logits come through :class:`_FusedCosineOTAM`. None (the caller
    takes the general path) when it does not apply or when a weight or total leaves the
    kernel's range.
    """
    kernels = _native.float32_kernels(query, targets)
    if kernels is None:
        return None
    backward = torch.is_grad_enabled() and (query.requires_grad or targets.requires_grad)
    n_query, t_query, _ = query.shape
    n_targets, t_targets, _ = targets.shape
    dots, query_norm, target_norm = frame_dots_and_norms(query, targets, clamp=cosine == "exact")
    eps = 0.0 if cosine == "exact" else PEER_COSINE_EPS  # exact: F.normalize's clamp, no eps on the product
    totals = dots.new_empty((len(transposes), n_query * n_targets), dtype=torch.float64)
    logits = dots.new_empty((n_query, way))
    meta = ((n_query, t_query, n_targets, t_targets), eps, lam, _direction_mask(transposes), int(variant == "reference"))
    status = kernels.otam_cosine_forward_f32(
        dots.data_ptr(), query_norm.data_ptr(), target_norm.data_ptr(), *meta[0], eps, lam, meta[3], meta[4],
        totals.data_ptr(), combine, None if labels is None else labels.data_ptr(), way, logits.data_ptr(),
    )
    if status != 1:
        return None
    if not backward:
        return logits
    return _FusedCosineOTAM.apply(dots, query_norm, target_norm, logits, totals, meta, (lam * combine, labels, way))


def _log_domain_otam(columns: Tensor, variant: str) -> Tensor:
    """Log-domain programme on ``columns = -d/λ (C, R, B)`` (column-major, batch last) -> ``X (B,)``.

    Column recursions (module docstring): the first real column is sequential over rows in the
    reference variant (``X[l,1] = E[l,0] + logaddexp(X[l-1,1], log 2)``) and closed-form in the
    paper variant (``E[l,0] + log 2``); every later real column is one vectorised step
    ``X[l,m] = E[l,m] + logaddexp(X[l-1,m-1], X[l,m-1])`` with ``X[-1, ·] = -inf`` (so row 0 is
    the hard prefix sum); the right padding column is ``logsumexp_l(X[l,C] + w_l)``.
    """
    if columns.shape[1] == 1:
        return columns[:, 0].sum(0)  # a single row: the plain sum in both variants
    return _ScaledOTAM.apply(columns.contiguous(), variant)


def otam_scaled(
    scaled: Tensor, *, variant: str = "reference", transposes: tuple[int, ...] = (0,), kernel: bool = True
) -> Tensor:
    """OTAM of many matrices at once: ``scaled = -d/λ`` of shape ``(outer, A, B, inner)`` ->
    ``X (len(transposes), outer * inner)``, the cumulative distance being ``-λ X``.

    A matrix is ``scaled[o, :, :, i]``; ``transposes`` lists the directions to run: 0 takes the
    rows ("from" frames) along A, 1 along B. Both directions read the same tensor. The C kernel
    (:class:`_ExpDomainOTAM`) runs when it can, else the log-domain torch programme; both are
    stable and agree to rounding. The kernel's range check assumes distances >= 0
    (``scaled <= 0``); pass ``kernel=False`` for anything else.
    """
    fast = _exp_domain_otam(scaled, variant, transposes) if kernel else None
    if fast is not None:
        return fast.to(scaled.dtype)
    results = []
    for transpose in transposes:
        columns = scaled.permute(1, 2, 0, 3) if transpose else scaled.permute(2, 1, 0, 3)  # (C, R, outer, inner)
        results.append(_log_domain_otam(columns.reshape(*columns.shape[:2], -1), variant))
    return torch.stack(results)


def _naive_softmin(lam: float, *terms: Tensor) -> Tensor:
    """The originals' soft-min, ``-λ log Σ exp(-a/λ)``, without a max-shift (underflows)."""
    total = torch.exp(-terms[0] / lam)
    for term in terms[1:]:
        total = total + torch.exp(-term / lam)
    return -lam * torch.log(total)


def _reference_naive(dists: Tensor, lam: float) -> Tensor:
    """Reference recursion in the cost domain with the naive soft-min: ``(B, R, C) -> (B,)``."""
    batch, rows, cols = dists.shape
    row0 = dists[:, 0, :].cumsum(-1)
    if rows == 1:
        return row0[:, -1]
    zero = dists.new_zeros(batch)
    value = row0[:, 0]
    column = [value]
    for l in range(1, rows):
        value = dists[:, l, 0] + _naive_softmin(lam, zero, value, zero)
        column.append(value)
    col = torch.stack(column, 1)
    for m in range(1, cols):
        rest = dists[:, 1:, m] + _naive_softmin(lam, col[:, :-1], col[:, 1:])
        col = torch.cat([row0[:, m : m + 1], rest], 1)
    value = col[:, 0]  # right padding column, row 0: prefix sum + 0
    for l in range(1, rows):
        value = _naive_softmin(lam, col[:, l - 1], value, col[:, l])
    return value


def otam_cum_dist(
    dists: Tensor, lam: float = 0.1, *, variant: str = "reference", stable: bool = True
) -> Tensor:
    """OTAM cumulative distance of ``dists (..., R, C)`` (rows = "from" frames) -> ``(...)``.

    ``variant`` and ``stable`` as in the module docstring. ``R`` and ``C`` may differ and may be 1.
    """
    check_choice("variant", variant, VARIANTS, metric="otam")
    if lam <= 0:
        raise ValueError(f"metric 'otam': lam must be > 0, got {lam}")
    if dists.dim() < 2 or dists.shape[-1] == 0 or dists.shape[-2] == 0:
        raise ValueError(f"metric 'otam': dists must be (..., R, C) with R, C >= 1, got {tuple(dists.shape)}")
    lead = dists.shape[:-2]
    flat = dists.reshape(-1, *dists.shape[-2:])
    if not stable:
        if variant != "reference":
            raise ValueError("metric 'otam': stable=False exists only for variant='reference'")
        return _reference_naive(flat, lam).view(lead)
    scaled = (flat / -lam).permute(1, 2, 0).unsqueeze(0)  # (1, R, C, B): batch innermost
    nonnegative = not bool((flat.detach() < 0).any())  # the kernel's range check needs d >= 0
    return (-lam * otam_scaled(scaled, variant=variant, kernel=nonnegative)[0]).view(lead)


def _scaled_neg_distances(query: Tensor, targets: Tensor, cosine: str, lam: float) -> Tensor:
    """``-d/λ = (cos - 1)/λ`` of all frame pairs in the layout ``(n_q, T_q, T_s, n_t)``.

    Targets are multiplied frame-major (``(T_s, n_t, D)``), so that the pairs ``(q, t)`` sit in
    the outer and inner dimensions, as :func:`otam_scaled` takes them, and the kernel gathers
    runs of ``n_t`` contiguous values.

    Same cosines as :func:`fsar.metrics._common.frame_cosine` (exact: norms clamped at 1e-12 as
    ``F.normalize``; peer: +0.01 on the norm product), in two kernels after the matmul.
    """
    n_query, t_query, dim = query.shape
    n_targets, t_support, _ = targets.shape
    query_flat = query.reshape(n_query * t_query, dim)
    target_flat = targets.transpose(0, 1).reshape(t_support * n_targets, dim)
    query_norm = query_flat.norm(dim=-1)
    target_norm = target_flat.norm(dim=-1)
    if cosine == "exact":
        query_norm, target_norm, eps = query_norm.clamp_min(1e-12), target_norm.clamp_min(1e-12), 0.0
    else:
        eps = PEER_COSINE_EPS
    dots = query_flat @ target_flat.T
    denominator = torch.addr(dots.new_tensor(lam * eps), query_norm, target_norm, alpha=lam)  # λ(|q||s| + eps)
    scaled = torch.addcdiv(dots.new_tensor(-1.0 / lam), dots, denominator)
    return scaled.view(n_query, t_query, t_support, n_targets)


class OTAM(nn.Module):
    """OTAM matching head: ``(support, support_labels, query, way) -> logits (n_query, way)``.

    Args:
        lam: soft-min temperature λ (0.1 in the OTAM head, 0.5 in CLIP-FSAR).
        variant: ``"reference"`` or ``"paper"`` recursion (module docstring).
        directions: ``"both"`` (query->support and support->query), or one of them.
            ``query_to_support`` puts query frames on the rows.
        combine: how the two directions are combined: ``"mean"`` or ``"sum"`` (the originals sum).
        shots: ``"distance"`` averages OTAM distances over a class's support clips (plain OTAM);
            ``"prototype"`` averages the support features frame-wise into one prototype clip per
            class first (CLIP-FSAR).
        cosine: ``"exact"`` or ``"peer"`` (+0.01 in the denominator, as both originals).
        stable: log-sum-exp soft-min (default) or the originals' naive one (float32 underflow).

    logits = ``-distance`` (no scale); query and support frame counts may differ.
    """

    def __init__(
        self,
        *,
        lam: float = 0.1,
        variant: str = "reference",
        directions: str = "both",
        combine: str = "mean",
        shots: str = "distance",
        cosine: str = "exact",
        stable: bool = True,
    ) -> None:
        super().__init__()
        if not lam > 0:
            raise ValueError(f"metric 'otam': lam must be > 0, got {lam}")
        self.lam = float(lam)
        self.variant = check_choice("variant", variant, VARIANTS, metric="otam")
        self.directions = check_choice("directions", directions, DIRECTIONS, metric="otam")
        self.combine = check_choice("combine", combine, COMBINES, metric="otam")
        self.shots = check_choice("shots", shots, SHOT_MODES, metric="otam")
        self.cosine = check_choice("cosine", cosine, COSINES, metric="otam")
        if not stable and variant != "reference":
            raise ValueError("metric 'otam': stable=False exists only for variant='reference'")
        self.stable = bool(stable)

    def extra_repr(self) -> str:
        return (
            f"lam={self.lam}, variant={self.variant}, directions={self.directions}, "
            f"combine={self.combine}, shots={self.shots}, cosine={self.cosine}, stable={self.stable}"
        )

    def _transposes(self) -> tuple[int, ...]:
        """Kernel directions: 0 = query->support (query frames on the rows), 1 = support->query."""
        return {"both": (0, 1), "query_to_support": (0,), "support_to_query": (1,)}[self.directions]

    def pair_distances(
        self, targets: Tensor, query: Tensor, *, scaled: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Per-direction OTAM distances ``(n_query, n_targets)``: ``(query_to_support, support_to_query)``;
        a direction that is switched off is None. ``scaled``: the ``-d/λ`` matrices already
        computed by :meth:`forward`, whose exp-domain kernel refused them (log domain only)."""
        n_query, t_query, dim = query.shape
        n_targets, t_support, _ = targets.shape
        want_q2s = self.directions in ("both", "query_to_support")
        want_s2q = self.directions in ("both", "support_to_query")
        if self.stable:
            kernel = scaled is None
            if scaled is None:
                scaled = _scaled_neg_distances(query, targets, self.cosine, self.lam)  # (n_q, T_q, T_s, n_t)
            transposes = self._transposes()
            log_totals = otam_scaled(scaled, variant=self.variant, transposes=transposes, kernel=kernel)
            distances = (-self.lam * log_totals).view(len(transposes), n_query, n_targets)
            if want_q2s and want_s2q:
                return distances[0], distances[1]
            return (distances[0], None) if want_q2s else (None, distances[0])
        cos = frame_cosine(query, targets, self.cosine)  # (n_query, n_targets, T_q, T_s)
        dists = 1.0 - cos
        run = lambda d: otam_cum_dist(d, self.lam, variant=self.variant, stable=self.stable)  # noqa: E731
        q2s = run(dists) if want_q2s else None
        s2q = run(dists.transpose(-1, -2)) if want_s2q else None
        return q2s, s2q

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> Tensor:
        support, support_labels, query = validate_episode(
            support, support_labels, query, way, metric="otam"
        )
        if self.shots == "prototype":
            targets = class_means(support, support_labels, way)  # (way, T_s, D)
        else:
            targets = support
        scaled = None
        if self.stable:  # with the C kernels: no torch call between the programme and the logits
            combine = 0.5 if self.directions == "both" and self.combine == "mean" else 1.0
            labels = support_labels if self.shots == "distance" else None
            logits = _fused_cosine_otam(  # float32 on the CPU: one C call after the product
                query, targets, cosine=self.cosine, lam=self.lam, variant=self.variant,
                transposes=self._transposes(), combine=combine, labels=labels, way=way,
            )
            if logits is None:
                scaled = _scaled_neg_distances(query, targets, self.cosine, self.lam)  # (n_q, T_q, T_s, n_t)
                logits = _exp_domain_otam(scaled, self.variant, self._transposes(), (self.lam * combine, labels, way))
            if logits is not None:
                return check_finite_logits(logits, support, query, metric="otam")
        # the general path; the kernel (if any) has already refused these matrices
        q2s, s2q = self.pair_distances(targets, query, scaled=scaled)
        if q2s is not None and s2q is not None:
            distance = q2s + s2q
            if self.combine == "mean":
                distance = distance * 0.5
        else:
            distance = q2s if q2s is not None else s2q
        if self.shots == "distance":
            distance = distance @ shot_average_matrix(support_labels, way, distance.dtype)
        return check_finite_logits(-distance, support, query, metric="otam")
