"""Feature cache: per-frame features of a frozen encoder, computed once, read by training and evaluation.

With a frozen encoder (the embedded pair, or CLIP without adapters) decoding and the CNN/ViT
dominate the cost of every episode, and they give the same result every time for the
evaluation view of a clip (centre TSN indices, centre crop). :func:`extract_features` runs
that view of every clip of a manifest once and stores (T, D) float32 features;
:class:`FeatureCache` then builds episodes from them (``EpisodeInputs(features=True)``).

Trade-off (documented, not hidden): a method trained from the cache sees the evaluation view
of each clip in every episode, i.e. no frame or crop augmentation.

Named streams: besides the primary per-frame ``features`` (T, D) float32, an encoder may produce
extra per-clip streams in the same forward (:meth:`Encoder.encode_clips`, names from
``clip_stream_names()``) and per-class-name streams (:meth:`Encoder.encode_class_streams`, names
from ``class_stream_names()``). All are stored; the index records each stream's per-row shape
and dtype (``streams``) and the encoder's ``stream_key()`` (layer, prompt hash ...), which is part
of the cache key like the weights fingerprint. ``FeatureCache.load_episode(..., streams=names)``
fills the episode's ``support_streams``/``query_streams``/``class_streams``.

Layout of a cache directory::

    index.json                              written atomically after every shard
    shard-00000-<digest>.safetensors        tensors named by clip path (relative to the data root):
                                            <path> the primary (T, D) stream, <path>//<stream> an extra one
    shard-00001-<digest>.safetensors        ...
    classes-<digest>.safetensors            per-class streams: one (N, ...) tensor per stream, rows in
                                            the order of its ``classes`` metadata (only with class streams)

Shards hold ``shard_size`` clips of the sorted clip list (the digest names that list) and are
written atomically (temporary
file + ``os.replace``); each carries in its metadata the header (backbone name, options, weight
fingerprint, transform key, sampling) and its clips' frame indices and skips. After an
interruption, re-running the extraction keeps every shard whose metadata matches the plan and
computes only the rest. A directory never mixes backbones: extracting with another backbone
(or other weights, frames, sampling or transform) into it is refused. The weights are
identified by a fingerprint of the parameters, so two spellings of the same weights agree.
Extracting another manifest of the same data root (e.g. the test split after the train split)
into a cache adds its clips; one directory serves one data root.

The index is keyed by clip path; each entry records the clip's frame count, the frame
indices that were encoded and the shard; the header records the transform key. Unreadable
clips are counted, logged and listed under ``skipped`` with their reason, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import torch

from fsar.data.inputs import PRIMARY_STREAM, EpisodeInputs, MissingStreamError

__all__ = [
    "CACHE_FORMAT",
    "CacheMismatchError",
    "ExtractionSummary",
    "FeatureCache",
    "MissingFeatureError",
    "extract_features",
    "loader_transform_key",
    "weights_fingerprint",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = "fsar-feature-cache/1"
INDEX_NAME = "index.json"
def _shard_name(number: int, shard_keys: list[str]) -> str:
    """``shard-<number>-<digest of its clip list>.safetensors``: another manifest's shard of the
    same number gets another name, so extracting a second split into a cache adds to it."""
    digest = hashlib.sha1(json.dumps(shard_keys).encode()).hexdigest()[:10]
    return f"shard-{number:05d}-{digest}.safetensors"


class CacheMismatchError(ValueError):
    """The cache directory holds features of another backbone/options/transform than requested."""


class MissingFeatureError(KeyError):
    """A clip has no cached features for the requested frame indices and transform."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------
# helpers shared by extraction and reading


def loader_transform_key(loader) -> str:
    """The stable key of a :class:`fsar.data.ClipLoader`'s evaluation view (frames, sampling, transform)."""
    key = getattr(loader, "key", None)
    if callable(key):
        return str(key())
    num_frames, sampling = _loader_sampling(loader)
    return f"frames={num_frames}|sampling={sampling}|{_eval_transform(loader).key()}"


