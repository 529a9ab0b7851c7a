"""Feature cache: extraction in atomic resumable shards, the index, reading episodes back, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cache_standins import TinyEncoder, write_dataset
from fsar.data.episodes import Episode
from fsar.data.loading import ClipLoader
from fsar.data.manifest import Clip, Manifest
from fsar.data.testing import write_frame_folder
from fsar.data.transforms import TransformConfig
from fsar.encoders.cache import (
    CacheMismatchError,
    FeatureCache,
    MissingFeatureError,
    extract_features,
)


def _loader_with_other_crop(encoder) -> ClipLoader:
    return ClipLoader(num_frames=4, transform=TransformConfig.for_encoder(encoder, resize_short=24))


def _loader(encoder, frames: int = 4) -> ClipLoader:
    return ClipLoader(num_frames=frames, transform=TransformConfig.for_encoder(encoder))


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """3 classes x 3 clips: frame folders and mp4 files of different lengths (frame-identifying colours)."""
    return write_dataset(tmp_path / "data")


def _tensors(cache: FeatureCache) -> dict[str, torch.Tensor]:
    return {key: cache._tensor(entry["shard"], key) for key, entry in cache.entries.items()}


def test_features_equal_the_encoder_on_the_loader_eval_view(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder()
    loader = _loader(enc)
    summary = extract_features(manifest, enc, loader, tmp_path / "cache", shard_size=4, batch_size=3, progress=False)
    assert summary.extracted == summary.encoded == 9 and summary.skipped == []
    assert summary.shards_written == 3 and summary.shards_reused == 0
    cache = FeatureCache(tmp_path / "cache")
    assert cache.complete and len(cache) == 9 and cache.feature_dim == 6 and cache.backbone == "tiny-test"
    for clip in manifest.clips:
        indices = loader.indices(clip, train=False)
        expected = enc.encode_frames(loader.load(clip, train=False)[None])[0]
        got = cache.get(clip.path, indices, loader.key())
        assert got is not None and got.shape == (4, 6)
        torch.testing.assert_close(got, expected)
        rel = clip.path.relative_to(dataset).as_posix()
        assert cache.entries[rel]["indices"] == indices
        assert rel in cache
        # Other indices or another transform are not this entry.
        assert cache.get(clip.path, [0, 0, 0, 0], loader.key()) is None
        assert cache.get(clip.path, indices, "another transform") is None
    # Relative paths work as keys too.
    first = manifest.clips[0]
    rel = first.path.relative_to(dataset)
    assert cache.get(rel, loader.indices(first, train=False), loader.key()) is not None
    # No temporary files are left behind.
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert names[0] == "index.json" and len(names) == 4
    assert [n[:11] for n in names[1:]] == ["shard-00000", "shard-00001", "shard-00002"]
    assert all(n.endswith(".safetensors") for n in names[1:])


def test_index_records_backbone_transform_and_clips(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder()
    loader = _loader(enc)
    extract_features(manifest, enc, loader, tmp_path / "c", backbone_options={"weights": "x"}, progress=False)
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["backbone"] == "tiny-test" and index["backbone_options"] == {"weights": "x"}
    assert index["transform_key"] == loader.key() and index["num_frames"] == 4 and index["sampling"] == "tsn"
    assert index["complete"] is True
    assert set(index["entries"]) == {c.path.relative_to(dataset).as_posix() for c in manifest.clips}
    entry = index["entries"]["alpha/clip0"]
    assert entry["num_frames"] == 6 and entry["indices"] == [0, 2, 3, 5]


def test_interrupted_extraction_resumes_and_matches_an_uninterrupted_run(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    enc = TinyEncoder()
    # The reference decodes serially, the others with background prefetch: same bytes.
    extract_features(manifest, enc, _loader(enc), reference_dir, shard_size=2, prefetch=0, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_first(number, path):
        assert path.exists()
        raise Interrupt

    enc1 = TinyEncoder()
    with pytest.raises(Interrupt):
        extract_features(manifest, enc1, _loader(enc1), resumed_dir, shard_size=2, progress=False,
                         on_shard_written=stop_after_first)
    assert enc1.clips_seen == 2
    partial = FeatureCache(resumed_dir)
    assert not partial.complete and len(partial) == 2
    missing = next(c for c in manifest.clips if c.path.relative_to(dataset).as_posix() not in partial.entries)
    with pytest.raises(MissingFeatureError, match="interrupted"):
        partial.clip_features(missing, _loader(enc1))

    enc2 = TinyEncoder()
    summary = extract_features(manifest, enc2, _loader(enc2), resumed_dir, shard_size=2, progress=False)
    assert summary.shards_reused == 1 and summary.shards_written == 4
    assert enc2.clips_seen == 7  # the first shard's two clips were not encoded again
    resumed, reference = FeatureCache(resumed_dir), FeatureCache(reference_dir)
    assert resumed.complete and resumed.entries == reference.entries
    a, b = _tensors(resumed), _tensors(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # A third run has nothing to do.
    enc3 = TinyEncoder()
    again = extract_features(manifest, enc3, _loader(enc3), resumed_dir, shard_size=2, progress=False)
    assert enc3.calls == 0 and again.shards_reused == 5 and again.extracted == 9


def test_refuses_trainable_encoder(dataset, tmp_path):
    enc = TinyEncoder(trainable=True)
    with pytest.raises(ValueError, match="tiny-test.*trainable"):
        extract_features(Manifest.from_folder(dataset), enc, _loader(enc), tmp_path / "c", progress=False)


def test_refuses_to_mix_backbones_weights_or_views(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder(seed=0)
    extract_features(manifest, enc, _loader(enc), tmp_path / "c", progress=False)
    other_weights = TinyEncoder(seed=1)
    with pytest.raises(CacheMismatchError, match="refusing to mix"):
        extract_features(manifest, other_weights, _loader(other_weights), tmp_path / "c", progress=False)
    with pytest.raises(CacheMismatchError, match="refusing to mix"):
        extract_features(manifest, enc, _loader(enc, frames=3), tmp_path / "c", progress=False)
    with pytest.raises(CacheMismatchError, match="refusing to mix"):
        extract_features(manifest, enc, _loader_with_other_crop(enc), tmp_path / "c", progress=False)
    # Same weights under another spelling of the options: same features, the cache is reused.
    again = extract_features(manifest, TinyEncoder(seed=0), _loader(enc), tmp_path / "c",
                             backbone_options={"weights": "pretrained"}, progress=False)
    assert again.shards_written == 0 and again.extracted == 9
    cache = FeatureCache(tmp_path / "c")
    cache.check_backbone("tiny-test")
    with pytest.raises(CacheMismatchError, match="effnet"):
        cache.check_backbone("effnet-lite0+minilm")


def test_unreadable_clips_are_counted_listed_and_not_fatal(dataset, tmp_path, caplog):
    broken = dataset / "beta" / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    manifest = Manifest.from_folder(dataset, validate=False)
    assert any(c.path == broken for c in manifest.clips)
    enc = TinyEncoder()
    loader = _loader(enc)
    summary = extract_features(manifest, enc, loader, tmp_path / "c", shard_size=3, progress=False)
    assert summary.extracted == 9 and [p for p, _ in summary.skipped] == ["beta/broken.mp4"]
    assert "skipping unreadable clip" in caplog.text and "broken.mp4" in caplog.text
    cache = FeatureCache(tmp_path / "c")
    assert "beta/broken.mp4" in cache.skipped and "beta/broken.mp4" not in cache
    with pytest.raises(MissingFeatureError, match=r"broken\.mp4.*skipped at extraction"):
        cache.clip_features(Clip(broken, 1, "beta"), loader)
    # Manifest-level skips are listed too.
    validated = Manifest.from_folder(dataset)
    assert any(s.path == broken for s in validated.skipped)
    summary2 = extract_features(validated, enc, loader, tmp_path / "c2", progress=False)
    assert [p for p, _ in summary2.skipped] == ["beta/broken.mp4"]


def test_load_episode_builds_feature_inputs(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder()
    loader = _loader(enc)
    extract_features(manifest, enc, loader, tmp_path / "c", progress=False)
    cache = FeatureCache(tmp_path / "c")
    names = ["gamma", "alpha"]
    support = [manifest.clips_of("gamma")[0], manifest.clips_of("alpha")[0]]
    query = [manifest.clips_of("gamma")[1], manifest.clips_of("alpha")[2], manifest.clips_of("alpha")[1]]
    episode = Episode(class_names=names, support=support, support_labels=[0, 1], query=query,
                      query_labels=[0, 1, 1])
    inputs = cache.load_episode(episode, loader)
    assert inputs.features is True
    assert inputs.support.shape == (2, 4, 6) and inputs.query.shape == (3, 4, 6)
    assert inputs.support_labels.tolist() == [0, 1] and inputs.query_labels.tolist() == [0, 1, 1]
    assert inputs.class_names == names
    for row, clip in zip(inputs.query, query):
        torch.testing.assert_close(row, enc.encode_frames(loader.load(clip, train=False)[None])[0])

    # A clip that was never extracted, and a loader asking for another view: clear errors naming the clip.
    stranger = Clip(dataset / "alpha" / "not-there", 1, "alpha")
    bad = Episode(class_names=names, support=support, support_labels=[0, 1], query=[stranger], query_labels=[1])
    with pytest.raises(MissingFeatureError, match="not-there.*not extracted"):
        cache.load_episode(bad, loader)
    with pytest.raises(MissingFeatureError, match="clip0.*transform"):
        cache.load_episode(episode, _loader(enc, frames=8))


def test_moved_dataset_is_matched_by_trailing_path(dataset, tmp_path):
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder()
    loader = _loader(enc)
    extract_features(manifest, enc, loader, tmp_path / "c", progress=False)
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    dataset.rename(moved)
    cache = FeatureCache(tmp_path / "c")
    clip = Manifest.from_folder(moved).clips_of("beta")[1]
    assert cache.clip_features(clip, loader).shape == (4, 6)


def test_missing_or_foreign_cache_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="fsar extract"):
        FeatureCache(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="format"):
        FeatureCache(tmp_path)


def test_cli_extract_with_the_embedded_encoder(dataset, tmp_path, capsys, monkeypatch):
    """One real EfficientNet-Lite0 run through `fsar extract`, then reading an episode back."""
    import fsar.encoders
    from fsar.cli import main

    built = []
    create = fsar.encoders.create_encoder

    def recording_create(name, **options):
        built.append(create(name, **options))
        return built[-1]

    monkeypatch.setattr(fsar.encoders, "create_encoder", recording_create)
    out = tmp_path / "effnet"
    code = main(["extract", "--data", str(dataset), "--backbone", "effnet-lite0+minilm", "--out", str(out),
                 "--frames", "2", "--batch-size", "4", "--shard-size", "5", "--no-progress"])
    assert code == 0
    assert "9 clips cached" in capsys.readouterr().out
    cache = FeatureCache(out)
    assert cache.backbone == "effnet-lite0+minilm" and cache.feature_dim == 1280
    enc = built[0]
    assert enc.weights == "pretrained"
    loader = ClipLoader(num_frames=2, transform=TransformConfig.for_encoder(enc))
    clip = Manifest.from_folder(dataset).clips_of("gamma")[2]
    expected = enc.encode_frames(loader.load(clip, train=False)[None])[0]
    torch.testing.assert_close(cache.clip_features(clip, loader), expected, rtol=1e-4, atol=1e-4)
    # A second run with other weights into the same directory is refused with a one-line error.
    code = main(["extract", "--data", str(dataset), "--backbone", "effnet-lite0+minilm", "--weights", "random",
                 "--out", str(out), "--frames", "2", "--no-progress"])
    assert code == 2 and "refusing to mix" in capsys.readouterr().err
    assert main(["extract", "--data", str(dataset), "--backbone", "nope", "--out", str(out)]) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err


def test_relative_data_root(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(dataset.parent)
    manifest = Manifest.from_folder(Path(dataset.name))
    enc = TinyEncoder()
    loader = _loader(enc)
    extract_features(manifest, enc, loader, Path("cache"), progress=False)
    cache = FeatureCache(tmp_path / "cache")
    assert "alpha/clip1" in cache.entries
    clip = Manifest.from_folder(dataset).clips_of("alpha")[1]  # absolute paths this time
    assert cache.clip_features(clip, loader).shape == (4, 6)


def test_cli_extract_split_file_and_refusals(dataset, tmp_path, capsys, monkeypatch):
    from fsar.cli import main
    from fsar.encoders import ENCODERS

    monkeypatch.setitem(ENCODERS._factories, "tiny-test", lambda weights=None, **o: TinyEncoder())
    monkeypatch.setitem(ENCODERS._factories, "tiny-trainable", lambda weights=None, **o: TinyEncoder(trainable=True))
    split = tmp_path / "test.txt"
    split.write_text("alpha/clip0\nalpha/clip2\ngamma/clip1\ngamma/missing-video\n")
    out = tmp_path / "c"
    argv = ["extract", "--data", str(dataset), "--split-file", str(split), "--backbone", "tiny-test", "--out", str(out),
            "--frames", "3", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 clips cached" in printed and "1 skipped" in printed and "missing-video" in printed
    cache = FeatureCache(out)
    assert set(cache.entries) == {"alpha/clip0", "alpha/clip2.mp4", "gamma/clip1"}
    assert cache.num_frames == 3 and list(cache.skipped) == ["gamma/missing-video"]

    assert main(["extract", "--data", str(dataset), "--backbone", "tiny-trainable", "--out", str(tmp_path / "d")]) == 2
    assert "not frozen" in capsys.readouterr().err
    assert main(["extract", "--data", str(tmp_path / "nowhere"), "--backbone", "tiny-test", "--out", str(tmp_path / "e")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_second_split_adds_to_the_cache_and_other_roots_are_refused(dataset, tmp_path):
    full = Manifest.from_folder(dataset)
    train, test = full.subset(["alpha", "beta"]), full.subset(["gamma"])
    enc = TinyEncoder()
    loader = _loader(enc)
    extract_features(train, enc, loader, tmp_path / "c", shard_size=2, progress=False)
    summary = extract_features(test, enc, loader, tmp_path / "c", shard_size=2, progress=False)
    assert summary.extracted == 3 and summary.shards_written == 2
    cache = FeatureCache(tmp_path / "c")
    assert len(cache) == 9  # train clips kept beside the test clips
    for clip in full.clips:
        torch.testing.assert_close(cache.clip_features(clip, loader),
                                   enc.encode_frames(loader.load(clip, train=False)[None])[0])
    other_root = tmp_path / "other"
    write_frame_folder(other_root / "alpha" / "clip0", 5)
    with pytest.raises(CacheMismatchError, match="one data root"):
        extract_features(Manifest.from_folder(other_root), enc, loader, tmp_path / "c", progress=False)


def test_failed_shard_write_leaves_no_file(dataset, tmp_path, monkeypatch):
    import safetensors.torch

    calls = []

    def failing_save(tensors, filename, metadata=None):
        calls.append(filename)
        Path(filename).write_bytes(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    enc = TinyEncoder()
    with pytest.raises(OSError, match="disk full"):
        extract_features(Manifest.from_folder(dataset), enc, _loader(enc), tmp_path / "c", progress=False)
    assert calls and list((tmp_path / "c").iterdir()) == []


def test_cli_extract_with_train_flags_serves_the_train_source(dataset, tmp_path, capsys, monkeypatch):
    """`fsar extract --split-file-dir D --frames 3 --image-size 12` fills the cache `fsar train` reads
    with the same flags (train and val splits, the loader the engine builds)."""
    from types import SimpleNamespace

    from fsar.cli import main
    from fsar.encoders import ENCODERS
    from fsar.engine.sources import CachedEpisodes, episode_source

    monkeypatch.setitem(ENCODERS._factories, "tiny-test", lambda weights=None, **o: TinyEncoder())
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text("alpha/clip0\nalpha/clip1\nbeta/clip0\nbeta/clip1\n")
    (splits / "val.txt").write_text("gamma/clip0\ngamma/clip1\n")
    out = tmp_path / "c"
    argv = ["extract", "--data", str(dataset), "--split-file-dir", str(splits), "--backbone", "tiny-test", "--out", str(out),
            "--frames", "3", "--image-size", "12", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[train.txt]: 4 clips cached" in printed and "[val.txt]: 2 clips cached" in printed
    cache = FeatureCache(out)
    assert len(cache) == 6 and '"image_size":12' in cache.transform_key

    method = SimpleNamespace(encoder=TinyEncoder(), uses_cached_features=lambda: True, required_streams=lambda: ())
    for split, classes in (("train.txt", ["alpha", "beta"]), ("val.txt", ["gamma"])):
        manifest = Manifest.from_split_file(dataset, splits / split)
        source = episode_source(method, manifest, way=len(classes), shot=1, queries=1, seed=0, num_frames=3,
                                image_size=12, features=out)
        assert isinstance(source, CachedEpisodes)
        inputs = source.sample(0, train=True)
        assert inputs.features and inputs.support.shape == (len(classes), 3, 6)
    # The encoder's own image size is another view: the cache says so instead of serving it.
    manifest = Manifest.from_split_file(dataset, splits / "train.txt")
    other = episode_source(method, manifest, way=2, shot=1, queries=1, seed=0, num_frames=3, features=out)
    with pytest.raises(MissingFeatureError, match="transform"):
        other.sample(0, train=True)
    assert main(["extract", "--data", str(dataset), "--split-file-dir", str(tmp_path), "--backbone", "tiny-test",
                 "--out", str(out)]) == 2
    assert "no train.txt, val.txt or test.txt" in capsys.readouterr().err
