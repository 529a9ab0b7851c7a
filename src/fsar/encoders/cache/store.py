"""The feature store: cache directory layout, index and shard files, the cache key, the read side.

See :mod:`fsar.encoders.cache` for the layout of a cache directory. This module owns its format:
the names of shard and class-stream files and of the tensors inside them, atomic writes, the
header fields that identify the features (:data:`_IDENTITY`) and how two headers are compared
(:func:`_differences`, old caches included), the per-shard metadata
(:func:`_shard_metadata` / :func:`_read_shard_metadata`), and :class:`FeatureCache`, which reads
episodes back. Writing a cache is :mod:`fsar.encoders.cache.extract`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import torch

from fsar.data.inputs import PRIMARY_STREAM, CachedRows, EpisodeInputs, MissingStreamError
from fsar.data.integrity import fingerprint_changes, tensors_sha256
from fsar.encoders.cache.decoding import _loader_sampling, loader_transform_key
from fsar.encoders.fingerprint import FINGERPRINT_SCHEME, legacy_weights_fingerprint, weights_fingerprint
from fsar.errors import CacheError

__all__ = [
    "CACHE_FORMAT",
    "CacheCorruptError",
    "CacheMismatchError",
    "CacheNotFoundError",
    "FeatureCache",
    "INDEX_NAME",
    "MissingFeatureError",
    "read_index",
    "verify_cache",
]

log = logging.getLogger("fsar.encoders.cache")

CACHE_FORMAT = "fsar-feature-cache/1"
INDEX_NAME = "index.json"


def _shard_name(number: int, shard_keys: list[str]) -> str:
    """``shard-<number>-<digest of its clip list>.safetensors``: another manifest's shard of the
    same number gets another name, so extracting a second split into a cache adds to it."""
    digest = hashlib.sha1(json.dumps(shard_keys).encode()).hexdigest()[:10]
    return f"shard-{number:05d}-{digest}.safetensors"


#: Names of cached rows: unique across every cache opened in this process.
_ROW_NAMES = itertools.count()


class CacheMismatchError(CacheError):
    """The cache directory holds features of another backbone/options/transform than requested,
    or of other clips than the ones asked for (a changed clip, another data root's)."""


class CacheNotFoundError(CacheError, FileNotFoundError):
    """The folder holds no feature cache (no ``index.json``)."""


class CacheCorruptError(CacheError):
    """A cache file that is unreadable, truncated, fails its checksum or holds non-finite values;
    the message names the file (and the clips it holds)."""


class MissingFeatureError(CacheError, KeyError):
    """A clip has no cached features for the requested frame indices and transform."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


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


def _temporary(path: Path) -> Path:
    """``.<name>.tmp-<host>-<pid>`` beside ``path``: private to this process, and recognisable as
    this host's when the process dies before renaming it (see :func:`remove_stale_temporaries`)."""
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(directory: Path) -> int:
    """Delete the temporaries of processes of this host that died mid-write (SIGKILL, power cut);
    a live process's temporaries, and other hosts', are left alone. Returns how many went."""
    removed = 0
    host = socket.gethostname()
    for path in directory.glob(".*.tmp-*"):
        owner = path.name.rsplit(".tmp-", 1)[1]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host not in ("", host) or not pid.isdigit() or _process_alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("feature cache: removed %d temporaries of interrupted writers in %s", removed, directory)
    return removed


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: A shard's (or class file's) metadata is one JSON object under this key, with sorted keys:
#: safetensors writes a metadata mapping in an order that changes between processes, so several
#: keys would make two extractions of the same clips differ in bytes.
SHARD_METADATA_KEY = "fsar"


