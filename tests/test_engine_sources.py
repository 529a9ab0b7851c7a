"""``fsar.engine.sources``: which episodes a method gets (frames or the feature cache), with the
named streams it asks for, deterministic per index, without clips the cache could not encode."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from fsar.data.inputs import MissingStreamError
from fsar.data.manifest import Clip, Manifest
from fsar.encoders.base import Encoder
from fsar.engine.sources import CachedEpisodes, FrameEpisodes, _without_skipped, episode_source, loader_for
from fsar.methods.base import FewShotMethod, MethodOutput

pytestmark = pytest.mark.usefixtures("single_thread")


class MotionEncoder(Encoder):
    """Frozen 3 -> 4 projection of the mean colour per frame, plus one extra per-clip stream:
    ``motion`` (B, 4), the mean absolute frame-to-frame change of the features."""

    name = "motion-toy"
    feature_dim = text_dim = 4
    image_size = 8
    mean = std = (0.5, 0.5, 0.5)
    shared_space = False

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(3, 4)
        self.project.requires_grad_(False)

    def encode_frames(self, frames, text_features=None):
        return self.project(frames.mean(dim=(-1, -2)))

    def encode_text(self, texts):
        return torch.zeros(len(texts), 4)

    def clip_stream_names(self):
        return ("motion",)

    def encode_clips(self, frames):
        features = self.encode_frames(frames)
        return {"features": features, "motion": (features[:, 1:] - features[:, :-1]).abs().mean(1)}


class StreamReader(FewShotMethod):
    """Reads whatever streams it is told to; ``cached`` answers uses_cached_features."""

    name = "stream-reader"

    def __init__(self, encoder, *, streams=(), cached=None) -> None:
        super().__init__()
        self.encoder = encoder
        self.streams, self.cached = tuple(streams), cached

    def required_streams(self):
        return self.streams

    def uses_cached_features(self):
        return super().uses_cached_features() if self.cached is None else self.cached

    def forward(self, inputs):  # pragma: no cover - the sources never call it
        return MethodOutput(log_probs=torch.zeros(len(inputs.query), inputs.way))


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return MotionEncoder()


@pytest.fixture(scope="module")
def manifest(tiny_dataset):
    return Manifest.from_folder(tiny_dataset, progress=False)


SAMPLING = dict(way=3, shot=1, queries=1, seed=5, num_frames=4, progress=False)


def test_a_frozen_encoder_gets_cached_features_with_the_streams_it_asks_for(encoder, manifest, tmp_path):
    method = StreamReader(encoder, streams=("motion",))
    source = episode_source(method, manifest, extract_to=tmp_path / "cache", **SAMPLING)
    assert isinstance(source, CachedEpisodes) and source.streams == ("motion",)
    inputs = source.sample(0, train=True)
    assert inputs.features and inputs.support.shape == (3, 4, 4) and inputs.query.shape == (3, 4, 4)
    assert set(inputs.support_streams) == {"motion"} and inputs.query_streams["motion"].shape == (3, 4)
    # the cached stream is what the encoder computes from the evaluation view of that clip
    episode = source.sampler.episode(0)
    loader = loader_for(encoder, num_frames=4)
    frames = torch.stack([loader.load(clip, train=False) for clip in episode.support])
    with torch.no_grad():
        expected = encoder.encode_clips(frames)
    torch.testing.assert_close(inputs.support_streams["motion"], expected["motion"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(inputs.support, expected["features"], atol=1e-5, rtol=1e-4)
    # the same index is the same episode; another index is another one
    again = source.sample(0, train=True)
    assert again.class_names == inputs.class_names and torch.equal(again.support, inputs.support)
    assert [source.sample(i, train=False).class_names for i in range(4)] != [inputs.class_names] * 4


def test_cached_episodes_name_their_rows_the_same_way_every_time(encoder, manifest, tmp_path):
    from fsar.engine.sources import open_feature_cache

    source = episode_source(StreamReader(encoder), manifest, extract_to=tmp_path / "cache", **SAMPLING)
    names = {}
    for index in range(6):
        inputs = source.sample(index, train=False)
        rows = inputs.cached_rows
        episode = source.sampler.episode(index)
        assert rows.rows_of(inputs.support) == rows.support and rows.rows_of(inputs.query) == rows.query
        for clip, name in zip((*episode.support, *episode.query), (*rows.support, *rows.query)):
            assert names.setdefault(clip.path, name) == name  # one clip, one name
    assert len(set(names.values())) == len(names)  # two clips, two names
    other = open_feature_cache(tmp_path / "cache", encoder)  # another open cache: names never meet
    again = other.load_episode(source.sampler.episode(0), source.loader)
    assert not set(again.cached_rows.support) & set(names.values())
    assert again.cached_rows.rows_of(again.support.clone()) is None


def test_no_streams_asked_means_none_loaded(encoder, manifest, tmp_path):
    source = episode_source(StreamReader(encoder), manifest, extract_to=tmp_path / "cache", **SAMPLING)
    inputs = source.sample(1, train=False)
    assert inputs.support_streams == {} and inputs.query_streams == {}


def test_a_stream_the_cache_lacks_is_a_clear_error(encoder, manifest, tmp_path):
    method = StreamReader(encoder, streams=("optical_flow",))
    source = episode_source(method, manifest, extract_to=tmp_path / "cache", **SAMPLING)
    with pytest.raises(MissingStreamError, match="optical_flow"):
        source.sample(0, train=False)


def test_frames_when_the_method_declines_the_cache_or_it_is_switched_off(encoder, manifest, tmp_path):
    declined = episode_source(StreamReader(encoder, cached=False), manifest, extract_to=tmp_path / "a", **SAMPLING)
    switched_off = episode_source(StreamReader(encoder), manifest, use_feature_cache=False, **SAMPLING)
    for source in (declined, switched_off):
        assert isinstance(source, FrameEpisodes)
        inputs = source.sample(2, train=True)
        assert not inputs.features and inputs.support.shape == (3, 4, 3, 8, 8)
        # augmentation is drawn from (seed, index): the same index gives the same frames
        assert torch.equal(source.sample(2, train=True).support, inputs.support)
    assert not (tmp_path / "a").exists()  # nothing was extracted for a method that reads frames


def test_loader_follows_the_encoder_or_the_image_size(encoder):
    assert loader_for(encoder, num_frames=3).transform.image_size == 8
    assert loader_for(encoder, num_frames=3, image_size=16).transform.image_size == 16


def test_a_cache_source_needs_a_directory(encoder, manifest):
    with pytest.raises(ValueError, match="feature cache directory"):
        episode_source(StreamReader(encoder), manifest, **SAMPLING)


def test_clips_missing_from_the_cache_are_left_out_and_counted(encoder, manifest, tmp_path, caplog):
    source = episode_source(StreamReader(encoder), manifest, extract_to=tmp_path / "cache", **SAMPLING)
    ghost = Clip(manifest.root / manifest.classes[0] / "never-encoded", 0, manifest.classes[0])
    with_ghost = Manifest(manifest.root, manifest.classes, [*manifest.clips, ghost], manifest.skipped)
    sampler = source.sampler.__class__(with_ghost, way=3, shot=1, queries=1, seed=5)
    with caplog.at_level(logging.WARNING):
        kept, left_out = _without_skipped(sampler, source.cache, with_ghost)
    assert ghost not in kept.manifest.clips and len(kept.manifest.clips) == len(manifest.clips)
    assert "1 clips" in caplog.text and "no cached features" in caplog.text
    assert [(item["path"], item["stage"]) for item in left_out] == [(str(ghost.path), "extraction")]
    assert _without_skipped(source.sampler, source.cache, manifest) == (source.sampler, [])
