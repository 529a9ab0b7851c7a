"""Bi-MHM (HyRSM golden files, reductions) and AB-MHM (LGA spec §8 checks, stages, K-shot)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import fsar.metrics as metrics
from fsar.metrics.hausdorff import ABMHM, BiMHM, stage_mask, uniform_boundaries

from metrics_reference import load_reference as _load
from metrics_reference import reference_episode as _episode


@pytest.mark.parametrize("case", "abc")
@pytest.mark.parametrize("preset", ["bimhm_hyrsm1shot", "bimhm_hyrsm5shot"])
def test_presets_match_reference_files(preset: str, case: str) -> None:
    z = _load(f"{preset}_{case}")
    metric = metrics.build(preset)
    logits = metric(*_episode(z))
    np.testing.assert_allclose(logits.numpy(), z["logits_f64"], rtol=1e-9, atol=1e-9)
    logits32 = metric(*_episode(z, torch.float32))
    np.testing.assert_allclose(logits32.numpy(), z["logits_f64"], rtol=1e-5, atol=1e-5)


def _random_episode(way=3, shot=2, n_query=4, t_support=6, t_query=6, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(way).repeat(shot)
    support = torch.randn(way * shot, t_support, dim, generator=generator, dtype=torch.float64)
    query = torch.randn(n_query, t_query, dim, generator=generator, dtype=torch.float64)
    return support, labels, query, way


def _bimhm_loop(q: torch.Tensor, s: torch.Tensor) -> float:
    """Paper form, frame by frame."""
    cos = torch.nn.functional.cosine_similarity(q[:, None], s[None], dim=-1, eps=1e-12)
    d = 1 - cos
    return float(d.min(1).values.mean() + d.min(0).values.mean())


def test_bimhm_mean_is_the_paper_formula_and_sum_scales_by_frames() -> None:
    support, labels, query, way = _random_episode(shot=1, t_support=5, t_query=7)
    mean = BiMHM(reduction="mean", shots="distance")(support, labels, query, way)
    expected = torch.tensor([[_bimhm_loop(q, s) for s in support] for q in query], dtype=torch.float64)
    torch.testing.assert_close(mean, -expected)
    # with equal frame counts the sum form is exactly T times the mean form
    support, labels, query, way = _random_episode(shot=1)
    torch.testing.assert_close(
        BiMHM(reduction="sum")(support, labels, query, way),
        6 * BiMHM(reduction="mean")(support, labels, query, way),
    )


def test_bimhm_shot_modes_differ_for_several_shots() -> None:
    support, labels, query, way = _random_episode(shot=3)
    prototype = BiMHM(shots="prototype")(support, labels, query, way)
    distance = BiMHM(shots="distance")(support, labels, query, way)
    assert not torch.allclose(prototype, distance)


# ----------------------------------------------------------------------------- AB-MHM


def test_abmhm_is_zero_for_identical_clips_and_symmetric() -> None:
    support, labels, query, way = _random_episode(way=1, shot=1, n_query=1, t_support=8, t_query=8)
    metric = ABMHM(num_stages=3)
    stages_s = torch.tensor([[0, 3, 5, 8]])
    stages_q = torch.tensor([[0, 2, 6, 8]])
    same = metric(support, labels, support.clone(), way, support_stages=stages_s, query_stages=stages_s)
    torch.testing.assert_close(same, torch.zeros(1, 1, dtype=torch.float64), atol=1e-12, rtol=0)
    forward = metric(support, labels, query, way, support_stages=stages_s, query_stages=stages_q)
    swapped = metric(query, labels, support, way, support_stages=stages_q, query_stages=stages_s)
    torch.testing.assert_close(forward, swapped)
    assert float(forward) < 0


def test_abmhm_with_one_stage_equals_bimhm_mean() -> None:
    support, labels, query, way = _random_episode(shot=1, t_support=5, t_query=7)
    torch.testing.assert_close(
        ABMHM(num_stages=1)(support, labels, query, way),
        BiMHM(reduction="mean")(support, labels, query, way),
    )
    support, labels, query, way = _random_episode(shot=3)
    torch.testing.assert_close(
        ABMHM(num_stages=1, shots="distance")(support, labels, query, way),
        BiMHM(reduction="mean", shots="distance")(support, labels, query, way),
    )


def test_abmhm_matches_stages_by_index_and_accepts_masks() -> None:
    support, labels, query, way = _random_episode(shot=1, t_support=8, t_query=8)
    boundaries = torch.tensor([0, 3, 5, 8])
    metric = ABMHM()
    logits = metric(support, labels, query, way, support_stages=boundaries, query_stages=boundaries)
    expected = torch.zeros(query.shape[0], way, dtype=torch.float64)
    for q in range(query.shape[0]):
        for s in range(support.shape[0]):
            parts = [
                _bimhm_loop(query[q, a:b], support[s, a:b])
                for a, b in zip(boundaries[:-1].tolist(), boundaries[1:].tolist())
            ]
            expected[q, labels[s]] = sum(parts) / 3
    torch.testing.assert_close(logits, -expected)
    masks = stage_mask(boundaries, 8)
    torch.testing.assert_close(
        metric(support, labels, query, way, support_stages=masks, query_stages=masks), logits
    )
    # the default stages are the uniform HARD split
    uniform = uniform_boundaries(8, 3)
    torch.testing.assert_close(
        metric(support, labels, query, way),
        metric(support, labels, query, way, support_stages=uniform, query_stages=uniform),
    )


def test_abmhm_k_shot_union_of_stage_frames() -> None:
    support, labels, query, way = _random_episode(way=2, shot=2, n_query=2, t_support=4, t_query=4)
    boundaries = torch.tensor([0, 2, 4])
    logits = ABMHM(num_stages=2)(support, labels, query, way)
    for q in range(2):
        for c in range(way):
            clips = support[labels == c]
            parts = []
            for a, b in ((0, 2), (2, 4)):
                union = torch.cat([clip[a:b] for clip in clips])  # the class's stage frames
                parts.append(_bimhm_loop(query[q, a:b], union))
            assert float(logits[q, c]) == pytest.approx(-sum(parts) / 2, rel=1e-12)
    # unequal shot counts are handled too (padding is masked out)
    labels3 = torch.tensor([0, 1, 0, 0])
    support3 = support
    union_logits = ABMHM(num_stages=2)(support3, labels3, query, way)
    clips = support3[labels3 == 1]
    expected = sum(_bimhm_loop(query[0, a:b], clips[0, a:b]) for a, b in ((0, 2), (2, 4))) / 2
    assert float(union_logits[0, 1]) == pytest.approx(-expected, rel=1e-12)


def test_abmhm_neighbor_window_can_only_lower_the_distance() -> None:
    support, labels, query, way = _random_episode(shot=1, t_support=9, t_query=9)
    strict = ABMHM(num_stages=3)(support, labels, query, way)
    relaxed = ABMHM(num_stages=3, neighbor_window=1, neighbor_penalty=0.0)(support, labels, query, way)
    assert (relaxed >= strict - 1e-12).all() and (relaxed > strict).any()
    huge_penalty = ABMHM(num_stages=3, neighbor_window=1, neighbor_penalty=1e6)(support, labels, query, way)
    torch.testing.assert_close(huge_penalty, strict)


def test_abmhm_bad_stages() -> None:
    support, labels, query, way = _random_episode(shot=1, t_support=8, t_query=8)
    metric = ABMHM()
    empty = torch.zeros(3, 8, dtype=torch.bool)
    empty[0, :4] = True
    empty[2, 4:] = True
    with pytest.raises(ValueError, match="empty stage 1"):
        metric(support, labels, query, way, query_stages=empty)
    with pytest.raises(ValueError, match="support has 3 stages, query has 2"):
        metric(support, labels, query, way, query_stages=torch.tensor([0, 4, 8]))
    with pytest.raises(ValueError, match="query_stages"):
        metric(support, labels, query, way, query_stages=torch.tensor([0, 4, 4, 8]))
    with pytest.raises(ValueError, match="cannot split 8 frames into 9"):
        ABMHM(num_stages=9)(support, labels, query, way)


@pytest.mark.parametrize("name", ["bimhm", "abmhm", "bimhm_hyrsm1shot", "bimhm_hyrsm5shot"])
def test_properties_identity_permutation_gradients(name: str) -> None:
    support, labels, query, way = _random_episode(shot=2, seed=7)
    metric = metrics.build(name)
    probe = support[4:5].clone()
    assert int(metric(support, labels, probe, way).argmax()) == int(labels[4])
    logits = metric(support, labels, query, way)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(metric(support[order], labels[order], query, way), logits)
    s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
    metric(s, labels, q, way).sum().backward()
    for grad in (s.grad, q.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_abmhm_ignores_frames_outside_every_stage() -> None:
    """Padded frames (in no stage), as a stage-concatenating caller produces them, have no effect."""
    support, labels, query, way = _random_episode(shot=1, t_support=6, t_query=6)
    masks = stage_mask(torch.tensor([0, 2, 4, 6]), 6)
    expected = ABMHM()(support, labels, query, way, support_stages=masks, query_stages=masks)
    pad = lambda x: torch.cat([x, 100 * torch.randn(x.shape[0], 2, x.shape[2], dtype=x.dtype)], 1)  # noqa: E731
    padded_masks = torch.cat([masks, torch.zeros(3, 2, dtype=torch.bool)], 1)
    logits = ABMHM()(pad(support), labels, pad(query), way, support_stages=padded_masks, query_stages=padded_masks)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bimhm_distances_equal_the_definition(reduction: str) -> None:
    from fsar.metrics._common import unit_frame_cosine
    from fsar.metrics.hausdorff import bimhm_distances, hausdorff_distances

    generator = torch.Generator().manual_seed(3)
    query = torch.randn(4, 6, 16, generator=generator, dtype=torch.float64)
    targets = torch.randn(3, 5, 16, generator=generator, dtype=torch.float64)
    query[1, 2] = 0.0  # a zero frame: F.normalize's clamp on both paths
    expected = hausdorff_distances(1.0 - unit_frame_cosine(query, targets), reduction)
    torch.testing.assert_close(bimhm_distances(query, targets, reduction), expected, rtol=1e-12, atol=1e-12)


def _packs(n: int, stages: int, slots: int, dim: int, generator: torch.Generator):
    """Stage packs with a random number (>= 1) of valid slots per stage; padded slots are zeros."""
    lengths = torch.randint(1, slots + 1, (n, stages), generator=generator)
    valid = torch.arange(slots)[None, None] < lengths[..., None]
    packs = torch.randn(n, stages, slots, dim, generator=generator, dtype=torch.float64) * valid[..., None]
    return packs, valid


def _laid_out(packs, valid):
    """The concatenated form (LGA's concat_stages): stage i owns the slots [i n, (i + 1) n)."""
    n, stages, slots, dim = packs.shape
    block = torch.eye(stages, dtype=torch.bool)
    membership = (block[None, :, :, None] & valid[:, None]).reshape(n, stages, stages * slots)
    return packs.reshape(n, stages * slots, dim), membership


@pytest.mark.parametrize("shots", ["union", "distance"])
@pytest.mark.parametrize("window", [0, 1])
@pytest.mark.parametrize("shot", [1, 3])
@pytest.mark.parametrize("ordered", [False, True], ids=["shuffled", "class-order"])
def test_abmhm_stage_packs_equal_the_concatenated_form_with_gradients(shots, window, shot, ordered) -> None:
    g = torch.Generator().manual_seed(10 * shot + window)
    way, stages, slots, dim = 4, 3, 4, 6
    support, support_valid = _packs(way * shot, stages, slots, dim, g)
    query, query_valid = _packs(5, stages, slots, dim, g)
    # class order (one shot each: the union takes the packs as they are) or shuffled
    labels = torch.arange(way).repeat_interleave(shot)
    if not ordered:
        labels = labels[torch.randperm(way * shot, generator=g)]
    metric = ABMHM(num_stages=stages, shots=shots, neighbor_window=window)
    support.requires_grad_(True)
    fast = metric.stage_packs(support, support_valid, labels, query, query_valid, way)
    (grad_fast,) = torch.autograd.grad(fast.sin().sum(), support)
    sequence_s, mask_s = _laid_out(support, support_valid)
    sequence_q, mask_q = _laid_out(query, query_valid)
    plain = metric(sequence_s, labels, sequence_q, way, support_stages=mask_s, query_stages=mask_q)
    (grad_plain,) = torch.autograd.grad(plain.sin().sum(), support)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_fast, grad_plain, rtol=1e-10, atol=1e-12)
    assert bool(grad_fast[~support_valid].eq(0).all())  # padded slots get no gradient


def test_abmhm_stage_packs_reject_bad_packs() -> None:
    metric = ABMHM(num_stages=2)
    packs, valid = torch.randn(2, 2, 3, 4), torch.ones(2, 2, 3, dtype=torch.bool)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="stage packs must be"):
        metric.stage_packs(packs[:, 0], valid, labels, packs, valid, 2)
    with pytest.raises(ValueError, match="do not match the packs"):
        metric.stage_packs(packs, valid[:, :, :2], labels, packs, valid, 2)
    empty = valid.clone()
    empty[1, 0] = False
    with pytest.raises(ValueError, match="query clip 1 has an empty stage 0"):
        metric.stage_packs(packs, valid, labels, packs, empty, 2)
    with pytest.raises(ValueError, match="no support clip"):
        metric.stage_packs(packs, valid, torch.tensor([0, 0]), packs, valid, 2)