def _atomic_save_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = _temporary(path)
    try:
        save_file(tensors, str(tmp), metadata={SHARD_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write failed or was interrupted


def _read_shard_metadata(path: Path) -> dict[str, str] | None:
    """The metadata :func:`_atomic_save_shard` stored (shards written before it was one JSON object
    are read as they are); None for an unreadable file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        if SHARD_METADATA_KEY in metadata:
            metadata = json.loads(metadata[SHARD_METADATA_KEY])
        return metadata
    except Exception as error:  # a truncated/foreign file: recompute it
        log.warning("feature cache: ignoring unreadable shard %s (%s)", path, error)
        return None


def _shard_metadata(header: dict, shard_keys: list[str], entries: dict, skipped: list, streams: dict) -> dict[str, str]:
    """The string metadata stored in a shard file: the header it was written for, its clip list,
    entries (frame indices, frame counts), skips and per-row stream shapes. Everything a resumed
    extraction needs to trust the shard without the index; per-shard additions go here."""
    return {
        "header": json.dumps(header, sort_keys=True),
        "clips": json.dumps(shard_keys),
        "entries": json.dumps(entries, sort_keys=True),
        "skipped": json.dumps(skipped),
        "streams": json.dumps(streams, sort_keys=True),
    }


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
    "label_streams": [],
}


_FIELD_NAMES = {
    "weights_fingerprint": "weights fingerprint",
    "transform_key": "transform",
    "num_frames": "frames",
    "stream_key": "stream_key",
    "clip_streams": "clip streams",
    "class_streams": "class streams",
    "label_streams": "label-aware (support-only) streams",
}


def _identity_value(header: dict, name: str):
    value = header.get(name)
    return _IDENTITY[name] if value is None else value


class _LegacyFingerprint:
    """The encoder's fingerprint under the scheme of caches written before ``fingerprint_scheme``
    existed (every weight byte hashed); computed at most once, and only if such a cache is met."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self._value: str | None = None

    def __call__(self) -> str:
        if self._value is None:
            log.info("feature cache: computing the legacy (full) weights fingerprint to read an older cache")
            self._value = legacy_weights_fingerprint(self.encoder)
        return self._value


def _differences(
    cached: dict,
    wanted: dict,
    fields: Sequence[str] = tuple(_IDENTITY),
    legacy_fingerprint: Callable[[], str] | None = None,
) -> list[str]:
    """``["<field> <cached> (cache) vs <wanted> (requested)", ...]`` for every identity field that differs.

    A cached header without ``fingerprint_scheme`` holds a legacy fingerprint: it is compared with
    ``legacy_fingerprint()`` (old caches stay valid) when that is given.
    """
    differences = []
    for name in fields:
        have, want = _identity_value(cached, name), _identity_value(wanted, name)
        label = _FIELD_NAMES.get(name, name)
        if name == "weights_fingerprint" and cached.get("fingerprint_scheme") is None and have is not None:
            if legacy_fingerprint is not None:
                want = legacy_fingerprint()
            label = "weights fingerprint (legacy full hash)"
        if have != want:
            differences.append(f"{label} {have!r} (cache) vs {want!r} (requested)")
    return differences


def _describe(header: dict) -> str:
    return (
        f"backbone {header.get('backbone')!r} options {header.get('backbone_options')} "
        f"weights {header.get('weights_fingerprint')} frames {header.get('num_frames')} "
        f"sampling {header.get('sampling')!r} transform {header.get('transform_key')} "
        f"stream_key {_identity_value(header, 'stream_key')}"
    )


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


def _metadata_of(handle) -> dict:
    """The decoded fsar metadata of an open shard (see :func:`_atomic_save_shard`)."""
    metadata = dict(handle.metadata() or {})
    if SHARD_METADATA_KEY in metadata:
        try:
            return json.loads(metadata[SHARD_METADATA_KEY])
        except json.JSONDecodeError:
            return {}
    return metadata


def read_index(index_path: Path) -> dict:
    """The parsed ``index.json`` of a cache; every way it can be broken is a :class:`CacheError`
    naming the file (missing: :class:`CacheNotFoundError`; empty, truncated, not an object:
    :class:`CacheCorruptError`; another format: :class:`CacheMismatchError`)."""
    index_path = Path(index_path)
    if not index_path.exists():
        raise CacheNotFoundError(f"feature cache: {index_path} not found (run `fsar extract` first)")
    try:
        text = index_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CacheCorruptError(f"feature cache: {index_path} cannot be read ({error})") from None
    if not text.strip():
        raise CacheCorruptError(
            f"feature cache: {index_path} is empty; delete it and extract again (complete shards are reused)"
        )
    try:
        index = json.loads(text)
    except json.JSONDecodeError as error:
        raise CacheCorruptError(
            f"feature cache: {index_path} is not valid JSON (truncated? {error}); delete it and extract again "
            "(complete shards are reused)"
        ) from None
    if not isinstance(index, dict):
        raise CacheCorruptError(
            f"feature cache: {index_path} holds a JSON {type(index).__name__}, not a cache index (an object); "
            "delete it and extract again"
        )
    if index.get("format") != CACHE_FORMAT:
        raise CacheMismatchError(
            f"feature cache: {index_path} has format {index.get('format')!r}, expected {CACHE_FORMAT!r}"
        )
    return index


def shard_checksum_holds(path: Path) -> bool:
    """Whether a shard's tensors still match the checksum in its metadata (no checksum: True;
    unreadable: False)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            expected = _metadata_of(handle).get("tensors_sha256")
            if expected is None:
                return True
            return tensors_sha256({name: handle.get_tensor(name) for name in handle.keys()}) == expected
    except Exception:  # noqa: BLE001 - truncated or damaged: not reusable
        return False


def verify_cache(directory: str | os.PathLike, *, root: str | os.PathLike | None = None) -> dict:
    """Check a whole cache: its index, every shard's checksum and readability, every tensor finite,
    and (with the data at ``root``, default the recorded root) every clip's fingerprint.

    Returns ``{"clips", "shards", "problems": [text, ...], "changed_clips", "unchecked_shards",
    "skipped"}``; an unusable index raises :class:`CacheError`.
    """
    cache = FeatureCache(directory, root=root)
    problems: list[str] = []
    shards = sorted({e["shard"] for e in cache.entries.values()})
    unchecked = 0
    for shard in shards:
        try:
            handle = cache._open_shard(shard)  # noqa: SLF001 - the same check readers do
            if "tensors_sha256" not in _metadata_of(handle):
                unchecked += 1
            for key in handle.keys():
                cache._tensor(shard, key)  # noqa: SLF001 - finiteness, per tensor
        except CacheError as error:
            problems.append(str(error))
    changed = 0
    base = Path(root) if root is not None else cache.root
    if base.is_dir():
        for key in cache.entries:
            try:
                cache.check_source(base / key)
            except CacheError as error:
                changed += 1
                problems.append(str(error))
    else:
        problems.append(f"data root {base} is not a directory: the clips' fingerprints were not compared")
    return {"clips": len(cache.entries), "shards": len(shards), "problems": problems, "changed_clips": changed,
            "unchecked_shards": unchecked, "skipped": len(cache.skipped)}


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
        index = read_index(index_path)
        self.index = index
        try:
            self.root = Path(root) if root is not None else Path(index["root"])
            self.backbone: str = index["backbone"]
            self.backbone_options: dict = index.get("backbone_options", {})
            self.feature_dim: int = int(index["feature_dim"])
            self.transform_key: str = index["transform_key"]
            self.num_frames: int = int(index["num_frames"])
            self.sampling: str = index["sampling"]
            self.complete: bool = bool(index.get("complete", False))
            self.entries: dict[str, dict] = index["entries"]
            if not isinstance(self.entries, dict) or not all(
                isinstance(e, dict) and "shard" in e and "indices" in e for e in self.entries.values()
            ):
                raise TypeError("entries must map clip paths to {shard, indices, ...}")
        except (KeyError, TypeError, ValueError) as error:
            raise CacheCorruptError(
                f"feature cache: {index_path} is not a complete cache index ({type(error).__name__}: {error}); "
                "delete it and extract again (complete shards are reused)"
            ) from None
        self._verified_shards: set[str] = set()
        self._checked_sources: set[str] = set()
        self.stream_key: dict = _identity_value(index, "stream_key")
        streams = _index_streams(index)
        #: ``{name: {"shape": per-clip shape, "dtype": ...}}`` of every per-clip stream, ``"features"`` included.
        self.clip_streams: dict[str, dict] = streams["clip"]
        #: ``{name: {"shape": per-class shape, "dtype": ...}}`` of every per-class stream.
        self.class_streams: dict[str, dict] = streams["class"]
        self.class_entries: dict[str, dict] = dict(index.get("class_entries", {}))
        #: clip streams computed with the clip's class name (:meth:`Encoder.label_stream_names`):
        #: handed to support clips only, never to queries.
        self.label_streams: frozenset[str] = frozenset(_identity_value(index, "label_streams"))
        self._class_rows: dict[tuple[str, str], torch.Tensor] = {}
        self.skipped: dict[str, str] = {s["path"]: s["reason"] for s in index.get("skipped", [])}
        self._part_counts = sorted({len(PurePosixPath(k).parts) for k in self.entries}, reverse=True)
        self._handles: dict[str, Any] = {}
        # Episodes revisit the same few thousand clips: remember each path's index key (a relative
        # --data would otherwise resolve two paths, with lstat calls, per lookup), each located
        # (clip, view) and each tensor read (up to memory_budget bytes; FSAR_CACHE_MEMORY_MB).
        self._keys: dict[str, str] = {}
        self._located: dict[tuple[str, tuple[int, str, str]], tuple[str, dict]] = {}
        #: (index key, view) -> the row's name in EpisodeInputs.cached_rows (unique in the process)
        self._row_names: dict[tuple[str, tuple[int, str, str]], int] = {}
        self._views: dict[tuple, tuple[int, str, str]] = {}
        self._tensors: dict[tuple[str, str], torch.Tensor] = {}
        self._tensor_bytes = 0
        self.memory_budget = int(os.environ.get("FSAR_CACHE_MEMORY_MB", "2048")) * (1 << 20)
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
            "label_streams": _encoder_streams(encoder, "label_stream_names"),
        }
        cached = {name: self.index.get(name) for name in (*wanted, "fingerprint_scheme")}
        if cached["weights_fingerprint"] is None:  # an index without one: nothing to compare
            cached["weights_fingerprint"] = wanted["weights_fingerprint"]
            cached["fingerprint_scheme"] = FINGERPRINT_SCHEME
        differences = _differences(cached, wanted, tuple(wanted), _LegacyFingerprint(encoder))
        if differences:
            options = {k: v for k, v in (self.backbone_options or {}).items() if k != "weights"}
            hint = (f", or build the backbone with the options it was extracted with ({options}; for a method: "
                    f"-O 'encoder_options={{{', '.join(f'{k}: {v}' for k, v in options.items())}}}')") if options else ""
            raise CacheMismatchError(
                f"feature cache {self.directory} was extracted with another {encoder.name} encoder "
                f"({'; '.join(differences)}); extract a new cache with `fsar extract` for this encoder{hint}"
            )

    def check_backbone(self, name: str) -> None:
        """Raise :class:`CacheMismatchError` unless the cache holds features of backbone ``name``."""
        if name != self.backbone:
            raise CacheMismatchError(
                f"feature cache {self.directory} holds features of backbone {self.backbone!r}, not {name!r}"
            )

    def _key(self, clip_path: str | os.PathLike) -> str:
        text = os.fspath(clip_path)
        key = self._keys.get(text)
        if key is None:
            key = self._keys[text] = self._lookup_key(clip_path)
        return key

    def _lookup_key(self, clip_path: str | os.PathLike) -> str:
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

    def _shard_clips(self, shard: str, limit: int = 3) -> str:
        clips = [k for k, e in self.entries.items() if e.get("shard") == shard]
        text = ", ".join(clips[:limit])
        return text + (f" and {len(clips) - limit} more" if len(clips) > limit else "")

    def _open_shard(self, shard: str):
        """The safetensors handle of ``shard``, its checksum verified on first open."""
        from safetensors import safe_open

        handle = self._handles.get(shard)
        if handle is not None:
            return handle
        path = self.directory / shard
        holds = f"(it holds clip(s) {self._shard_clips(shard)})"
        if not path.is_file():
            raise CacheCorruptError(
                f"feature cache: shard {path} is missing {holds}; extract again (`fsar extract` or delete {self.directory})"
            )
        try:
            handle = safe_open(str(path), framework="pt")
            expected = _metadata_of(handle).get("tensors_sha256")
            if expected is not None and shard not in self._verified_shards:
                actual = tensors_sha256({name: handle.get_tensor(name) for name in handle.keys()})
                if actual != expected:
                    raise CacheCorruptError(
                        f"feature cache: shard {path} fails its checksum (its tensors were changed or damaged "
                        f"after extraction) {holds}; delete the shard and extract again"
                    )
        except CacheCorruptError:
            raise
        except Exception as error:  # safetensors raises its own types for truncated/foreign files
            raise CacheCorruptError(
                f"feature cache: shard {path} is unreadable (truncated or not a safetensors file: {error}) {holds}; "
                "delete the shard and extract again"
            ) from None
        self._verified_shards.add(shard)
        self._handles[shard] = handle
        return handle

    def _tensor(self, shard: str, key: str) -> torch.Tensor:
        """One stored tensor, read from its shard once (the shard's checksum verified on first
        open, the tensor checked finite) and then served from memory (within ``memory_budget``).
        Callers get the stored tensor: never modify it in place (the ``torch.stack`` of
        :meth:`load_episode` copies)."""
        found = self._tensors.get((shard, key))
        if found is not None:
            return found
        handle = self._open_shard(shard)
        try:
            tensor = handle.get_tensor(key)
        except Exception as error:  # noqa: BLE001 - a name the shard lacks, or a damaged file
            raise CacheCorruptError(
                f"feature cache: shard {self.directory / shard} has no readable tensor {key!r} ({error}); "
                "delete the shard and extract again"
            ) from None
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CacheCorruptError(
                f"feature cache: non-finite values (NaN/inf) in the features of clip {key.split('//')[0]} "
                f"(tensor {key!r} of shard {self.directory / shard}); delete the shard and extract again"
            )
        size = tensor.numel() * tensor.element_size()
        if self._tensor_bytes + size <= self.memory_budget:
            self._tensors[(shard, key)] = tensor
            self._tensor_bytes += size
        return tensor

    def check_source(self, clip_path: str | os.PathLike) -> None:
        """Raise :class:`CacheMismatchError` when the clip at ``clip_path`` is not the one whose
        features the cache holds (its size, or its content, changed; or it is another data set's
        clip of the same relative name). Checked once per clip; entries without a fingerprint
        (older caches) pass."""
        key = self._key(clip_path)
        if key in self._checked_sources:
            return
        entry = self.entries.get(key)
        changes = fingerprint_changes(entry.get("source") if entry else None, clip_path)
        if changes:
            raise CacheMismatchError(
                f"feature cache {self.directory}: clip {clip_path} is not the clip its features were extracted "
                f"from ({'; '.join(changes)}; extracted from {Path(self.index.get('root', '?')) / key}); "
                "extract again (`fsar extract`, or delete the cache folder to let training/evaluation re-extract)"
            )
        self._checked_sources.add(key)

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

    def _view(self, loader) -> tuple[int, str, str]:
        """(T, sampling, transform key) of ``loader``'s evaluation view: computed once per loader
        setting (a ClipLoader's frame count, sampling and frozen transform config), not per episode."""
        from fsar.data.loading import ClipLoader

        setting = None
        if type(loader) is ClipLoader:
            setting = (loader.num_frames, loader.sampling, loader.transform)
            found = self._views.get(setting)
            if found is not None:
                return found
        num_segments, sampling = _loader_sampling(loader)
        view = (num_segments, sampling, loader_transform_key(loader))
        if setting is not None:
            self._views[setting] = view
        return view

    def _locate(self, clip, view: tuple[int, str, str]) -> tuple[str, dict]:
        """(index key, entry) of a clip cached for exactly this view; raises :class:`MissingFeatureError`."""
        found = self._located.get((os.fspath(clip.path), view))
        if found is not None:
            return found
        num_segments, sampling, transform_key = view
        key = self._key(clip.path)
        entry = self.entries.get(key)
        indices: list[int] = []
        if entry is not None:
            from fsar.data.sampling import sample_indices

            # The recorded frame count gives the indices without opening the video.
            indices = [int(i) for i in sample_indices(int(entry["num_frames"]), num_segments, mode=sampling, train=False)]
            if transform_key == self.transform_key and list(entry["indices"]) == indices:
                self.check_source(clip.path)
                self._located[(os.fspath(clip.path), view)] = (key, entry)
                return key, entry
        raise MissingFeatureError(self._explain_missing(clip, indices, transform_key))

    def clip_features(self, clip, loader) -> torch.Tensor:
        """(T, D) features of one clip under ``loader``'s evaluation view; raises when absent."""
        key, entry = self._locate(clip, self._view(loader))
        return self._tensor(entry["shard"], key)

    def _missing_stream(self, name: str) -> MissingStreamError:
        present = [f"{n} (clip)" for n in sorted(self.clip_streams)] + [f"{n} (class)" for n in sorted(self.class_streams)]
        how = (
            f"it was extracted with backbone {self.backbone!r} (stream_key {self.stream_key}), which produced "
            f"no {name!r}; extract a new cache with `fsar extract --data ROOT --backbone B --out NEW_DIR ...` using the "
            f"backbone B whose encoder produces {name!r} (the method's own backbone, if the method requires it)"
        )
        return MissingStreamError(name, "clip or class", present, where=f"feature cache {self.directory}", how=how)

    def clip_stream(self, clip, loader, name: str) -> torch.Tensor:
        """Stream ``name`` of one clip (shape ``clip_streams[name]["shape"]``) under ``loader``'s
        evaluation view; ``"features"`` is :meth:`clip_features`. Raises when absent."""
        if name not in self.clip_streams:
            raise self._missing_stream(name)
        key, entry = self._locate(clip, self._view(loader))
        return self._tensor(entry["shard"], _stream_tensor_name(key, name))

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
        ``support``/``query``). An unknown name raises :class:`MissingStreamError`. A label-aware
        stream (:attr:`label_streams`: its prompt named the clip's class) fills ``support_streams``
        only: a query never receives it, so its label cannot reach a forward pass.
        """
        if isinstance(streams, str):
            streams = (streams,)
        for name in streams:
            if name not in self.clip_streams and name not in self.class_streams:
                raise self._missing_stream(name)
        view = self._view(loader)
        clip_names = [n for n in dict.fromkeys(streams) if n in self.clip_streams and n != PRIMARY_STREAM]
        class_names = [n for n in dict.fromkeys(streams) if n not in self.clip_streams]

        def rows(clips, names) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
            located = [self._locate(c, view) for c in clips]  # one lookup per clip for every stream
            primary = torch.stack([self._tensor(entry["shard"], key) for key, entry in located])
            extra = {
                name: torch.stack([self._tensor(entry["shard"], _stream_tensor_name(key, name)) for key, entry in located])
                for name in names
            }
            return primary, extra, [self._row_name(key, view) for key, _ in located]

        support, support_streams, support_names = rows(episode.support, clip_names)
        query, query_streams, query_names = rows(episode.query, [n for n in clip_names if n not in self.label_streams])
        class_streams = {
            name: torch.stack([self.class_stream(c, name) for c in episode.class_names]) for name in class_names
        }
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
            cached_rows=CachedRows.of(support, support_names, query, query_names),
        )

    def _row_name(self, key: str, view: tuple[int, str, str]) -> int:
        """The process-wide unique name of one cached clip under one view (see :class:`CachedRows`)."""
        name = self._row_names.get((key, view))
        if name is None:
            name = self._row_names[(key, view)] = next(_ROW_NAMES)
        return name

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.directory)!r}, backbone={self.backbone!r}, clips={len(self)}, "
            f"skipped={len(self.skipped)}, T={self.num_frames}, D={self.feature_dim})"
        )