def _loader_sampling(loader) -> tuple[int, str]:
    return int(loader.num_frames), str(getattr(loader, "sampling", "tsn"))


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Short SHA-256 over every parameter and buffer (names, shapes, bytes).

    Two encoders with the same name but different weights (random vs. pretrained, another
    checkpoint) get different fingerprints, so their features never share a cache.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _relative_key(path: str | os.PathLike, root: Path) -> str:
    """Clip path relative to the data root, POSIX style (the index key)."""
    path = Path(path)
    try:
        path = path.relative_to(root)
    except ValueError:
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            pass  # outside the root (or already relative to it): keep as given
    return PurePosixPath(*path.parts).as_posix()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_save_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write failed or was interrupted


def _read_shard_metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # a truncated/foreign file: recompute it
        log.warning("feature cache: ignoring unreadable shard %s (%s)", path, error)
        return None


# ---------------------------------------------------------------------------------------------
# extraction


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


def encoder_stream_key(encoder) -> dict:
    """``encoder.stream_key()`` in its JSON form (what the index stores and compares); {} without the hook."""
    hook = getattr(encoder, "stream_key", None)
    key = hook() if callable(hook) else {}
    try:
        return json.loads(json.dumps(key, sort_keys=True))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"feature cache: stream_key() of backbone {getattr(encoder, 'name', type(encoder).__name__)!r} "
            f"must be JSON-serialisable ({error})"
        ) from None


def _encoder_streams(encoder, hook: str) -> list[str]:
    names = getattr(encoder, hook, None)
    names = list(names()) if callable(names) else []
    if PRIMARY_STREAM in names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"feature cache: {hook}() of backbone {getattr(encoder, 'name', '?')!r} must list distinct, "
            f"non-empty names other than {PRIMARY_STREAM!r}, got {names}"
        )
    return sorted(names)


def _header(encoder, backbone_options: dict[str, Any], transform_key: str, num_frames: int, sampling: str) -> dict:
    return {
        "format": CACHE_FORMAT,
        "backbone": str(encoder.name),
        "backbone_options": backbone_options,
        "weights_fingerprint": weights_fingerprint(encoder),
        "feature_dim": int(encoder.feature_dim),
        "transform_key": transform_key,
        "num_frames": int(num_frames),
        "sampling": sampling,
        "stream_key": encoder_stream_key(encoder),
        "clip_streams": _encoder_streams(encoder, "clip_stream_names"),
        "class_streams": _encoder_streams(encoder, "class_stream_names"),
    }


#: Header fields that must agree for features to share a cache, with their value in a cache
#: written before the field existed (single-stream caches: no extra streams, an empty key).
#: ``backbone_options`` is recorded but not compared: equal weights reached by another spelling
#: (a folder vs. a hub id, None vs. "pretrained") give the same fingerprint and the same features.
_IDENTITY: dict[str, Any] = {
    "format": None,
    "backbone": None,
    "weights_fingerprint": None,
    "feature_dim": None,
    "transform_key": None,
    "num_frames": None,
    "sampling": None,
    "stream_key": {},
    "clip_streams": [],
    "class_streams": [],
}

_FIELD_NAMES = {
    "weights_fingerprint": "weights fingerprint",
    "transform_key": "transform",
    "num_frames": "frames",
    "stream_key": "stream_key",
    "clip_streams": "clip streams",
    "class_streams": "class streams",
}


def _identity_value(header: dict, name: str):
    value = header.get(name)
    return _IDENTITY[name] if value is None else value


def _differences(cached: dict, wanted: dict, fields: Sequence[str] = tuple(_IDENTITY)) -> list[str]:
    """``["<field> <cached> (cache) vs <wanted> (requested)", ...]`` for every identity field that differs."""
    return [
        f"{_FIELD_NAMES.get(name, name)} {_identity_value(cached, name)!r} (cache) vs "
        f"{_identity_value(wanted, name)!r} (requested)"
        for name in fields
        if _identity_value(cached, name) != _identity_value(wanted, name)
    ]


