"""Weights fingerprints: layout + tensor sample + weight files, and old caches' full-hash fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from cache_standins import TinyEncoder, write_dataset
from fsar.data.loading import ClipLoader
from fsar.data.manifest import Manifest
from fsar.data.transforms import TransformConfig
from fsar.encoders.cache import CacheMismatchError, FeatureCache, extract_features
from fsar.encoders.fingerprint import legacy_weights_fingerprint, weight_file_digest, weights_fingerprint


class FileBacked(nn.Module):
    """A module that says its weights came from ``files``."""

    def __init__(self, files=(), seed: int = 0, dtype=torch.float32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layer = nn.Linear(40, 30).to(dtype)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(30, 40, generator=g))
            self.layer.bias.copy_(torch.randn(30, generator=g))
        self.files = tuple(files)

    def weight_files(self):
        return self.files


def test_fingerprint_follows_weights_layout_and_dtype():
    assert weights_fingerprint(FileBacked(seed=0)) == weights_fingerprint(FileBacked(seed=0))
    assert weights_fingerprint(FileBacked(seed=0)) != weights_fingerprint(FileBacked(seed=1))
    assert weights_fingerprint(FileBacked()) != weights_fingerprint(FileBacked(dtype=torch.bfloat16))
    renamed = nn.Sequential(FileBacked().layer)
    assert weights_fingerprint(renamed) != weights_fingerprint(FileBacked())
    # The sample covers the ends and evenly spaced elements of every tensor, buffers included.
    changed = FileBacked()
    with torch.no_grad():
        changed.layer.weight.view(-1)[-1] += 1.0
    assert weights_fingerprint(changed) != weights_fingerprint(FileBacked())
    with_buffer = FileBacked()
    with_buffer.register_buffer("scale", torch.ones(3))
    other_buffer = FileBacked()
    other_buffer.register_buffer("scale", torch.full((3,), 2.0))
    assert weights_fingerprint(with_buffer) != weights_fingerprint(other_buffer)
    # bf16 tensors (a 7B MLLM's) are sampled by their raw bytes.
    assert len(weights_fingerprint(FileBacked(dtype=torch.bfloat16))) == 16


def test_meta_tensors_are_fingerprinted_by_layout():
    with torch.device("meta"):
        a = nn.Linear(4000, 4000)
    assert weights_fingerprint(a) == weights_fingerprint(a)


def _weights_file(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    path.write_bytes(torch.randint(0, 256, (size,), dtype=torch.uint8, generator=g).numpy().tobytes())
    return path


def test_weight_files_are_sampled_by_name_size_and_content_not_mtime(tmp_path):
    size = 3 << 20  # past the first MiB: the evenly spaced blocks count
    original = _weights_file(tmp_path / "a" / "model.safetensors", size)
    base = weights_fingerprint(FileBacked([original]))
    assert base != weights_fingerprint(FileBacked())  # the files are part of it
    copy = tmp_path / "b" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)  # another folder, another mtime, same bytes
    assert weights_fingerprint(FileBacked([copy])) == base
    data = bytearray(original.read_bytes())
    data[-1] ^= 0xFF  # the last block is sampled
    edited = tmp_path / "c" / "model.safetensors"
    edited.parent.mkdir()
    edited.write_bytes(bytes(data))
    assert weights_fingerprint(FileBacked([edited])) != base
    assert weight_file_digest(_weights_file(tmp_path / "d" / "model.safetensors", size + 1)) != weight_file_digest(original)
    renamed = tmp_path / "e" / "other.safetensors"
    renamed.parent.mkdir()
    shutil.copyfile(original, renamed)
    assert weights_fingerprint(FileBacked([renamed])) != base


def test_embedded_encoder_names_its_package_weight_files():
    from fsar.encoders.embedded import EmbeddedEncoder

    pretrained = EmbeddedEncoder.weight_files(type("Stub", (), {"weights": "pretrained"})())
    assert len(pretrained) == 2 and all(p.is_file() for p in pretrained)
    assert EmbeddedEncoder.weight_files(type("Stub", (), {"weights": "random"})()) == ()


def _loader(encoder) -> ClipLoader:
    return ClipLoader(num_frames=4, transform=TransformConfig.for_encoder(encoder))


def _as_legacy_cache(directory: Path, fingerprint: str) -> None:
    """Rewrite a cache's fingerprint fields as caches written before fingerprint_scheme carried them."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fsar.encoders.cache.store import _read_shard_metadata

    index = json.loads((directory / "index.json").read_text())
    index["weights_fingerprint"] = fingerprint
    index.pop("fingerprint_scheme", None)
    (directory / "index.json").write_text(json.dumps(index))
    for shard in directory.glob("shard-*.safetensors"):
        metadata = _read_shard_metadata(shard)  # written as one key; the old format had one key per field
        with safe_open(str(shard), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = json.loads(metadata["header"])
        header["weights_fingerprint"] = fingerprint
        header.pop("fingerprint_scheme", None)
        metadata["header"] = json.dumps(header, sort_keys=True)
        save_file(tensors, str(shard), metadata=metadata)


def test_caches_with_the_old_full_hash_fingerprint_are_still_accepted(tmp_path):
    dataset = write_dataset(tmp_path / "data")
    manifest = Manifest.from_folder(dataset)
    enc = TinyEncoder()
    extract_features(manifest, enc, _loader(enc), tmp_path / "c", shard_size=4, progress=False)
    old = legacy_weights_fingerprint(enc)
    assert old != weights_fingerprint(enc)
    _as_legacy_cache(tmp_path / "c", old)

    FeatureCache(tmp_path / "c").check_encoder(TinyEncoder())
    again = TinyEncoder()
    summary = extract_features(manifest, again, _loader(again), tmp_path / "c", shard_size=4, progress=False)
    assert summary.shards_reused == 3 and summary.shards_written == 0 and again.calls == 0
    # Other weights are still told apart under the old scheme, and the message says which scheme.
    _as_legacy_cache(tmp_path / "c", old)  # (the re-extraction above rewrote the index in the new scheme)
    with pytest.raises(CacheMismatchError, match=r"legacy full hash"):
        FeatureCache(tmp_path / "c").check_encoder(TinyEncoder(seed=3))
    other = TinyEncoder(seed=3)
    with pytest.raises(CacheMismatchError, match=r"refusing to mix.*legacy full hash"):
        extract_features(manifest, other, _loader(other), tmp_path / "c", shard_size=4, progress=False)
