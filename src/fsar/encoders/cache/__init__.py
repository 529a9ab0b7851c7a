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
fills the episode's ``support_streams``/``query_streams``/``class_streams``. A label-aware clip
stream (``label_stream_names()``, e.g. the state of a prompt that names the clip's class) is
extracted with each clip's class name from the manifest and handed to support clips only.

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
identified by :func:`weights_fingerprint` (layout, a tensor sample and the weight files; fast
for a 7B model, see :mod:`fsar.encoders.fingerprint`), so two spellings of the same weights
agree. Caches written with the earlier full-byte fingerprint (no ``fingerprint_scheme`` in
their index) are still accepted: they are compared with that fingerprint.
A process killed mid-write (SIGKILL) leaves at most a temporary, which the next extraction
removes; two extractions into one directory at once end with the same bytes as one clean
extraction (``tests/test_encoders_cache_processes.py``). Extracting another manifest of the same data root (e.g. the test split after the train split)
into a cache adds its clips; one directory serves one data root.

The index is keyed by clip path; each entry records the clip's frame count, the frame
indices that were encoded and the shard; the header records the transform key. Unreadable
clips are counted, logged and listed under ``skipped`` with their reason, never fatal.

Integrity: each shard's metadata carries ``tensors_sha256`` (:func:`fsar.data.integrity.tensors_sha256`
over its tensors), checked when a reader first opens the shard and before an extraction reuses it;
each entry carries ``source``, the fingerprint (size, mtime, content sample) of the clip it
encoded, so a clip changed since (or another data root's clip of the same relative name) is
refused by the reader (:meth:`FeatureCache.check_source`) and encoded again by the next
extraction. A non-finite feature is never stored (the clip is skipped with that reason) and never
read (the error names the clip). :func:`verify_cache` (``fsar data check --features DIR``) checks
a whole cache.

Modules, by concern (every name below is importable from ``fsar.encoders.cache`` as before the split):

* :mod:`fsar.encoders.cache.decoding`: the decoding pipeline (the evaluation view of a clip,
  background prefetch).
* :mod:`fsar.encoders.cache.store`: the feature store (directory layout, index, shards, the cache
  key and its comparison, :class:`FeatureCache`, the read side).
* :mod:`fsar.encoders.cache.extract`: :func:`extract_features`, the write side.
* :mod:`fsar.encoders.fingerprint`: :func:`weights_fingerprint`.
"""

from __future__ import annotations

from fsar.encoders.cache.decoding import _decoded, _eval_transform, _load_eval_view, _loader_sampling, loader_transform_key
from fsar.encoders.cache.extract import (
    ExtractionSummary,
    _encode_shard,
    _header,
    _refuse_mixing,
    _reusable_shard,
    extract_features,
)
from fsar.encoders.cache.store import (
    CACHE_FORMAT,
    INDEX_NAME,
    CacheCorruptError,
    CacheMismatchError,
    CacheNotFoundError,
    FeatureCache,
    MissingFeatureError,
    read_index,
    verify_cache,
    _atomic_save_shard,
    _atomic_write_text,
    _read_shard_metadata,
    _relative_key,
    _shard_name,
    encoder_stream_key,
)
from fsar.encoders.fingerprint import legacy_weights_fingerprint, weights_fingerprint

__all__ = [
    "CACHE_FORMAT",
    "CacheCorruptError",
    "CacheMismatchError",
    "CacheNotFoundError",
    "ExtractionSummary",
    "FeatureCache",
    "MissingFeatureError",
    "encoder_stream_key",
    "extract_features",
    "legacy_weights_fingerprint",
    "loader_transform_key",
    "read_index",
    "verify_cache",
    "weights_fingerprint",
]
