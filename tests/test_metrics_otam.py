"""OTAM: reference recursion equals the originals (golden files), paper variant, properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import fsar.metrics as metrics
from fsar.metrics.otam import OTAM, otam_cum_dist

from metrics_reference import load_reference as _load
from metrics_reference import reference_episode as _episode


@pytest.mark.parametrize("case", "abc")
@pytest.mark.parametrize("preset", ["otam_plain", "otam_clipfsar"])
def test_presets_match_reference_files(preset: str, case: str) -> None:
    z = _load(f"{preset}_{case}")
    metric = metrics.build(preset)
    support, labels, query, way = _episode(z)
    logits = metric(support, labels, query, way)
    np.testing.assert_allclose(logits.numpy(), z["logits_f64"], rtol=1e-9, atol=1e-9)
    # per-direction distances, as the originals' cum_dist_q2s / cum_dist_s2q
    targets = support if preset == "otam_plain" else metrics._common.class_means(support, labels, way)
    q2s, s2q = metric.pair_distances(targets, query)
    np.testing.assert_allclose(q2s.numpy(), z["cum_dist_q2s_f64"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s2q.numpy(), z["cum_dist_s2q_f64"], rtol=1e-9, atol=1e-9)
    # float32 compute is within the originals' own float32-vs-float64 tolerance
    logits32 = metric(*_episode(z, torch.float32))
    assert logits32.dtype == torch.float32
    np.testing.assert_allclose(logits32.numpy(), z["logits_f64"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", ["sq", "rect", "row", "col"])
@pytest.mark.parametrize("lam_key, lam", [("01", 0.1), ("05", 0.5)])
def test_core_recursion_matches_reference(shape: str, lam_key: str, lam: float) -> None:
    z = _load("otam_core_fn")
    dists = torch.from_numpy(z[f"dists_{shape}"])
    expected64 = z[f"out_{shape}_lam{lam_key}_f64"]
    np.testing.assert_allclose(otam_cum_dist(dists.double(), lam).numpy(), expected64, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(otam_cum_dist(dists, lam).numpy(), expected64, rtol=1e-5, atol=1e-6)
    naive32 = otam_cum_dist(dists, lam, stable=False).numpy()
    np.testing.assert_allclose(naive32, z[f"out_{shape}_lam{lam_key}"], rtol=1e-6, atol=1e-6)


def test_stable_softmin_stays_finite_where_the_original_float32_overflows() -> None:
    z = _load("otam_core_fn")
    values = torch.from_numpy(z["const_values"])
    dists = values[:, None, None].expand(-1, 8, 8).contiguous()  # 8x8 constant matrices
    stable32 = otam_cum_dist(dists, 0.1).numpy()
    naive32 = otam_cum_dist(dists, 0.1, stable=False).numpy()
    assert np.isfinite(stable32).all()
    np.testing.assert_allclose(stable32, z["const_out_lam01_f64"], rtol=1e-6)
    # the naive soft-min reproduces the original float32 results, inf (c >= 1.4) included
    expected = z["const_out_lam01"]
    assert np.isinf(expected).sum() == 3
    np.testing.assert_array_equal(np.isinf(naive32), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(naive32[finite], expected[finite], rtol=1e-6)
    np.testing.assert_allclose(
        otam_cum_dist(dists, 0.5).numpy(), z["const_out_lam05_f64"], rtol=1e-6
    )


def _soft_min(values: list[float], lam: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    low = min(finite)
    return low - lam * math.log(sum(math.exp(-(v - low) / lam) for v in finite))


def _paper_cellwise(d: np.ndarray, lam: float) -> float:
    """Soft-DTW on the zero-padded matrix with +inf outside the grid, written cell by cell."""
    rows, cols = d.shape
    padded = np.zeros((rows, cols + 2))
    padded[:, 1:-1] = d
    inf = math.inf
    gamma = np.full((rows + 1, cols + 3), inf)  # 1-based, gamma[0, 0] = 0 is the virtual start
    gamma[0, 0] = 0.0
    for l in range(1, rows + 1):
        for m in range(1, cols + 3):
            diagonal, up, left = gamma[l - 1, m - 1], gamma[l - 1, m], gamma[l, m - 1]
            padding_column = m in (1, cols + 2)
            candidates = [diagonal, up, left] if padding_column else [diagonal, left]
            gamma[l, m] = padded[l - 1, m - 1] + _soft_min(candidates, lam)
    return gamma[rows, cols + 2]


@pytest.mark.parametrize("rows, cols", [(4, 4), (3, 5), (5, 2), (1, 4), (4, 1)])
def test_paper_variant_is_soft_dtw_on_the_padded_matrix(rows: int, cols: int) -> None:
    generator = torch.Generator().manual_seed(rows * 10 + cols)
    d = torch.rand(3, rows, cols, generator=generator, dtype=torch.float64) * 2
    ours = otam_cum_dist(d, 0.3, variant="paper")
    expected = [_paper_cellwise(x.numpy(), 0.3) for x in d]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)


def test_paper_variant_tends_to_the_hard_minimum_over_monotone_alignments() -> None:
    rows, cols = 4, 5
    d = torch.rand(rows, cols, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    best = math.inf
    for start in range(rows):  # row of the first column, then steps of 0 or +1 per column
        for steps in itertools.product((0, 1), repeat=cols - 1):
            path = np.cumsum((start,) + steps)
            if path[-1] < rows:
                best = min(best, sum(float(d[r, c]) for c, r in enumerate(path)))
    lam = 1e-3
    soft = float(otam_cum_dist(d, lam, variant="paper"))
    assert best - lam * math.log(2 ** (rows + cols) * rows) <= soft <= best + 1e-9


def test_reference_and_paper_differ_only_through_the_first_real_column() -> None:
    d = torch.rand(6, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert not torch.allclose(otam_cum_dist(d, 0.1), otam_cum_dist(d, 0.1, variant="paper"))
    single_row = d[:, :1, :]  # no first-column recursion: both are the plain row sum
    torch.testing.assert_close(otam_cum_dist(single_row, 0.1), single_row.sum((-1, -2)))
    torch.testing.assert_close(
        otam_cum_dist(single_row, 0.1, variant="paper"), single_row.sum((-1, -2))
    )


def _random_episode(way=3, shot=2, n_query=4, t_support=6, t_query=6, dim=16, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(way).repeat(shot)
    support = torch.randn(way * shot, t_support, dim, generator=generator, dtype=dtype)
    query = torch.randn(n_query, t_query, dim, generator=generator, dtype=dtype)
    return support, labels, query, way


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("shots", ["distance", "prototype"])
def test_head_equals_the_recursion_on_each_pair(variant: str, shots: str) -> None:
    support, labels, query, way = _random_episode()
    metric = OTAM(lam=0.2, variant=variant, shots=shots, combine="mean")
    logits = metric(support, labels, query, way)
    targets = support if shots == "distance" else metrics._common.class_means(support, labels, way)
    expected = torch.zeros(query.shape[0], targets.shape[0], dtype=torch.float64)
    for q, t in itertools.product(range(query.shape[0]), range(targets.shape[0])):
        cos = torch.nn.functional.cosine_similarity(query[q][:, None], targets[t][None], dim=-1, eps=1e-12)
        d = 1 - cos
        expected[q, t] = 0.5 * (otam_cum_dist(d, 0.2, variant=variant) + otam_cum_dist(d.T, 0.2, variant=variant))
    if shots == "distance":
        expected = torch.stack([expected[:, labels == c].mean(1) for c in range(way)], 1)
    torch.testing.assert_close(logits, -expected)


def test_different_frame_counts_and_single_direction() -> None:
    support, labels, query, way = _random_episode(t_support=5, t_query=7)
    both = OTAM()(support, labels, query, way)
    q2s = OTAM(directions="query_to_support")(support, labels, query, way)
    s2q = OTAM(directions="support_to_query")(support, labels, query, way)
    assert both.shape == (query.shape[0], way)
    torch.testing.assert_close(both, 0.5 * (q2s + s2q))
    assert not torch.allclose(q2s, s2q)  # OTAM is asymmetric
    naive = OTAM(stable=False)(support, labels, query, way)
    torch.testing.assert_close(naive, both)


def test_properties_identity_reversal_permutation_gradients() -> None:
    support, labels, query, way = _random_episode(shot=2, seed=5)
    for variant in ("reference", "paper"):
        metric = OTAM(variant=variant)
        # a query identical to a support clip of class 1 ranks class 1 first
        probe = support[4:5].clone()  # labels[4] == 1
        assert int(metric(support, labels, probe, way).argmax()) == int(labels[4])
        # reversing the frame order of the query changes the score
        logits = metric(support, labels, query, way)
        reversed_logits = metric(support, labels, query.flip(1), way)
        assert not torch.allclose(logits, reversed_logits)
        # permuting the support set changes nothing
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(metric(support[order], labels[order], query, way), logits)
        # gradients are finite and reach both inputs
        s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
        metric(s, labels, q, way).sum().backward()
        for grad in (s.grad, q.grad):
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradient_matches_finite_differences() -> None:
    support, labels, query, way = _random_episode(way=2, shot=1, n_query=1, t_support=4, t_query=4, dim=3)
    for variant in ("reference", "paper"):
        metric = OTAM(lam=0.5, variant=variant)
        torch.autograd.gradcheck(
            lambda s, q: metric(s, labels, q, way), (support.requires_grad_(), query.requires_grad_())
        )


def test_bad_options_and_inputs() -> None:
    with pytest.raises(ValueError, match="variant"):
        OTAM(variant="dtw")
    with pytest.raises(ValueError, match="lam"):
        OTAM(lam=0.0)
    with pytest.raises(ValueError, match="stable=False"):
        OTAM(variant="paper", stable=False)
    support, labels, query, way = _random_episode()
    with pytest.raises(ValueError, match="NaN in query"):
        OTAM()(support, labels, query.masked_fill(query > 1.5, float("nan")), way)


@pytest.mark.parametrize("rows, cols", [(4, 4), (3, 5), (5, 2), (1, 3), (3, 1)])
@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_hand_written_backward_of_the_recursion(rows: int, cols: int, variant: str) -> None:
    d = torch.rand(2, rows, cols, generator=torch.Generator().manual_seed(rows + 7 * cols), dtype=torch.float64)
    torch.autograd.gradcheck(lambda x: otam_cum_dist(x, 0.3, variant=variant), (d.requires_grad_(),))
    if variant == "reference":  # against plain autograd through the naive soft-min
        stable = torch.autograd.grad(otam_cum_dist(d, 0.3).sum(), d)[0]
        naive = torch.autograd.grad(otam_cum_dist(d, 0.3, stable=False).sum(), d)[0]
        torch.testing.assert_close(stable, naive)
