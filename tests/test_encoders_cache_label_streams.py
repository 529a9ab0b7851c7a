"""Label-aware clip streams in the feature cache (``Encoder.label_stream_names``): extracted with each clip's
class name from the manifest, recorded in the index and the cache key, handed to support clips only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cache_standins import LabelledEncoder, StreamingEncoder, write_dataset
from fsar.data.episodes import Episode
from fsar.data.inputs import MissingStreamError
from fsar.data.loading import ClipLoader
from fsar.data.manifest import Manifest
from fsar.data.transforms import TransformConfig
from fsar.encoders.cache import CacheMismatchError, FeatureCache, extract_features


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


def _loader(encoder) -> ClipLoader:
    return ClipLoader(num_frames=4, transform=TransformConfig.for_encoder(encoder))


def test_label_streams_get_each_clips_own_class_name_and_reach_support_clips_only(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = LabelledEncoder()
    loader = _loader(enc)
    extract_features(manifest, enc, loader, tmp_path / "c", shard_size=4, batch_size=3, progress=False)
    # every extraction call named the class of each of its clips, in clip order
    clips = sorted(manifest.clips, key=lambda c: str(c.path.relative_to(dataset)))
    assert [name for call in enc.label_calls for name in call] == [c.class_name for c in clips]
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["label_streams"] == ["label_code"] and "label_code" in index["clip_streams"]

    cache = FeatureCache(tmp_path / "c")
    assert cache.label_streams == {"label_code"}
    support = [manifest.clips_of("gamma")[0], manifest.clips_of("alpha")[0]]
    query = [manifest.clips_of("gamma")[1], manifest.clips_of("alpha")[2]]
    episode = Episode(class_names=["gamma", "alpha"], support=support, support_labels=[0, 1], query=query,
                      query_labels=[0, 1])
    inputs = cache.load_episode(episode, loader, streams=("label_code", "clip_code"))
    assert set(inputs.support_streams) == {"label_code", "clip_code"}
    assert set(inputs.query_streams) == {"clip_code"}  # the query's label-aware stream is never handed out
    with pytest.raises(MissingStreamError, match="label_code"):
        inputs.stream("label_code", "query")
    frames = torch.stack([loader.load(c, train=False) for c in support])
    expected = enc.encode_clips(frames, labels=["gamma", "alpha"])["label_code"]
    torch.testing.assert_close(inputs.stream("label_code", "support"), expected)
    wrong = enc.encode_clips(frames, labels=["alpha", "gamma"])["label_code"]
    assert not torch.allclose(inputs.stream("label_code", "support"), wrong)  # the label did shape the stream
    cache.check_encoder(LabelledEncoder())


def test_encoders_without_label_streams_are_called_without_labels(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = StreamingEncoder()  # encode_clips(frames) takes no labels argument at all
    extract_features(manifest, enc, _loader(enc), tmp_path / "c", progress=False)
    assert json.loads((tmp_path / "c" / "index.json").read_text())["label_streams"] == []
    with pytest.raises(CacheMismatchError, match="label-aware"):
        FeatureCache(tmp_path / "c").check_encoder(_Relabelled())


class _Relabelled(StreamingEncoder):
    """The same streams, but one of them declared label-aware: another cache key."""

    def label_stream_names(self):
        return ("clip_code",)


def test_label_streams_must_be_clip_streams(dataset, tmp_path):
    class Broken(LabelledEncoder):
        def label_stream_names(self):
            return ("no_such_stream",)

    with pytest.raises(ValueError, match="not among its clip_stream_names"):
        extract_features(Manifest.from_folder(dataset), Broken(), _loader(Broken()), tmp_path / "c", progress=False)
