"""Feature cache: per-frame features of a frozen encoder, computed once, read by training and evaluation.

With a frozen encoder (the embedded pair, or CLIP without adapters) decoding and the CNN/ViT
dominate the cost of every episode, and they give the same result every time for the
evaluation view of a clip (centre TSN indices, centre crop). :func:`extract_features` runs
that view of every clip of a manifest once and stores (T, D) float32 features;
:class:`FeatureCache` then builds episodes from them (``EpisodeInputs(features=True)``).

Trade-off (documented, not hidden): a method trained from the cache sees the evaluation view
of each clip in every episode, i.e. no frame or crop augmentation.

Layout of a cache directory::

    index.json                              written atomically after every shard
    shard-00000-<digest>.safetensors        tensors named by clip path (relative to the data root), (T, D)
    shard-00001-<digest>.safetensors        ...

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

from fsar.data.inputs import EpisodeInputs
from fsar.errors import CacheError

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


class CacheMismatchError(CacheError):
    """The cache directory holds features of another backbone/options/transform than requested."""


class MissingFeatureError(CacheError, KeyError):
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
        "feature_dim": int(encoder.feature_dim),
        "transform_key": transform_key,
        "num_frames": int(num_frames),
        "sampling": sampling,
    }


#: Header fields that must agree for features to share a cache. ``backbone_options`` is recorded
#: but not compared: equal weights reached by another spelling (a folder vs. a hub id, None vs.
#: "pretrained") give the same fingerprint and the same features.
_IDENTITY = ("format", "backbone", "weights_fingerprint", "feature_dim", "transform_key", "num_frames", "sampling")


def _same_features(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in _IDENTITY)


def _describe(header: dict) -> str:
    return (
        f"backbone {header.get('backbone')!r} options {header.get('backbone_options')} "
        f"weights {header.get('weights_fingerprint')} frames {header.get('num_frames')} "
        f"sampling {header.get('sampling')!r} transform {header.get('transform_key')}"
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
                shard_entries, shard_skipped = reused
                summary.shards_reused += 1
            else:
                shard_entries, shard_skipped, tensors = _encode_shard(
                    shard_clips, shard_keys, encoder, loader, batch_size, device, VideoReadError, bar, prefetch
                )
                metadata = {
                    "header": json.dumps(header, sort_keys=True),
                    "clips": json.dumps(shard_keys),
                    "entries": json.dumps(shard_entries, sort_keys=True),
                    "skipped": json.dumps(shard_skipped),
                }
                _atomic_save_shard(path, tensors, metadata)
                summary.shards_written += 1
                summary.encoded += len(shard_entries)
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
    if not _same_features(old_header, header):
        raise CacheMismatchError(
            f"feature cache: {out} already holds features of {_describe(old_header)}; "
            f"refusing to mix in {_describe(header)}. Use another --out directory."
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
        if not _same_features(json.loads(meta["header"]), header):
            raise CacheMismatchError(
                f"feature cache: shard {path} was written for {_describe(json.loads(meta['header']))}; "
                f"refusing to mix in {_describe(header)}. Use another --out directory."
            )
        if json.loads(meta["clips"]) != shard_keys:
            return None  # the clip list changed (another manifest/shard size): recompute
        entries = json.loads(meta["entries"])
        skipped = [tuple(s) for s in json.loads(meta["skipped"])]
    except (KeyError, json.JSONDecodeError):
        return None
    return entries, skipped


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


def _encode_shard(shard_clips, shard_keys, encoder, loader, batch_size, device, read_error, bar, prefetch):
    entries: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    tensors: dict[str, torch.Tensor] = {}
    pending: list[tuple[str, list[int], int, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        frames = torch.stack([p[3] for p in pending]).to(device)
        with torch.inference_mode():
            feats = encoder.encode_frames(frames)  # (B, T, D)
        feats = feats.float().cpu()
        for (key, indices, total, _), feat in zip(pending, feats):
            tensors[key] = feat.clone().contiguous()
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
    return entries, skipped, tensors


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

    def load_episode(self, episode, loader) -> EpisodeInputs:
        """Cached features of an :class:`fsar.data.Episode`: support (n_support, T, D), query (n_query, T, D)."""
        support = torch.stack([self.clip_features(c, loader) for c in episode.support])
        query = torch.stack([self.clip_features(c, loader) for c in episode.query])
        return EpisodeInputs(
            support=support,
            support_labels=torch.as_tensor(episode.support_labels, dtype=torch.long),
            query=query,
            class_names=list(episode.class_names),
            query_labels=torch.as_tensor(episode.query_labels, dtype=torch.long),
            features=True,
        )

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.directory)!r}, backbone={self.backbone!r}, clips={len(self)}, "
            f"skipped={len(self.skipped)}, T={self.num_frames}, D={self.feature_dim})"
        )
