"""Named feature streams: encoders produce them, the cache stores and keys them, episodes carry them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cache_standins import StreamingEncoder, TinyEncoder, write_dataset
from fsar.data.episodes import Episode
from fsar.data.inputs import EpisodeInputs, MissingStreamError
from fsar.data.loading import ClipLoader
from fsar.data.manifest import Manifest
from fsar.data.transforms import TransformConfig
from fsar.encoders.cache import CacheMismatchError, FeatureCache, MissingFeatureError, extract_features


def _loader(encoder, frames: int = 4) -> ClipLoader:
    return ClipLoader(num_frames=frames, transform=TransformConfig.for_encoder(encoder))


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


def _episode(manifest: Manifest) -> Episode:
    names = ["gamma", "alpha"]
    support = [manifest.clips_of("gamma")[0], manifest.clips_of("alpha")[0]]
    query = [manifest.clips_of("gamma")[1], manifest.clips_of("alpha")[2], manifest.clips_of("alpha")[1]]
    return Episode(class_names=names, support=support, support_labels=[0, 1], query=query, query_labels=[0, 1, 1])


def _all_tensors(directory: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {p.name: load_file(str(p)) for p in sorted(directory.glob("*.safetensors"))}


def test_streams_are_extracted_recorded_and_loaded_into_episodes(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = StreamingEncoder()
    loader = _loader(enc)
    summary = extract_features(manifest, enc, loader, tmp_path / "c", shard_size=4, batch_size=3, progress=False)
    assert summary.extracted == 9 and summary.classes_encoded == 3
    assert enc.class_calls == [["alpha", "beta", "gamma"]]

    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["clip_streams"] == ["clip_code", "row_means"] and index["class_streams"] == ["name_code"]
    assert index["stream_key"] == enc.stream_key()
    assert index["streams"]["clip"] == {
        "features": {"shape": [4, 6], "dtype": "float32"},
        "row_means": {"shape": [4, 3, 16], "dtype": "float32"},
        "clip_code": {"shape": [2], "dtype": "float64"},
    }
    assert index["streams"]["class"] == {"name_code": {"shape": [4], "dtype": "float32"}}
    assert set(index["class_entries"]) == {"alpha", "beta", "gamma"}

    cache = FeatureCache(tmp_path / "c")
    episode = _episode(manifest)
    inputs = cache.load_episode(episode, loader, streams=("row_means", "name_code", "clip_code", "features"))
    assert set(inputs.support_streams) == set(inputs.query_streams) == {"row_means", "clip_code"}
    assert inputs.support_streams["row_means"].shape == (2, 4, 3, 16)
    assert inputs.query_streams["clip_code"].shape == (3, 2) and inputs.query_streams["clip_code"].dtype == torch.float64
    assert inputs.class_streams["name_code"].shape == (2, 4)
    for role, clips in (("support", episode.support), ("query", episode.query)):
        expected = enc.encode_clips(torch.stack([loader.load(c, train=False) for c in clips]))
        for name in ("features", "row_means", "clip_code"):
            torch.testing.assert_close(inputs.stream(name, role), expected[name])
    # Class rows follow the episode's class order, not the manifest's.
    torch.testing.assert_close(inputs.stream("name_code", "class"), enc.encode_class_streams(["gamma", "alpha"])["name_code"])
    # Without a request, no extra stream is read.
    plain = cache.load_episode(episode, loader)
    assert plain.support_streams == plain.query_streams == plain.class_streams == {}
    torch.testing.assert_close(plain.support, inputs.support)


def test_missing_streams_raise_a_readable_error_naming_the_stream_and_the_fix(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = StreamingEncoder()
    extract_features(manifest, enc, _loader(enc), tmp_path / "c", progress=False)
    cache = FeatureCache(tmp_path / "c")
    with pytest.raises(MissingStreamError) as caught:
        cache.load_episode(_episode(manifest), _loader(enc), streams=("text_bank",))
    message = str(caught.value)
    assert isinstance(caught.value, KeyError) and caught.value.stream == "text_bank"
    assert "'text_bank'" in message and "tiny-streams" in message and "fsar extract --data ROOT --backbone" in message
    assert "row_means (clip)" in message and "name_code (class)" in message
    assert not message.startswith(('"', "'"))  # str() is the sentence, not a KeyError repr

    inputs = cache.load_episode(_episode(manifest), _loader(enc), streams=("row_means",))
    with pytest.raises(MissingStreamError, match=r"no class stream 'row_means'.*its class streams: none.*fsar extract"):
        inputs.stream("row_means", "class")
    with pytest.raises(MissingStreamError, match=r"no query stream 'name_code'.*'features', 'row_means'"):
        inputs.stream("name_code", "query")
    with pytest.raises(ValueError, match="role"):
        inputs.stream("row_means", "clips")
    # A class the manifest did not hold at extraction has no class stream.
    with pytest.raises(MissingFeatureError, match="'delta'.*not in the manifest"):
        cache.class_stream("delta", "name_code")


def test_frame_episodes_have_no_feature_stream():
    frames = EpisodeInputs(torch.zeros(2, 4, 3, 8, 8), torch.tensor([0, 1]), torch.zeros(1, 4, 3, 8, 8), ["a", "b"])
    with pytest.raises(MissingStreamError, match="'features'.*none"):
        frames.stream("features", "support")


def test_episode_inputs_to_moves_every_stream():
    inputs = EpisodeInputs(
        torch.zeros(2, 4, 6), torch.tensor([0, 1]), torch.zeros(3, 4, 6), ["a", "b"], torch.tensor([0, 1, 1]), True,
        support_streams={"s": torch.zeros(2, 5)}, query_streams={"s": torch.zeros(3, 5)},
        class_streams={"c": torch.zeros(2, 7)},
    )
    moved = inputs.to("meta")
    tensors = [moved.support, moved.query, moved.support_labels, moved.query_labels,
               moved.support_streams["s"], moved.query_streams["s"], moved.class_streams["c"]]
    assert all(t.device.type == "meta" for t in tensors)
    assert moved.stream("s", "query").shape == (3, 5) and moved.stream("features", "support").shape == (2, 4, 6)


def test_another_stream_key_or_fingerprint_is_refused_naming_what_differs(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = StreamingEncoder(layer=1)
    extract_features(manifest, enc, _loader(enc), tmp_path / "c", progress=False)
    other_layer = StreamingEncoder(layer=2)
    with pytest.raises(CacheMismatchError, match=r"refusing to mix.*stream_key \{'layer': 1.*\(cache\) vs \{'layer': 2"):
        extract_features(manifest, other_layer, _loader(other_layer), tmp_path / "c", progress=False)
    cache = FeatureCache(tmp_path / "c")
    cache.check_encoder(StreamingEncoder(layer=1))
    with pytest.raises(CacheMismatchError, match=r"stream_key .*'layer': 1.*'layer': 2") as caught:
        cache.check_encoder(other_layer)
    assert "weights fingerprint" not in str(caught.value)  # only what differs is named
    with pytest.raises(CacheMismatchError, match=r"weights fingerprint") as caught:
        cache.check_encoder(StreamingEncoder(seed=5))
    assert "stream_key {" not in str(caught.value)
    other_prompt = StreamingEncoder(prompt="a photo of {}")
    with pytest.raises(CacheMismatchError, match="prompt_sha1"):
        cache.check_encoder(other_prompt)
    # The single-stream encoder of another name and streams: the backbone is named first.
    with pytest.raises(CacheMismatchError, match="tiny-test"):
        cache.check_encoder(TinyEncoder())


def test_interrupted_stream_extraction_resumes_to_the_same_bytes(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = StreamingEncoder()
    extract_features(manifest, enc, _loader(enc), tmp_path / "clean", shard_size=2, prefetch=0, progress=False)

    class Interrupt(Exception):
        pass

    def stop(number, path):
        raise Interrupt

    with pytest.raises(Interrupt):
        extract_features(manifest, StreamingEncoder(), _loader(enc), tmp_path / "resumed", shard_size=2,
                         progress=False, on_shard_written=stop)
    again = StreamingEncoder()
    summary = extract_features(manifest, again, _loader(enc), tmp_path / "resumed", shard_size=2, progress=False)
    assert summary.shards_reused == 1 and again.class_calls == []  # class streams were already there
    clean, resumed = _all_tensors(tmp_path / "clean"), _all_tensors(tmp_path / "resumed")
    assert clean.keys() == resumed.keys()
    for name in clean:
        assert clean[name].keys() == resumed[name].keys()
        assert all(torch.equal(clean[name][k], resumed[name][k]) for k in clean[name])
    index = lambda d: {k: v for k, v in json.loads((d / "index.json").read_text()).items() if k != "root"}  # noqa: E731
    assert index(tmp_path / "clean") == index(tmp_path / "resumed")


def test_a_second_split_adds_its_class_streams(dataset, tmp_path):
    full = Manifest.from_folder(dataset)
    enc = StreamingEncoder()
    first = extract_features(full.subset(["alpha", "beta"]), enc, _loader(enc), tmp_path / "c", progress=False)
    second = extract_features(full.subset(["gamma"]), enc, _loader(enc), tmp_path / "c", progress=False)
    assert (first.classes_encoded, second.classes_encoded) == (2, 1)
    assert enc.class_calls == [["alpha", "beta"], ["gamma"]]
    cache = FeatureCache(tmp_path / "c")
    for name in ("alpha", "beta", "gamma"):
        torch.testing.assert_close(cache.class_stream(name, "name_code"), enc.encode_class_streams([name])["name_code"][0])
    inputs = cache.load_episode(_episode(full), _loader(enc), streams=("name_code", "clip_code"))
    assert inputs.class_streams["name_code"].shape == (2, 4) and inputs.support_streams["clip_code"].shape == (2, 2)


def test_an_encoder_whose_streams_disagree_with_its_names_is_refused(dataset, tmp_path):
    class Forgetful(StreamingEncoder):
        def encode_clips(self, frames):
            streams = super().encode_clips(frames)
            del streams["clip_code"]
            return streams

    class RaggedClassStreams(StreamingEncoder):
        def encode_class_streams(self, class_names):
            return {"name_code": torch.zeros(len(class_names) + 1, 4)}

    manifest = Manifest.from_folder(dataset)
    enc = Forgetful()
    with pytest.raises(ValueError, match=r"tiny-streams.*encode_clips\(\) must return.*clip_code"):
        extract_features(manifest, enc, _loader(enc), tmp_path / "a", progress=False)
    enc = RaggedClassStreams()
    with pytest.raises(ValueError, match="one row per class name"):
        extract_features(manifest, enc, _loader(enc), tmp_path / "b", progress=False)


def _make_single_stream_cache_like_before_streams(directory: Path) -> None:
    """Rewrite a TinyEncoder cache as the code before named streams wrote it: no stream fields in the
    index or the shard metadata (same tensors)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fsar.encoders.cache.store import _read_shard_metadata

    index_path = directory / "index.json"
    index = json.loads(index_path.read_text())
    for name in ("streams", "class_entries", "stream_key", "clip_streams", "class_streams"):
        del index[name]
    index_path.write_text(json.dumps(index))
    for shard in directory.glob("shard-*.safetensors"):
        metadata = _read_shard_metadata(shard)  # written as one key; the old format had one key per field
        with safe_open(str(shard), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = json.loads(metadata.pop("streams") and metadata["header"])
        for name in ("stream_key", "clip_streams", "class_streams"):
            del header[name]
        metadata["header"] = json.dumps(header, sort_keys=True)
        save_file(tensors, str(shard), metadata=metadata)


def test_single_stream_caches_written_before_streams_behave_as_before(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder()
    loader = _loader(enc)
    extract_features(manifest, enc, loader, tmp_path / "c", shard_size=4, progress=False)
    _make_single_stream_cache_like_before_streams(tmp_path / "c")

    cache = FeatureCache(tmp_path / "c")
    assert cache.clip_streams == {"features": {"shape": [4, 6], "dtype": "float32"}} and cache.class_streams == {}
    assert cache.stream_key == {}
    cache.check_encoder(TinyEncoder())
    inputs = cache.load_episode(_episode(manifest), loader, streams=("features",))
    assert inputs.support_streams == {} and inputs.stream("features", "query").shape == (3, 4, 6)
    torch.testing.assert_close(inputs.query[0], enc.encode_frames(loader.load(manifest.clips_of("gamma")[1], train=False)[None])[0])
    with pytest.raises(MissingStreamError, match="'row_means'.*features \\(clip\\)"):
        cache.load_episode(_episode(manifest), loader, streams=("row_means",))
    # Re-extracting with the same single-stream encoder reuses every old shard.
    again = TinyEncoder()
    summary = extract_features(manifest, again, loader, tmp_path / "c", shard_size=4, progress=False)
    assert summary.shards_written == 0 and summary.shards_reused == 3 and again.calls == 0
    # A streaming encoder is another set of streams: refused, naming them.
    streaming = StreamingEncoder()
    streaming.name = "tiny-test"
    with pytest.raises(CacheMismatchError, match=r"clip streams \[\] \(cache\) vs \['clip_code', 'row_means'\]"):
        extract_features(manifest, streaming, loader, tmp_path / "c", shard_size=4, progress=False)


def test_stream_hooks_are_checked_before_anything_is_written(dataset, tmp_path):
    class Unserialisable(StreamingEncoder):
        def stream_key(self):
            return {"layer": object()}

    class ShadowsFeatures(StreamingEncoder):
        def clip_stream_names(self):
            return ("features", "row_means")

    manifest = Manifest.from_folder(dataset)
    for encoder, pattern in ((Unserialisable(), "stream_key.*JSON"), (ShadowsFeatures(), "other than 'features'")):
        with pytest.raises(ValueError, match=pattern):
            extract_features(manifest, encoder, _loader(encoder), tmp_path / "c", progress=False)
        assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_missing_stream_error_default_advice():
    error = MissingStreamError("visual_states", "support", ["features"])
    assert isinstance(error, KeyError) and error.present == ("features",)
    assert str(error).startswith("episode has no support stream 'visual_states' (its support streams: 'features'); ")
    assert "fsar extract --data ROOT --backbone B" in str(error) and "clip_stream_names" in str(error)


# -- through the real engine and `fsar eval` ----------------------------------------------------------


def _stream_method(required: tuple[str, ...]):
    """A one-file method on a streaming backbone that reads named streams (``required``)."""
    from fsar.methods.common import EncoderMethod, class_means
    from fsar.methods import MethodOutput

    class StreamReader(EncoderMethod):
        name = "stream-reader"
        seen: list[dict[str, tuple]] = []

        def __init__(self, *, backbone, weights=None, finetune=None, **options) -> None:
            from fsar.encoders import create_encoder

            super().__init__(create_encoder(backbone, weights=weights))
            self.scale = torch.nn.Parameter(torch.ones(()))

        def required_streams(self):
            return required

        def forward(self, inputs):
            rows = inputs.stream("row_means", "support").flatten(1)
            queries = inputs.stream("row_means", "query").flatten(1)
            codes = inputs.stream("name_code", "class")
            type(self).seen.append({"support": tuple(rows.shape), "query": tuple(queries.shape),
                                    "class": tuple(codes.shape), "features": inputs.features})
            prototypes = class_means(rows, inputs.support_labels, inputs.way)
            logits = -self.scale * torch.cdist(queries, prototypes) + 0.0 * codes.sum()
            return MethodOutput(log_probs=torch.log_softmax(logits, dim=-1))

    return StreamReader


@pytest.mark.parametrize("required", [("row_means", "name_code"), ("row_means", "text_bank")])
def test_fsar_eval_hands_a_method_the_streams_it_requires(required, dataset, tmp_path, capsys, monkeypatch):
    from fsar.cli import main
    from fsar.encoders import ENCODERS
    from fsar.methods import METHODS

    monkeypatch.setitem(ENCODERS._factories, "tiny-streams", lambda weights=None, **o: StreamingEncoder())
    method = _stream_method(required)
    monkeypatch.setitem(METHODS._factories, "stream-reader", method)
    code = main(["eval", "--data", str(dataset), "--method", "stream-reader", "--backbone", "tiny-streams",
                 "--way", "3", "--shot", "1", "--queries", "1", "--episodes", "2", "--frames", "4", "--no-progress"])
    if "text_bank" in required:  # the cache of this backbone has no such stream: one line, no traceback
        err = capsys.readouterr().err
        assert code == 2 and "'text_bank'" in err and "fsar extract" in err and "Traceback" not in err
        assert method.seen == []
    else:
        assert code == 0
        assert method.seen == [{"support": (3, 4 * 3 * 16), "query": (3, 4 * 3 * 16), "class": (3, 4),
                                "features": True}] * 2