def _same_features(a: dict, b: dict) -> bool:
    return not _differences(a, b)


def _describe(header: dict) -> str:
    return (
        f"backbone {header.get('backbone')!r} options {header.get('backbone_options')} "
        f"weights {header.get('weights_fingerprint')} frames {header.get('num_frames')} "
        f"sampling {header.get('sampling')!r} transform {header.get('transform_key')} "
        f"stream_key {_identity_value(header, 'stream_key')}"
    )


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
    root = Path(manifest.root)
    num_frames, sampling = _loader_sampling(loader)
    header = _header(encoder, dict(backbone_options or {}), loader_transform_key(loader), num_frames, sampling)
    previous = _refuse_mixing(out, header, root)

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
            reused = _reusable_shard(path, header, shard_keys)
            if reused is not None:
                shard_entries, shard_skipped, shard_streams = reused
                summary.shards_reused += 1
            else:
                shard_entries, shard_skipped, tensors, shard_streams = _encode_shard(
                    shard_clips, shard_keys, encoder, loader, batch_size, device, VideoReadError, bar, prefetch,
                    header["clip_streams"],
                )
                metadata = {
                    "header": json.dumps(header, sort_keys=True),
                    "clips": json.dumps(shard_keys),
                    "entries": json.dumps(shard_entries, sort_keys=True),
                    "skipped": json.dumps(shard_skipped),
                    "streams": json.dumps(shard_streams, sort_keys=True),
                }
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


def _index_streams(index: dict) -> dict[str, dict[str, dict]]:
    """``{"clip": {name: info}, "class": {name: info}}`` of an index; a single-stream cache (written
    before streams existed) has just the primary (T, D) float32 stream."""
    streams = index.get("streams")
    if streams is not None:
        return {"clip": dict(streams.get("clip", {})), "class": dict(streams.get("class", {}))}
    if not index.get("entries"):
        return {"clip": {}, "class": {}}
    shape = [int(index["num_frames"]), int(index["feature_dim"])]
    return {"clip": {PRIMARY_STREAM: {"shape": shape, "dtype": "float32"}}, "class": {}}


def _class_file_name(class_names: list[str]) -> str:
    digest = hashlib.sha1(json.dumps(class_names).encode()).hexdigest()[:10]
    return f"classes-{digest}.safetensors"


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


