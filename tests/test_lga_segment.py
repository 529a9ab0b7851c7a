"""LGA visual anatomy: CLUSTER-Segment, HARD (uniform), TW-FINCH, overlaps, stage packing."""

from __future__ import annotations

import pytest
import torch

from fsar.metrics.stages import stage_mask
from fsar.lga.segment import (
    cluster_segment,
    gather_stages,
    segment,
    tw_finch_segment,
    uniform_segment,
)


def blocks(lengths, dim=16, noise=0.0, seed=0, batch=1):
    """Sequences of constant blocks (one random direction per block) plus noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(lengths), dim, generator=g)
    frames = torch.cat([centres[i].expand(n, dim) for i, n in enumerate(lengths)])
    frames = frames.expand(batch, -1, -1).clone()
    return frames + noise * torch.randn(frames.shape, generator=g)


def true_boundaries(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])


def test_cluster_segment_recovers_2_4_2_blocks():
    assert cluster_segment(blocks([2, 4, 2]), 3).tolist() == [[0, 2, 6, 8]]
    # and uniform (HARD) does not
    assert uniform_segment(8, 3).tolist() == [[0, 3, 5, 8]]


@pytest.mark.parametrize("lengths", [[1, 6, 1], [5, 1, 2], [3, 3, 2], [1, 1, 1, 5], [4, 4]])
def test_cluster_segment_recovers_blocks_with_noise(lengths):
    x = blocks(lengths, noise=0.05, seed=len(lengths), batch=4)
    out = cluster_segment(x, len(lengths))
    assert out.tolist() == [true_boundaries(lengths).tolist()] * 4


def test_cluster_segment_contract_on_random_inputs():
    x = torch.randn(64, 8, 24, generator=torch.Generator().manual_seed(1))
    for stages in (1, 2, 3, 5, 8):
        b = cluster_segment(x, stages)
        assert b.shape == (64, stages + 1) and b.dtype == torch.long
        assert (b[:, 0] == 0).all() and (b[:, -1] == 8).all()
        assert (b[:, 1:] > b[:, :-1]).all()  # L contiguous, non-empty stages covering all T


def test_cluster_segment_batched_equals_reference_loop():
    """The lock-step batched merge equals a plain per-video implementation of the algorithm."""

    def reference(video, stages):
        clusters = [[t] for t in range(video.shape[0])]
        unit = torch.nn.functional.normalize(video.double(), dim=-1)
        while len(clusters) > stages:
            cents = [torch.nn.functional.normalize(unit[c].mean(0), dim=0) for c in clusters]
            sims = [float(cents[i] @ cents[i + 1]) for i in range(len(clusters) - 1)]
            j = max(range(len(sims)), key=lambda i: (sims[i], -i))  # earliest on ties
            clusters[j] = clusters[j] + clusters.pop(j + 1)
        return [c[0] for c in clusters] + [video.shape[0]]

    x = torch.randn(20, 8, 12, generator=torch.Generator().manual_seed(2))
    got = cluster_segment(x, 3)
    for video, row in zip(x, got):
        assert row.tolist() == reference(video, 3)


def test_cluster_segment_ties_take_earliest_pair():
    # All frames identical: every adjacent pair ties, so merges go left to right.
    x = torch.ones(1, 8, 4)
    assert cluster_segment(x, 3).tolist() == [[0, 6, 7, 8]]


def test_cluster_segment_scale_invariant_and_detached():
    x = blocks([3, 2, 3], noise=0.1, seed=3, batch=2).requires_grad_()
    scaled = x.detach() * torch.tensor([5.0, 0.2])[:, None, None]
    assert torch.equal(cluster_segment(x, 3), cluster_segment(scaled, 3))
    assert not cluster_segment(x, 3).requires_grad


def test_too_few_frames_is_an_error():
    with pytest.raises(ValueError, match="cannot split 2 frames into 3"):
        cluster_segment(torch.randn(1, 2, 4), 3)
    with pytest.raises(ValueError, match="cannot split"):
        uniform_segment(2, 3)
    with pytest.raises(ValueError, match="unknown segmentation"):
        segment(torch.randn(1, 8, 4), 3, "kmeans")


def test_uniform_segment():
    assert uniform_segment(8, 3, batch=2).tolist() == [[0, 3, 5, 8]] * 2
    assert uniform_segment(9, 3).tolist() == [[0, 3, 6, 9]]
    assert segment(torch.randn(2, 8, 4), 3, "uniform").tolist() == [[0, 3, 5, 8]] * 2


def test_tw_finch_recovers_blocks_and_is_contiguous():
    assert tw_finch_segment(blocks([2, 4, 2], noise=0.05, batch=3), 3).tolist() == [[0, 2, 6, 8]] * 3
    b = tw_finch_segment(torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(4)), 3)
    assert (b[:, 0] == 0).all() and (b[:, -1] == 8).all() and (b[:, 1:] > b[:, :-1]).all()


def test_cluster_beats_uniform_on_sequences_with_known_stage_changes():
    """Synthetic videos with uneven stages: CLUSTER-Segment finds the changes, HARD cannot."""
    g = torch.Generator().manual_seed(5)
    cluster_error = uniform_error = 0.0
    for trial in range(30):
        cuts = torch.randperm(7, generator=g)[:2].sort().values + 1  # two stage changes in 1..7
        lengths = [int(cuts[0]), int(cuts[1] - cuts[0]), int(8 - cuts[1])]
        x = blocks(lengths, dim=32, noise=0.15, seed=100 + trial)
        truth = true_boundaries(lengths)[1:-1].float()
        cluster_error += (cluster_segment(x, 3)[0, 1:-1] - truth).abs().mean().item()
        uniform_error += (uniform_segment(8, 3)[0, 1:-1] - truth).abs().mean().item()
    assert cluster_error / 30 < 0.1  # near-exact recovery
    assert uniform_error / 30 > 0.8  # HARD misses by about a frame on average


def test_gather_stages_packs_in_time_order_with_mask_and_gradients():
    frames = torch.arange(2 * 8, dtype=torch.float32).view(2, 8, 1).repeat(1, 1, 3).requires_grad_()
    membership = stage_mask(torch.tensor([[0, 2, 6, 8], [0, 3, 5, 8]]), 8, overlap=1)
    packed, valid = gather_stages(frames, membership)
    assert packed.shape == (2, 3, 6, 3) and valid.shape == (2, 3, 6)
    assert valid.sum(-1).tolist() == [[3, 6, 3], [4, 4, 4]]
    assert packed[0, 1, :, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert packed[0, 0, :, 0].tolist() == [0, 1, 2, 0, 0, 0]  # padded with zeros
    assert packed[1, 2, :, 0].tolist() == [12, 13, 14, 15, 0, 0]
    packed.sum().backward()
    # each frame's gradient = number of stages it belongs to
    assert frames.grad[..., 0].tolist() == membership.sum(1).float().tolist()
