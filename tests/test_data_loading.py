"""ClipLoader and load_episode: clips to normalised frame tensors, on tiny videos and on real SSv2 frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsar.data import ClipLoader, EpisodeInputs, EpisodeSampler, Manifest, TransformConfig, load_episode
from fsar.data.testing import frame_numbers, write_frame_folder, write_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IDENTITY = TransformConfig(image_size=16, resize_short=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for c in range(3):
        for v in range(3):
            if v == 2:
                write_frame_folder(root / f"class {c}" / f"v{v}", 5, height=16, width=16)
            else:
                write_video(root / f"class {c}" / f"v{v}.mp4", 24, height=16, width=16, gop=6)
    return root


def test_loader_samples_tsn_frames_and_transforms(root):
    loader = ClipLoader(num_frames=4, transform=IDENTITY)
    clip = Manifest.from_folder(root).clips_of("class 0")[0]
    assert loader.indices(clip, train=False) == [3, 9, 15, 21]
    frames = loader.load(clip, train=False)
    assert frames.shape == (4, 3, 16, 16) and frames.dtype == torch.float32
    # Identity normalisation: pixel values / 255 -> the painted frame numbers come back.
    assert frame_numbers((frames * 255).round().to(torch.uint8)) == [3, 9, 15, 21]
    train = loader.indices(clip, train=True, generator=torch.Generator().manual_seed(0))
    assert all(6 * i <= index < 6 * (i + 1) for i, index in enumerate(train))


def test_short_frame_folder_repeats_frames(root):
    loader = ClipLoader(num_frames=8, transform=IDENTITY)
    clip = next(c for c in Manifest.from_folder(root).clips if c.path.is_dir())
    frames = loader.load_uint8(clip, train=False)
    assert frame_numbers(frames) == [0, 0, 1, 2, 2, 3, 4, 4]


def test_load_episode_shapes_and_labels(root):
    manifest = Manifest.from_folder(root)
    episode = EpisodeSampler(manifest, way=3, shot=2, queries=1, seed=1).episode(0)
    inputs = load_episode(episode, ClipLoader(num_frames=4, transform=IDENTITY), train=True, generator=torch.Generator().manual_seed(0))
    assert isinstance(inputs, EpisodeInputs)
    assert inputs.support.shape == (6, 4, 3, 16, 16)
    assert inputs.query.shape == (3, 4, 3, 16, 16)
    assert inputs.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert inputs.query_labels.tolist() == [0, 1, 2]
    assert inputs.class_names == episode.class_names and not inputs.features
    again = load_episode(episode, ClipLoader(num_frames=4, transform=IDENTITY), train=False)
    assert torch.equal(again.query, load_episode(episode, ClipLoader(num_frames=4, transform=IDENTITY), train=False).query)


def test_loader_key_and_validation():
    a = ClipLoader(num_frames=8, transform=TransformConfig(image_size=112))
    assert a.key() != ClipLoader(num_frames=16, transform=TransformConfig(image_size=112)).key()
    assert a.key() != ClipLoader(num_frames=8, sampling="uniform", transform=TransformConfig(image_size=112)).key()
    with pytest.raises(ValueError, match="sampling"):
        ClipLoader(sampling="dense", transform=IDENTITY)
    with pytest.raises(ValueError, match="num_frames"):
        ClipLoader(num_frames=0, transform=IDENTITY)


def test_reads_an_episode_of_real_ssv2_frames():
    mini = SHARED / "data" / "ssv2-mini"
    if not mini.is_dir():
        pytest.skip(f"{mini} is absent (a user's clone has no ../shared)")
    manifest = Manifest.from_folder(mini)
    assert len(manifest.classes) == 10 and len(manifest) == 100
    episode = EpisodeSampler(manifest, way=5, shot=1, queries=1, seed=0).episode(0)
    loader = ClipLoader(num_frames=8, transform=TransformConfig(image_size=32))
    inputs = load_episode(episode, loader, train=False)
    assert inputs.support.shape == (5, 8, 3, 32, 32) and inputs.query.shape == (5, 8, 3, 32, 32)
    assert torch.isfinite(inputs.support).all()
    # Real frames, 8 different ones per clip: consecutive frames are not all identical.
    assert (inputs.support[:, 1:] - inputs.support[:, :-1]).abs().amax() > 0.1
