"""Writing a feature cache: :func:`extract_features` (resumable, atomic, one data root per directory).

It plans shards over the sorted clip list, keeps every complete shard written for the same
plan, encodes the rest through the decoding pipeline (:mod:`fsar.encoders.cache.decoding`) with
one encoder forward per batch for all clip streams, writes the class streams once per class
name, and rewrites the index after every shard. The format is :mod:`fsar.encoders.cache.store`'s.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fsar.data.inputs import PRIMARY_STREAM
from fsar.data.integrity import fingerprint_changes, tensors_sha256
from fsar.encoders.cache.decoding import _decoded, _loader_sampling, loader_transform_key
from fsar.encoders.cache.store import (
    CACHE_FORMAT,
    INDEX_NAME,
    CacheMismatchError,
    _LegacyFingerprint,
    _atomic_save_shard,
    _atomic_write_text,
    _class_file_name,
    _describe,
    _differences,
    _encoder_streams,
    _index_streams,
    _merge_stream_info,
    _read_shard_metadata,
    _relative_key,
    _shard_metadata,
    _shard_name,
    _stream_info,
    _stream_tensor_name,
    encoder_stream_key,
    read_index,
    remove_stale_temporaries,
    shard_checksum_holds,
)
from fsar.encoders.fingerprint import FINGERPRINT_SCHEME, weights_fingerprint

__all__ = ["ExtractionSummary", "extract_features"]

log = logging.getLogger("fsar.encoders.cache")


@dataclass
class ExtractionSummary:
    """What one :func:`extract_features` run did."""

    out_dir: Path
    clips: int  # clips in the manifest (including ones the manifest had already skipped)
    extracted: int  # clips whose features are in the cache now
    encoded: int = 0  # clips encoded by this run (the rest came from complete shards)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (clip path, reason)
    shards_written: int = 0
    shards_reused: int = 0
    classes_encoded: int = 0  # class names whose class streams this run encoded
    seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else float("nan")


def _header(encoder, backbone_options: dict[str, Any], transform_key: str, num_frames: int, sampling: str) -> dict:
    return {
        "format": CACHE_FORMAT,
        "backbone": str(encoder.name),
        "backbone_options": backbone_options,
        "weights_fingerprint": weights_fingerprint(encoder),
        "fingerprint_scheme": FINGERPRINT_SCHEME,
        "feature_dim": int(encoder.feature_dim),
        "transform_key": transform_key,
        "num_frames": int(num_frames),
        "sampling": sampling,
        "stream_key": encoder_stream_key(encoder),
        "clip_streams": _encoder_streams(encoder, "clip_stream_names"),
        "class_streams": _encoder_streams(encoder, "class_stream_names"),
        "label_streams": _label_streams(encoder),
    }


def _label_streams(encoder) -> list[str]:
    """The encoder's label-aware clip streams (``label_stream_names()``), each one of its clip streams."""
    names = _encoder_streams(encoder, "label_stream_names")
    unknown = sorted(set(names) - set(_encoder_streams(encoder, "clip_stream_names")))
    if unknown:
        raise ValueError(
            f"feature cache: backbone {getattr(encoder, 'name', '?')!r}: label_stream_names() {unknown} are not "
            "among its clip_stream_names()"
        )
    return names