def _refuse_mixing(out: Path, header: dict, root: Path) -> dict:
    """The existing index of ``out`` ({} if none); raises if it holds other features or another data root."""
    existing = out / INDEX_NAME
    if not existing.exists():
        return {}
    try:
        old = json.loads(existing.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CacheMismatchError(f"feature cache: {existing} is not a readable cache index ({error})") from None
    old_header = {k: old.get(k) for k in header}
    differences = _differences(old_header, header)
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


def _reusable_shard(path: Path, header: dict, shard_keys: list[str]):
    """(entries, skipped) of a complete shard written for exactly this plan, else None."""
    if not path.exists():
        return None
    meta = _read_shard_metadata(path)
    if not meta:
        return None
    try:
        differences = _differences(json.loads(meta["header"]), header)
        if differences:
            raise CacheMismatchError(
                f"feature cache: shard {path} was written for {_describe(json.loads(meta['header']))}; "
                f"refusing to mix in {_describe(header)} ({'; '.join(differences)}). Use another --out directory."
            )
        if json.loads(meta["clips"]) != shard_keys:
            return None  # the clip list changed (another manifest/shard size): recompute
        entries = json.loads(meta["entries"])
        skipped = [tuple(s) for s in json.loads(meta["skipped"])]
        if "streams" in meta:
            streams = json.loads(meta["streams"])
        else:  # written before streams existed: the primary (T, D) float32 stream only
            streams = {PRIMARY_STREAM: {"shape": [int(header["num_frames"]), int(header["feature_dim"])], "dtype": "float32"}}
    except (KeyError, json.JSONDecodeError):
        return None
    return entries, skipped, streams


def _decoded(items, loader, lookahead: int, read_error):
    """For (clip, key) items, yield (clip, key, (indices, frame count, frames) | exception) in order.

    With ``lookahead`` > 0 a background thread decodes up to that many clips ahead while the
    encoder runs (PyAV and the resize release the GIL), bounded so memory stays small.
    """
    errors = (read_error, OSError, RuntimeError, ValueError)

    def load(clip):
        try:
            return _load_eval_view(clip, loader)
        except errors as error:
            return error

    if lookahead <= 0:
        for clip, key in items:
            yield clip, key, load(clip)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsar-decode") as pool:
        pending: deque = deque()
        for clip, key in items:
            pending.append((clip, key, pool.submit(load, clip)))
            if len(pending) > lookahead:
                done_clip, done_key, future = pending.popleft()
                yield done_clip, done_key, future.result()
        while pending:
            done_clip, done_key, future = pending.popleft()
            yield done_clip, done_key, future.result()


def _stream_tensor_name(key: str, stream: str) -> str:
    """Shard tensor name of ``stream`` of clip ``key``: the bare key for the primary stream (so
    single-stream caches read as before), ``<key>//<stream>`` for an extra one. A normalised
    relative POSIX path never contains ``//``, so the names cannot collide with another clip's."""
    return key if stream == PRIMARY_STREAM else f"{key}//{stream}"


def _stream_info(tensor: torch.Tensor) -> dict:
    """``{"shape": [...], "dtype": "float32"}`` of one clip's (or one class's) row of a stream."""
    return {"shape": [int(n) for n in tensor.shape], "dtype": str(tensor.dtype).removeprefix("torch.")}


def _merge_stream_info(into: dict[str, dict], new: dict[str, dict], what: str) -> None:
    """Add ``new`` to ``into``; a stream whose per-row shape or dtype changes is refused (rows must stack)."""
    for name, info in new.items():
        seen = into.setdefault(name, info)
        if seen != info:
            raise ValueError(
                f"feature cache: stream {name!r} of {what} has shape {info['shape']} {info['dtype']} for some rows "
                f"and {seen['shape']} {seen['dtype']} for others; a stream needs one shape per row"
            )


def _clip_streams_of(encoder, frames: torch.Tensor, extra_names: list[str]) -> dict[str, torch.Tensor]:
    """Every stream of one encoder forward over ``frames`` (B, ...), checked against the declared names."""
    encode = getattr(encoder, "encode_clips", None)
    streams = encode(frames) if callable(encode) else {PRIMARY_STREAM: encoder.encode_frames(frames)}
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


def _encode_shard(shard_clips, shard_keys, encoder, loader, batch_size, device, read_error, bar, prefetch, extra_names):
    entries: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    tensors: dict[str, torch.Tensor] = {}
    stream_info: dict[str, dict] = {}
    pending: list[tuple[str, list[int], int, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        frames = torch.stack([p[3] for p in pending]).to(device)
        with torch.inference_mode():
            streams = _clip_streams_of(encoder, frames, extra_names)
        for stream, batch in streams.items():
            # The primary stream is stored as float32 (T, D); extra streams keep the encoder's dtype.
            batch = batch.float().cpu() if stream == PRIMARY_STREAM else batch.cpu()
            _merge_stream_info(stream_info, {stream: _stream_info(batch[0])}, "one shard")
            for (key, _, _, _), row in zip(pending, batch):
                tensors[_stream_tensor_name(key, stream)] = row.clone().contiguous()
        for key, indices, total, _ in pending:
            entries[key] = {"indices": indices, "num_frames": total}
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
        indices, total, frames = result
        pending.append((key, indices, total, frames))
        if len(pending) >= batch_size:
            flush()
    flush()
    return entries, skipped, tensors, stream_info


def _load_eval_view(clip, loader) -> tuple[list[int], int, torch.Tensor]:
    """(frame indices, frame count, (T, C, H, W) transformed frames) of the evaluation view.

    Decodes the clip once: the frame count gives the indices (the loader's own sampling rule),
    and the same reader reads exactly those frames.
    """
    from fsar.data.sampling import sample_indices
    from fsar.data.video import open_video

    num_segments, sampling = _loader_sampling(loader)
    reader = open_video(clip.path)
    total = int(reader.num_frames)
    indices = sample_indices(total, num_segments, mode=sampling, train=False)
    frames = reader.read(indices)
    transform = _eval_transform(loader)
    return [int(i) for i in indices], total, transform(frames)


def _eval_transform(loader):
    from fsar.data.transforms import ClipTransform, TransformConfig

    config = getattr(loader, "transform", None)
    if isinstance(config, ClipTransform):
        config = config.config
    if not isinstance(config, TransformConfig):
        config = getattr(loader, "transform_config")
    return ClipTransform(config, train=False)


# ---------------------------------------------------------------------------------------------
# reading


class FeatureCache:
    """Read side of a cache directory written by :func:`extract_features`.

    ``get(clip_path, indices, transform_key)`` returns the (T, D) float32 features of a clip
    when the cache holds exactly that view, else None. ``load_episode(episode, loader)``
    builds ``EpisodeInputs(features=True)`` and raises :class:`MissingFeatureError` naming
    the clip when one is absent. ``root`` overrides the data root recorded at extraction
    (after moving the data set); clip paths are matched relative to it.
    """

    def __init__(self, directory: str | os.PathLike, *, root: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_NAME
        if not index_path.exists():
            raise FileNotFoundError(f"feature cache: {index_path} not found (run `fsar extract` first)")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"feature cache: {index_path} is not valid JSON ({error})") from None
        if index.get("format") != CACHE_FORMAT:
            raise ValueError(f"feature cache: {index_path} has format {index.get('format')!r}, expected {CACHE_FORMAT!r}")
        self.index = index
        self.root = Path(root) if root is not None else Path(index["root"])
        self.backbone: str = index["backbone"]
        self.backbone_options: dict = index.get("backbone_options", {})
        self.feature_dim: int = int(index["feature_dim"])
        self.transform_key: str = index["transform_key"]
        self.num_frames: int = int(index["num_frames"])
        self.sampling: str = index["sampling"]
        self.complete: bool = bool(index.get("complete", False))
        self.entries: dict[str, dict] = index["entries"]
        self.stream_key: dict = _identity_value(index, "stream_key")
        streams = _index_streams(index)
        #: ``{name: {"shape": per-clip shape, "dtype": ...}}`` of every per-clip stream, ``"features"`` included.
        self.clip_streams: dict[str, dict] = streams["clip"]
        #: ``{name: {"shape": per-class shape, "dtype": ...}}`` of every per-class stream.
        self.class_streams: dict[str, dict] = streams["class"]
        self.class_entries: dict[str, dict] = dict(index.get("class_entries", {}))
        self._class_rows: dict[tuple[str, str], torch.Tensor] = {}
        self.skipped: dict[str, str] = {s["path"]: s["reason"] for s in index.get("skipped", [])}
        self._part_counts = sorted({len(PurePosixPath(k).parts) for k in self.entries}, reverse=True)
        self._handles: dict[str, Any] = {}
        if not self.complete:
            log.warning("feature cache %s is incomplete (interrupted extraction); %d clips available",
                        self.directory, len(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, clip_path: object) -> bool:
        return isinstance(clip_path, (str, os.PathLike)) and self._key(clip_path) in self.entries

    def check_encoder(self, encoder) -> None:
        """Raise :class:`CacheMismatchError` unless the cache holds this very encoder's streams:
        same backbone, weights fingerprint, ``stream_key()`` and stream names; the message names
        every field that differs."""
        self.check_backbone(encoder.name)
        wanted = {
            "backbone": str(encoder.name),
            "weights_fingerprint": weights_fingerprint(encoder),
            "stream_key": encoder_stream_key(encoder),
            "clip_streams": _encoder_streams(encoder, "clip_stream_names"),
            "class_streams": _encoder_streams(encoder, "class_stream_names"),
        }
        cached = {name: self.index.get(name) for name in wanted}
        if cached["weights_fingerprint"] is None:  # an index without one: nothing to compare
            cached["weights_fingerprint"] = wanted["weights_fingerprint"]
        differences = _differences(cached, wanted, fields=tuple(wanted))
        if differences:
            raise CacheMismatchError(
                f"feature cache {self.directory} was extracted with another {encoder.name} encoder "
                f"({'; '.join(differences)}); extract a new cache with `fsar extract` for this encoder"
            )

    def check_backbone(self, name: str) -> None:
        """Raise :class:`CacheMismatchError` unless the cache holds features of backbone ``name``."""
        if name != self.backbone:
            raise CacheMismatchError(
                f"feature cache {self.directory} holds features of backbone {self.backbone!r}, not {name!r}"
            )

    def _key(self, clip_path: str | os.PathLike) -> str:
        key = _relative_key(clip_path, self.root)
        if key in self.entries or key in self.skipped:
            return key
        parts = PurePosixPath(key).parts
        for n in self._part_counts:  # data set moved: match the trailing path components
            if len(parts) > n:
                candidate = PurePosixPath(*parts[-n:]).as_posix()
                if candidate in self.entries:
                    return candidate
        return key

    def _tensor(self, shard: str, key: str) -> torch.Tensor:
        from safetensors import safe_open

        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.directory / shard), framework="pt")
            self._handles[shard] = handle
        return handle.get_tensor(key)

    def get(
        self, clip_path: str | os.PathLike, indices: Sequence[int], transform_key: str
    ) -> torch.Tensor | None:
        """(T, D) features of ``clip_path`` for exactly these frame indices and transform, or None."""
        if transform_key != self.transform_key:
            return None
        key = self._key(clip_path)
        entry = self.entries.get(key)
        if entry is None or list(entry["indices"]) != [int(i) for i in indices]:
            return None
        return self._tensor(entry["shard"], key)

    def _explain_missing(self, clip, indices: list[int], transform_key: str) -> str:
        key = self._key(clip.path)
        where = f"feature cache {self.directory}: no features for clip {clip.path}"
        if transform_key != self.transform_key:
            return f"{where}: the loader's transform {transform_key} differs from the cached {self.transform_key}"
        if key in self.skipped:
            return f"{where}: it was skipped at extraction ({self.skipped[key]})"
        entry = self.entries.get(key)
        if entry is None:
            hint = " (the extraction was interrupted; re-run `fsar extract`)" if not self.complete else ""
            return f"{where}: it was not extracted{hint}"
        return f"{where}: cached frame indices {entry['indices']} differ from the requested {indices}"

    def clip_features(self, clip, loader) -> torch.Tensor:
        """(T, D) features of one clip under ``loader``'s evaluation view; raises when absent."""
        num_segments, sampling = _loader_sampling(loader)
        transform_key = loader_transform_key(loader)
        key = self._key(clip.path)
        entry = self.entries.get(key)
        if entry is not None:
            from fsar.data.sampling import sample_indices

            # The recorded frame count gives the indices without opening the video.
            indices = sample_indices(int(entry["num_frames"]), num_segments, mode=sampling, train=False)
        else:
            indices = []
        feats = self.get(clip.path, indices, transform_key) if entry is not None else None
        if feats is None:
            raise MissingFeatureError(self._explain_missing(clip, indices, transform_key))
        return feats

    def _missing_stream(self, name: str) -> MissingStreamError:
        present = [f"{n} (clip)" for n in sorted(self.clip_streams)] + [f"{n} (class)" for n in sorted(self.class_streams)]
        how = (
            f"it was extracted with backbone {self.backbone!r} (stream_key {self.stream_key}), which produced "
            f"no {name!r}; extract a new cache with `fsar extract --backbone B --out NEW_DIR ...` using the "
            f"backbone B whose encoder produces {name!r} (the method's own backbone, if the method requires it)"
        )
        return MissingStreamError(name, "clip or class", present, where=f"feature cache {self.directory}", how=how)

    def clip_stream(self, clip, loader, name: str) -> torch.Tensor:
        """Stream ``name`` of one clip (shape ``clip_streams[name]["shape"]``) under ``loader``'s
        evaluation view; ``"features"`` is :meth:`clip_features`. Raises when absent."""
        if name not in self.clip_streams:
            raise self._missing_stream(name)
        features = self.clip_features(clip, loader)  # checks the view; the entry exists from here on
        if name == PRIMARY_STREAM:
            return features
        key = self._key(clip.path)
        return self._tensor(self.entries[key]["shard"], _stream_tensor_name(key, name))

    def class_stream(self, class_name: str, name: str) -> torch.Tensor:
        """Stream ``name`` of one class name (shape ``class_streams[name]["shape"]``); raises when absent."""
        if name not in self.class_streams:
            raise self._missing_stream(name)
        entry = self.class_entries.get(class_name)
        if entry is None:
            raise MissingFeatureError(
                f"feature cache {self.directory}: no class stream {name!r} for class {class_name!r}: that "
                f"class was not in the manifest at extraction; re-run `fsar extract` on a split that lists it"
            )
        cached = self._class_rows.get((entry["file"], name))
        if cached is None:
            cached = self._tensor(entry["file"], name)  # (N, ...) of that file, read once
            self._class_rows[(entry["file"], name)] = cached
        return cached[int(entry["row"])]

    def load_episode(self, episode, loader, *, streams: Sequence[str] = ()) -> EpisodeInputs:
        """Cached features of an :class:`fsar.data.Episode`: support (n_support, T, D), query (n_query, T, D).

        ``streams`` names the extra streams to fill: per-clip ones into ``support_streams``
        (n_support, ...) and ``query_streams`` (n_query, ...), per-class ones into
        ``class_streams`` (way, ...) in episode class order. ``"features"`` is always there (as
        ``support``/``query``). An unknown name raises :class:`MissingStreamError`.
        """
        if isinstance(streams, str):
            streams = (streams,)
        for name in streams:
            if name not in self.clip_streams and name not in self.class_streams:
                raise self._missing_stream(name)
        support = torch.stack([self.clip_features(c, loader) for c in episode.support])
        query = torch.stack([self.clip_features(c, loader) for c in episode.query])
        support_streams, query_streams, class_streams = {}, {}, {}
        for name in dict.fromkeys(streams):
            if name == PRIMARY_STREAM:
                continue
            if name in self.clip_streams:
                support_streams[name] = torch.stack([self.clip_stream(c, loader, name) for c in episode.support])
                query_streams[name] = torch.stack([self.clip_stream(c, loader, name) for c in episode.query])
            else:
                class_streams[name] = torch.stack([self.class_stream(c, name) for c in episode.class_names])
        return EpisodeInputs(
            support=support,
            support_labels=torch.as_tensor(episode.support_labels, dtype=torch.long),
            query=query,
            class_names=list(episode.class_names),
            query_labels=torch.as_tensor(episode.query_labels, dtype=torch.long),
            features=True,
            support_streams=support_streams,
            query_streams=query_streams,
            class_streams=class_streams,
        )

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.directory)!r}, backbone={self.backbone!r}, clips={len(self)}, "
            f"skipped={len(self.skipped)}, T={self.num_frames}, D={self.feature_dim})"
        )
