"""TSN segment sampling and uniform sampling, including clips shorter than T."""

from __future__ import annotations

import pytest
import torch

from fsar.data.sampling import sample_indices


def test_tsn_eval_takes_segment_centres():
    # 80 frames, 8 segments of 10: centres at 5, 15, ..., 75.
    assert sample_indices(80, 8, train=False) == [5, 15, 25, 35, 45, 55, 65, 75]
    # 300 frames: segment 37.5, centre of segment i = floor((i + 0.5) * 37.5).
    assert sample_indices(300, 8, train=False) == [18, 56, 93, 131, 168, 206, 243, 281]


def test_tsn_train_draws_one_frame_inside_each_segment():
    generator = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(8)]
    for _ in range(200):
        indices = sample_indices(80, 8, train=True, generator=generator)
        assert len(indices) == 8
        for i, index in enumerate(indices):
            assert 10 * i <= index < 10 * (i + 1)
            seen[i].add(index)
    # Random in training: every segment shows several different frames over 200 draws.
    assert all(len(s) >= 8 for s in seen)


def test_tsn_train_is_reproducible_from_the_generator():
    a = sample_indices(123, 8, train=True, generator=torch.Generator().manual_seed(7))
    b = sample_indices(123, 8, train=True, generator=torch.Generator().manual_seed(7))
    c = sample_indices(123, 8, train=True, generator=torch.Generator().manual_seed(8))
    assert a == b
    assert a != c


def test_eval_is_deterministic_and_ignores_the_generator():
    a = sample_indices(57, 8, train=False, generator=torch.Generator().manual_seed(1))
    b = sample_indices(57, 8, train=False, generator=torch.Generator().manual_seed(2))
    assert a == b == sample_indices(57, 8, train=False)


@pytest.mark.parametrize("train", [False, True])
def test_exactly_t_frames_gives_each_frame_once(train):
    assert sample_indices(8, 8, train=train, generator=torch.Generator().manual_seed(0)) == list(range(8))


@pytest.mark.parametrize("train", [False, True])
def test_fewer_frames_than_segments_repeats_in_order(train):
    indices = sample_indices(5, 8, train=train, generator=torch.Generator().manual_seed(0))
    assert len(indices) == 8
    assert indices == sorted(indices)
    assert set(indices) == set(range(5))  # every frame used, none invented
    if not train:
        assert indices == [0, 0, 1, 2, 2, 3, 4, 4]


@pytest.mark.parametrize("mode", ["tsn", "uniform"])
@pytest.mark.parametrize("train", [False, True])
def test_single_frame_clip(mode, train):
    assert sample_indices(1, 8, mode=mode, train=train) == [0] * 8


def test_uniform_spans_first_to_last_frame():
    assert sample_indices(10, 4, mode="uniform", train=False) == [0, 3, 6, 9]
    assert sample_indices(300, 8, mode="uniform", train=True) == sample_indices(300, 8, mode="uniform", train=False)
    assert sample_indices(300, 8, mode="uniform", train=False)[-1] == 299
    assert sample_indices(3, 5, mode="uniform", train=False) == [0, 1, 1, 2, 2]
    assert sample_indices(9, 1, mode="uniform", train=False) == [4]


def test_bad_arguments():
    with pytest.raises(ValueError, match="0 frames"):
        sample_indices(0, 8, train=False)
    with pytest.raises(ValueError, match="num_segments"):
        sample_indices(10, 0, train=False)
    with pytest.raises(ValueError, match="unknown sampling mode 'dense'"):
        sample_indices(10, 8, mode="dense", train=False)