def extract_features(
    manifest,
    encoder,
    loader,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 256,
    batch_size: int = 8,
    backbone_options: dict[str, Any] | None = None,
    prefetch: int = 2,
    progress: bool = True,
    on_shard_written: Callable[[int, Path], None] | None = None,
) -> ExtractionSummary:
    """Encode the evaluation view of every clip of ``manifest`` into ``out_dir``; resumable.

    Args:
        manifest: a :class:`fsar.data.Manifest` (``root``, ``clips``, ``skipped``).
        encoder: a frozen :class:`fsar.encoders.Encoder`; a trainable one is refused (its
            features would go stale as it trains).
        loader: the :class:`fsar.data.ClipLoader` whose evaluation view is cached (its T,
            sampling mode and transform); use the same settings when reading.
        out_dir: cache directory (created). Complete shards already there are kept.
        shard_size: clips per shard file.
        batch_size: clips per encoder call.
        backbone_options: how the encoder was built (e.g. ``{"weights": "random"}``), recorded
            in the index (the weights themselves are compared by fingerprint).
        prefetch: batches decoded ahead by a background thread while the encoder runs (0: none).
        on_shard_written: called with (shard number, path) after each newly written shard.
    """
    if not getattr(encoder, "is_frozen", False):
        raise ValueError(
            f"feature cache: backbone {getattr(encoder, 'name', type(encoder).__name__)!r} has trainable "
            "parameters (finetune != 'frozen'); cached features would not follow its training. "
            "Extract with a frozen encoder, or train from frames."
        )
    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be >= 1")
    from fsar.data.video import VideoReadError

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    root = Path(manifest.root)
    num_frames, sampling = _loader_sampling(loader)
    header = _header(encoder, dict(backbone_options or {}), loader_transform_key(loader), num_frames, sampling)
    legacy = _LegacyFingerprint(encoder)
    previous = _refuse_mixing(out, header, root, legacy)

    clips = sorted(manifest.clips, key=lambda c: _relative_key(c.path, root))
    keys = [_relative_key(c.path, root) for c in clips]
    if len(set(keys)) != len(keys):
        raise ValueError(f"feature cache: manifest of {root} lists a clip path twice")
    shards = [clips[i : i + shard_size] for i in range(0, len(clips), shard_size)]
    pre_skipped = [(_relative_key(s.path, root), str(s.reason)) for s in getattr(manifest, "skipped", [])]

    # Clips of earlier extractions into this directory (another split) stay available.
    kept_entries = {k: e for k, e in previous.get("entries", {}).items() if (out / e["shard"]).exists()}
    kept_skipped = {s["path"]: s["reason"] for s in previous.get("skipped", [])}
    entries: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    summary = ExtractionSummary(out_dir=out, clips=len(clips) + len(pre_skipped), extracted=0)
    clip_streams: dict[str, dict] = dict(_index_streams(previous)["clip"]) if kept_entries else {}
    class_streams, class_entries, summary.classes_encoded = _extract_class_streams(
        out, header, encoder, list(getattr(manifest, "classes", [])), previous
    )

    def write_index(complete: bool) -> None:
        all_entries = {**kept_entries, **entries}
        all_skipped = {**kept_skipped, **dict(pre_skipped + skipped)}
        index = dict(header)
        index.update(
            root=str(root.resolve()),
            complete=complete,
            shard_size=shard_size,
            entries=all_entries,
            skipped=[{"path": p, "reason": r} for p, r in sorted(all_skipped.items()) if p not in all_entries],
            streams={"clip": clip_streams, "class": class_streams},
            class_entries=class_entries,
        )
        _atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True))

    from tqdm.auto import tqdm

    bar = tqdm(total=len(clips), unit="clip", desc=f"extract {encoder.name}", disable=not progress)
    first = next(iter(encoder.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        for number, shard_clips in enumerate(shards):
            shard_keys = [_relative_key(c.path, root) for c in shard_clips]
            path = out / _shard_name(number, shard_keys)
            reused = _reusable_shard(path, header, shard_keys, legacy, shard_clips)
            if reused is not None:
                shard_entries, shard_skipped, shard_streams = reused
                summary.shards_reused += 1
            else:
                shard_entries, shard_skipped, tensors, shard_streams = _encode_shard(
                    shard_clips, shard_keys, encoder, loader, batch_size, device, VideoReadError, bar, prefetch,
                    header["clip_streams"], with_labels=bool(header["label_streams"]),
                )
                metadata = _shard_metadata(header, shard_keys, shard_entries, shard_skipped, shard_streams)
                metadata["tensors_sha256"] = tensors_sha256(tensors)  # checked when read and before reuse
                _atomic_save_shard(path, tensors, metadata)
                summary.shards_written += 1
                summary.encoded += len(shard_entries)
            _merge_stream_info(clip_streams, shard_streams, f"backbone {encoder.name!r}")
            for key, entry in shard_entries.items():
                entries[key] = dict(entry, shard=path.name)
            skipped.extend((p, r) for p, r in shard_skipped)
            if reused is not None:
                bar.update(len(shard_clips))
            write_index(complete=False)
            if reused is None and on_shard_written is not None:
                on_shard_written(number, path)
        write_index(complete=True)
    finally:
        bar.close()
    summary.extracted = len(entries)
    summary.skipped = pre_skipped + skipped
    summary.seconds = time.perf_counter() - started
    if summary.skipped:
        log.warning(
            "feature cache: %d of %d clips skipped (unreadable); listed in %s",
            len(summary.skipped), summary.clips, out / INDEX_NAME,
        )
    return summary


def _extract_class_streams(out: Path, header: dict, encoder, class_names: list[str], previous: dict):
    """``(stream info, class entries, classes encoded)``: the per-class streams of every class name
    of the manifest, encoding only names that earlier extractions into ``out`` did not cover.

    Written to ``classes-<digest>.safetensors``: one (N, ...) tensor per stream, rows in the order
    of the file's ``classes`` metadata; the index maps each class name to (file, row).
    """
    names = header["class_streams"]
    if not names:
        return {}, {}, 0
    entries = {c: e for c, e in previous.get("class_entries", {}).items() if (out / e["file"]).exists()}
    info: dict[str, dict] = dict(_index_streams(previous)["class"]) if entries else {}
    missing = [c for c in dict.fromkeys(class_names) if c not in entries]
    if not missing:
        return info, entries, 0
    with torch.inference_mode():
        streams = encoder.encode_class_streams(list(missing))
    if not isinstance(streams, dict) or set(streams) != set(names):
        got = sorted(streams) if isinstance(streams, dict) else type(streams).__name__
        raise ValueError(
            f"feature cache: backbone {encoder.name!r}: encode_class_streams() must return the streams "
            f"{names} (class_stream_names()), got {got}"
        )
    tensors = {}
    for stream, tensor in streams.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 1 or tensor.shape[0] != len(missing):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(
                f"feature cache: backbone {encoder.name!r}: class stream {stream!r} must have one row per "
                f"class name ({len(missing)}), got {shape}"
            )
        tensors[stream] = tensor.detach().cpu().contiguous()
        _merge_stream_info(info, {stream: _stream_info(tensors[stream][0])}, f"backbone {encoder.name!r}")
    file_name = _class_file_name(missing)
    metadata = {
        "header": json.dumps(header, sort_keys=True),
        "classes": json.dumps(missing),
        "streams": json.dumps({k: info[k] for k in sorted(tensors)}, sort_keys=True),
    }
    _atomic_save_shard(out / file_name, tensors, metadata)
    for row, class_name in enumerate(missing):
        entries[class_name] = {"file": file_name, "row": row}
    return info, entries, len(missing)


def _refuse_mixing(out: Path, header: dict, root: Path, legacy_fingerprint: Callable[[], str]) -> dict:
    """The existing index of ``out`` ({} if none); raises if it holds other features or another data root."""
    existing = out / INDEX_NAME
    if not existing.exists():
        return {}
    old = read_index(existing)
    old_header = {k: old.get(k) for k in header}
    differences = _differences(old_header, header, legacy_fingerprint=legacy_fingerprint)
    if differences:
        raise CacheMismatchError(
            f"feature cache: {out} already holds features of {_describe(old_header)}; "
            f"refusing to mix in {_describe(header)} ({'; '.join(differences)}). Use another --out directory."
        )
    old_root = old.get("root")
    if old_root is not None and Path(old_root) != root.resolve():
        raise CacheMismatchError(
            f"feature cache: {out} holds clips of the data root {old_root}, not {root.resolve()}; "
            "one cache directory serves one data root. Use another --out directory."
        )
    return old


def _reusable_shard(path: Path, header: dict, shard_keys: list[str], legacy_fingerprint: Callable[[], str],
                    shard_clips=()):
    """(entries, skipped) of a complete shard written for exactly this plan, whose tensors still
    match their checksum and whose clips have not changed since (their fingerprints), else None
    (the shard is encoded again, with a warning saying why)."""
    if not path.exists():
        return None
    meta = _read_shard_metadata(path)
    if not meta:
        return None
    try:
        differences = _differences(json.loads(meta["header"]), header, legacy_fingerprint=legacy_fingerprint)
        if differences:
            raise CacheMismatchError(
                f"feature cache: shard {path} was written for {_describe(json.loads(meta['header']))}; "
                f"refusing to mix in {_describe(header)} ({'; '.join(differences)}). Use another --out directory."
            )
        if json.loads(meta["clips"]) != shard_keys:
            return None  # the clip list changed (another manifest/shard size): recompute
        entries = json.loads(meta["entries"])
        skipped = [tuple(s) for s in json.loads(meta["skipped"])]
        if not shard_checksum_holds(path):
            log.warning("feature cache: shard %s fails its checksum (changed or damaged since it was written); "
                        "encoding it again", path)
            return None
        for clip, key in zip(shard_clips, shard_keys):
            entry = entries.get(key)
            changes = fingerprint_changes(entry.get("source") if entry else None, clip.path)
            if changes:
                log.warning("feature cache: clip %s changed since its features were extracted (%s); "
                            "encoding shard %s again", clip.path, "; ".join(changes), path.name)
                return None
        if "streams" in meta:
            streams = json.loads(meta["streams"])
        else:  # written before streams existed: the primary (T, D) float32 stream only
            streams = {PRIMARY_STREAM: {"shape": [int(header["num_frames"]), int(header["feature_dim"])], "dtype": "float32"}}
    except (KeyError, json.JSONDecodeError):
        return None
    return entries, skipped, streams


def _clip_streams_of(encoder, frames: torch.Tensor, extra_names: list[str],
                     labels: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Every stream of one encoder forward over ``frames`` (B, ...), checked against the declared names.
    ``labels`` (one class name per clip) go to encoders with label-aware streams only."""
    encode = getattr(encoder, "encode_clips", None)
    if not callable(encode):
        streams = {PRIMARY_STREAM: encoder.encode_frames(frames)}
    else:
        streams = encode(frames) if labels is None else encode(frames, labels=labels)
    name = getattr(encoder, "name", type(encoder).__name__)
    if not isinstance(streams, dict) or set(streams) != {PRIMARY_STREAM, *extra_names}:
        got = sorted(streams) if isinstance(streams, dict) else type(streams).__name__
        raise ValueError(
            f"feature cache: backbone {name!r}: encode_clips() must return the streams "
            f"{[PRIMARY_STREAM, *extra_names]} (clip_stream_names() plus {PRIMARY_STREAM!r}), got {got}"
        )
    batch = frames.shape[0]
    for stream, tensor in streams.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 1 or tensor.shape[0] != batch:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(
                f"feature cache: backbone {name!r}: stream {stream!r} must be a tensor with one row per clip "
                f"({batch}), got {shape}"
            )
    return streams


def _encode_shard(shard_clips, shard_keys, encoder, loader, batch_size, device, read_error, bar, prefetch, extra_names,
                  with_labels: bool = False):
    entries: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    tensors: dict[str, torch.Tensor] = {}
    stream_info: dict[str, dict] = {}
    pending: list[tuple[str, list[int], int, torch.Tensor, dict, object]] = []

    def flush() -> None:
        if not pending:
            return
        frames = torch.stack([p[3] for p in pending]).to(device)
        labels = [p[5].class_name for p in pending] if with_labels else None  # label-aware streams only
        with torch.inference_mode():
            streams = _clip_streams_of(encoder, frames, extra_names, labels)
        streams = {
            # The primary stream is stored as float32 (T, D); extra streams keep the encoder's dtype.
            stream: (batch.float().cpu() if stream == PRIMARY_STREAM else batch.cpu())
            for stream, batch in streams.items()
        }
        for row, (key, indices, total, _, source, clip) in enumerate(pending):
            bad = [name for name, batch in streams.items() if batch.is_floating_point() and not torch.isfinite(batch[row]).all()]
            if bad:
                reason = (f"the encoder gave non-finite values (NaN/inf) in stream(s) {', '.join(bad)} for this "
                          "clip (broken frames or weights?)")
                log.warning("feature cache: skipping clip %s: %s", clip.path, reason)
                skipped.append((key, reason))
                continue
            for stream, batch in streams.items():
                _merge_stream_info(stream_info, {stream: _stream_info(batch[row])}, "one shard")
                tensors[_stream_tensor_name(key, stream)] = batch[row].clone().contiguous()
            # ``source``: what the clip looked like when encoded (size, mtime, content sample).
            entries[key] = {"indices": indices, "num_frames": total, "source": source}
        bar.update(len(pending))
        pending.clear()

    items = list(zip(shard_clips, shard_keys))
    for clip, key, result in _decoded(items, loader, prefetch * batch_size, read_error):
        if isinstance(result, BaseException):
            error = result
            reason = str(error) or type(error).__name__
            log.warning("feature cache: skipping unreadable clip %s: %s", clip.path, reason)
            skipped.append((key, reason))
            bar.update(1)
            continue
        indices, total, frames, source = result
        pending.append((key, indices, total, frames, source, clip))
        if len(pending) >= batch_size:
            flush()
    flush()
    return entries, skipped, tensors, stream_info
