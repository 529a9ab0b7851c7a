"""fsar's one error path and the integrity helpers behind the bad-input corpus, tested directly."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from cache_standins import TinyEncoder, write_dataset

from fsar import errors
from fsar.cli import CLIError, main
from fsar.cli._values import ArgumentParser, int_at_least, number
from fsar.data.integrity import clip_fingerprint, fingerprint_changes, remove_stale_temporaries, tensors_sha256
from fsar.data.loading import ClipLoader
from fsar.data.manifest import Manifest
from fsar.data.transforms import TransformConfig
from fsar.data.video import VideoReadError, image_to_rgb8


def test_every_exception_of_fsar_is_of_its_kind():
    from fsar.data.episodes import EpisodeError
    from fsar.data.inputs import MissingStreamError
    from fsar.data.manifest import ManifestError
    from fsar.data.synth import SynthDatasetError
    from fsar.encoders.cache import CacheCorruptError, CacheMismatchError, CacheNotFoundError, MissingFeatureError
    from fsar.encoders.clip import ClipWeightsError
    from fsar.engine.checkpoint import CheckpointError, CheckpointMismatchError
    from fsar.engine.config import ConfigError
    from fsar.engine.train import TrainError

    kinds = {
        errors.ConfigError: [ConfigError, TrainError, CLIError],
        errors.DataError: [ManifestError, VideoReadError, EpisodeError, SynthDatasetError],
        errors.CacheError: [CacheMismatchError, MissingFeatureError, CacheCorruptError, CacheNotFoundError,
                            MissingStreamError],
        errors.CheckpointError: [CheckpointError, CheckpointMismatchError],
        errors.ModelError: [ClipWeightsError],
    }
    for kind, classes in kinds.items():
        assert issubclass(kind, errors.FsarError) and issubclass(kind, ValueError)
        for cls in classes:
            assert issubclass(cls, kind), cls
    # the older bases still catch them
    assert issubclass(MissingFeatureError, KeyError) and issubclass(CacheNotFoundError, FileNotFoundError)
    assert str(MissingFeatureError("a readable message")) == "a readable message"


def test_one_line_error_and_a_traceback_only_with_debug(tmp_path, capsys):
    args = ["data", "check", "--data", str(tmp_path / "missing"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fsar data: error: ") and "missing: data root is not a directory" in err
    assert "Traceback" not in err
    assert main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "Error: " in err and err.rstrip().endswith("frame folder)")


def test_negative_numbers_are_values_and_ranges_are_in_the_message():
    parser = ArgumentParser(prog="x")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--top", type=int_at_least(1))
    parser.add_argument("--timeout", type=number(above=0))
    for text, value in [("-1e-3", -1e-3), ("-.5", -0.5), ("-2.5E+4", -25000.0), ("-3", -3.0)]:
        assert parser.parse_args(["--lr", text]).lr == value
    assert parser.parse_args(["--lr", "-inf"]).lr == float("-inf")
    with pytest.raises(SystemExit):
        parser.parse_args(["--top", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--timeout", "nan"])
    assert parser.parse_args(["--timeout", "0.5"]).timeout == 0.5


def test_frame_images_keep_their_values_or_are_refused(tmp_path):
    from PIL import Image

    gray16 = Image.fromarray(np.array([[0, 257, 65535, 32896]], dtype=np.uint16))
    assert gray16.mode.startswith("I;16")
    assert image_to_rgb8(gray16, "f.png")[0, :, 0].tolist() == [0, 1, 255, 128]
    as_int32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert image_to_rgb8(as_int32, "f.png")[0, :, 1].tolist() == [0, 255]
    with pytest.raises(VideoReadError, match="outside 0..65535"):
        image_to_rgb8(Image.fromarray(np.array([[-1, 70000]], dtype=np.int32)), "f.png")
    with pytest.raises(VideoReadError, match="unsupported image mode 'F'"):
        image_to_rgb8(Image.fromarray(np.zeros((2, 2), np.float32)), "f.png")
    palette = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).quantize(colors=2)
    assert image_to_rgb8(palette, "p.png").tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = 4194305  # above the largest pid Linux hands out
    names = {
        f".last.json.{dead}.abcdefgh.tmp": True,
        f".index.json.tmp-{dead}": True,
        f".clip.mp4.{dead}.tmp": True,
        f".last.json.{os.getpid()}.abcdefgh.tmp": False,  # this (live) process is writing it
        f".index.json.tmp-{os.getpid()}": False,
        ".metrics.csv.k3j2h1g0.tmp": False,  # no writer named, young: kept
        "last.json": False,
        "notes.tmp": False,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    old = tmp_path / ".metrics.csv.zzzzzzzz.tmp"  # no writer named, old: removed
    old.write_text("x")
    past = time.time() - 3600
    os.utime(old, (past, past))
    removed = {p.name for p in remove_stale_temporaries(tmp_path)}
    assert removed == {n for n, gone in names.items() if gone} | {old.name}
    assert all((tmp_path / n).exists() for n, gone in names.items() if not gone)


def test_clip_fingerprint_tells_a_copy_from_an_edit(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(bytes(range(256)) * 1000)
    recorded = clip_fingerprint(clip)
    assert fingerprint_changes(recorded, clip) == []
    later = recorded["mtime_ns"] + 10**10
    os.utime(clip, ns=(later, later))  # touched (or copied without its mtime): same content
    assert fingerprint_changes(recorded, clip) == []
    data = bytearray(clip.read_bytes())
    data[10] ^= 1
    clip.write_bytes(bytes(data))
    assert fingerprint_changes(recorded, clip) == ["same size but other content (content sample differs)"]
    clip.write_bytes(b"short")
    assert fingerprint_changes(recorded, clip)[0].startswith("size 256000 -> 5")
    assert fingerprint_changes(None, clip) == []  # older caches record none


def test_tensors_checksum_ignores_order_and_sees_every_byte():
    a = {"x": torch.arange(6.0).reshape(2, 3), "y": torch.ones(2, dtype=torch.float64)}
    b = {"y": a["y"].clone(), "x": a["x"].clone()}
    assert tensors_sha256(a) == tensors_sha256(b)
    b["x"][1, 2] = 5.000001
    assert tensors_sha256(a) != tensors_sha256(b)


class _NaNOnSecondClip(TinyEncoder):
    def encode_frames(self, frames, text_features=None):
        out = super().encode_frames(frames, text_features)
        if out.shape[0] > 1:
            out[1] = float("nan")
        return out


def test_a_non_finite_feature_is_a_skip_naming_its_clip(tmp_path):
    from fsar.encoders.cache import FeatureCache, extract_features

    manifest = Manifest.from_folder(write_dataset(tmp_path / "data"))
    encoder = _NaNOnSecondClip()
    loader = ClipLoader(num_frames=4, transform=TransformConfig.for_encoder(encoder))
    summary = extract_features(manifest, encoder, loader, tmp_path / "cache", batch_size=2, prefetch=0, progress=False)
    bad = [(path, reason) for path, reason in summary.skipped if "non-finite" in reason]
    assert bad and all("NaN/inf" in reason for _, reason in bad)
    cache = FeatureCache(tmp_path / "cache")
    assert {path for path, _ in bad} <= set(cache.skipped)
    assert all(torch.isfinite(cache._tensor(e["shard"], k)).all() for k, e in cache.entries.items())


def test_an_edited_checkpoint_record_is_refused_a_legacy_one_read(tmp_path):
    from fsar.engine.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
    from engine_standins import TinyMethod

    method = TinyMethod()
    path = save_checkpoint(tmp_path, "best", method=method, method_name="tiny", backbone="b", config={"k": 1}, step=3)
    assert read_checkpoint(tmp_path).step == 3
    record = json.loads(path.read_text())
    record["method"] = "other"
    path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="changed after it was written"):
        read_checkpoint(tmp_path)
    del record["record_sha256"]  # written before records carried a digest: read as before
    path.write_text(json.dumps(record))
    assert read_checkpoint(tmp_path).method == "other"
    with pytest.raises(CheckpointError, match=r"no last checkpoint \(last\.json\) to resume from; best\.json"):
        read_checkpoint(tmp_path, prefer="last")
