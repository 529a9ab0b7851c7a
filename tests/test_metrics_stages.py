"""Stage boundaries and membership: the one definition AB-MHM and LGA's anatomy share (lga.md §3, §8)."""

from __future__ import annotations

import pytest
import torch

from fsar.lga.segment import segment, uniform_segment
from fsar.metrics.hausdorff import ABMHM
from fsar.metrics.stages import stage_mask, uniform_boundaries


@pytest.mark.parametrize(
    ("frames", "stages", "expected"),
    [(8, 3, [0, 3, 5, 8]), (9, 3, [0, 3, 6, 9]), (8, 2, [0, 4, 8]), (6, 4, [0, 2, 3, 5, 6]), (3, 3, [0, 1, 2, 3])],
)
def test_uniform_boundaries_are_near_equal_and_symmetric(frames: int, stages: int, expected: list[int]) -> None:
    bounds = uniform_boundaries(frames, stages)
    assert bounds.tolist() == expected
    lengths = (bounds[1:] - bounds[:-1]).tolist()
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1
    assert uniform_boundaries(frames, stages, batch=2).tolist() == [expected] * 2


def test_lga_hard_split_and_abmhm_default_stages_agree() -> None:
    """They disagreed once (T=8, L=3: [0,2,5,8] in one, [0,3,5,8] in the other)."""
    assert uniform_segment(8, 3).tolist() == [uniform_boundaries(8, 3).tolist()]
    assert segment(torch.randn(2, 8, 4), 3, "uniform").tolist() == [[0, 3, 5, 8]] * 2
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(5, 8, 6, generator=g), torch.randn(3, 8, 6, generator=g)
    labels = torch.arange(5)
    metric = ABMHM(num_stages=3)
    hard = uniform_segment(8, 3)[0]
    torch.testing.assert_close(
        metric(support, labels, query, 5), metric(support, labels, query, 5, support_stages=hard, query_stages=hard)
    )


def test_too_few_frames() -> None:
    with pytest.raises(ValueError, match="cannot split 2 frames into 3"):
        uniform_boundaries(2, 3)
    with pytest.raises(ValueError, match="cannot split"):
        uniform_boundaries(4, 0)


def test_partition_and_overlap_counts() -> None:
    b = torch.tensor([[0, 2, 6, 8]])
    m0 = stage_mask(b, 8)
    assert m0.shape == (1, 3, 8) and m0.sum(-1).tolist() == [[2, 4, 2]]
    assert (m0.sum(1) == 1).all()  # a partition
    m1 = stage_mask(b, 8, overlap=1)
    assert m1.sum().item() == 8 + 2 * 1 * (3 - 1)  # T + 2 o (L - 1)
    assert m1[0].int().tolist() == [
        [1, 1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1, 1, 1],
    ]
    assert stage_mask(torch.tensor([0, 3, 5, 8]), 8, overlap=1).shape == (3, 8)  # one clip, 1-D boundaries


def test_overlap_never_reaches_past_the_neighbouring_stage() -> None:
    m3 = stage_mask(torch.tensor([[0, 1, 2, 8]]), 8, overlap=3)
    assert m3[0, 0].int().tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert m3[0, 1].int().tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert m3[0, 2].int().tolist() == [0, 1, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("bad", "message"),
    [([0, 3, 3, 8], "rise strictly"), ([1, 4, 8], "start at 0"), ([0, 4, 7], "end at T=8"), ([0, 8], None)],
)
def test_bad_boundaries(bad: list[int], message: str | None) -> None:
    if message is None:  # a single stage is valid
        assert stage_mask(torch.tensor(bad), 8).all()
        return
    with pytest.raises(ValueError, match=message):
        stage_mask(torch.tensor(bad), 8)


def test_bad_types_and_overlap() -> None:
    with pytest.raises(ValueError, match="integers"):
        stage_mask(torch.tensor([0.0, 4.0, 8.0]), 8)
    with pytest.raises(ValueError, match="overlap"):
        stage_mask(torch.tensor([0, 4, 8]), 8, overlap=-1)
    with pytest.raises(ValueError, match="L\\+1"):
        stage_mask(torch.tensor([[[0, 8]]]), 8)
