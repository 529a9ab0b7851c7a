"""Integrity of derived files: what a clip looked like when its features were computed, and a
checksum of stored tensors, so a cache never answers for data that changed underneath it.

* :func:`clip_fingerprint`: ``{"size", "mtime_ns", "sample"}`` of a video file or frame
  folder. ``sample`` is a SHA-256 over a content sample: the first and last 64 KiB of a file
  (and its size); for a frame folder, its number of frames, each frame's name and size, and the
  first and last 64 KiB of its first, middle and last frames. Reading 128-384 KiB per clip
  keeps it cheap on a 10^5-clip data set, and it tells a copied data set (same content, other
  mtimes: accepted) from another data set whose clips happen to share relative names, or an
  edited clip (refused).
* :func:`fingerprint_changes`: what differs between a recorded and a current fingerprint, in
  words (``[]`` when the clip is the same). Size and mtime equal: the same clip, no read; size
  equal but mtime different: the content sample decides.
* :func:`tensors_sha256`: a SHA-256 over named tensors (names, dtypes, shapes, bytes), in name
  order, so it does not depend on a file format's header order.
* :func:`remove_stale_temporaries`: the temporary files of atomic writes that a killed writer
  left behind, removed by the next run (those of live writers are kept).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["clip_fingerprint", "fingerprint_changes", "remove_stale_temporaries", "tensors_sha256"]

_SAMPLE_BYTES = 64 * 1024


def _file_sample(digest, path: Path, size: int) -> None:
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        if size > 2 * _SAMPLE_BYTES:
            handle.seek(size - _SAMPLE_BYTES)
        digest.update(handle.read(_SAMPLE_BYTES))


def _frame_files(folder: Path) -> list[Path]:
    from fsar.data.video import is_image_file, natural_key

    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: natural_key(p.name))


def clip_fingerprint(path: str | os.PathLike, *, with_sample: bool = True) -> dict:
    """Size, modification time and a content sample of a clip (see the module docstring).

    Raises ``OSError`` when the clip cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        frames = _frame_files(path)
        stats = [p.stat() for p in frames]
        size = sum(s.st_size for s in stats)
        mtime = max((s.st_mtime_ns for s in stats), default=path.stat().st_mtime_ns)
        if with_sample:
            digest.update(f"frames={len(frames)}".encode())
            for frame, stat in zip(frames, stats):
                digest.update(f"{frame.name}:{stat.st_size};".encode())
            picks = sorted({0, len(frames) // 2, len(frames) - 1}) if frames else []
            for i in picks:
                _file_sample(digest, frames[i], stats[i].st_size)
    else:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
        if with_sample:
            digest.update(f"size={size}".encode())
            _file_sample(digest, path, size)
    fingerprint = {"size": int(size), "mtime_ns": int(mtime)}
    if with_sample:
        fingerprint["sample"] = digest.hexdigest()[:32]
    return fingerprint


def fingerprint_changes(recorded: Mapping | None, path: str | os.PathLike) -> list[str]:
    """What differs between the ``recorded`` fingerprint and the clip at ``path`` now (``[]``: same).

    A record without a fingerprint (older caches) has nothing to compare: ``[]``.
    """
    if not recorded:
        return []
    try:
        quick = clip_fingerprint(path, with_sample=False)
    except OSError as error:
        return [f"it cannot be read now ({error.strerror or error})"]
    if quick["size"] != recorded.get("size"):
        return [f"size {recorded.get('size')} -> {quick['size']} bytes"]
    if quick["mtime_ns"] == recorded.get("mtime_ns"):
        return []
    try:
        now = clip_fingerprint(path)
    except OSError as error:
        return [f"it cannot be read now ({error.strerror or error})"]
    if now["sample"] != recorded.get("sample"):
        return ["same size but other content (content sample differs)"]
    return []  # a copy or a touch: same content


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over ``tensors`` in name order: each name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: Temporary files of fsar's atomic writes: ``.<name>.<pid>.<random>.tmp`` (checkpoints, logs),
#: ``.<name>.tmp-<pid>`` (feature cache), ``.<name>.<pid>.tmp`` (synthetic data).
_TEMPORARY = re.compile(r"^\..+?(?:\.(?P<a>\d+)\.[^.]*\.tmp|\.tmp-(?P<b>\d+)|\.(?P<c>\d+)\.tmp|\.[^.]+\.tmp)$")

#: A temporary file whose writer still runs is kept unless it is older than this (pid reuse).
_LIVE_WRITER_MAX_AGE_S = 6 * 3600
#: A temporary file naming no writer (older fsar versions) is removed once it is this old.
_UNNAMED_MAX_AGE_S = 600


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``directory`` (not recursive).

    An atomic write (checkpoints, logs, the feature cache, the synthetic renderer) writes a hidden
    temporary file and renames it into place; ``kill -9`` in between leaves the temporary
    behind. A temporary whose writer process (its pid is in the name) no longer runs on this
    machine is removed; one of a live writer is kept, so concurrent runs and extractions into
    the same folder never lose a file in flight. Returns the paths removed (logged).
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid_text = match.group("a") or match.group("b") or match.group("c")
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        if pid_text is not None:
            if _process_alive(int(pid_text)) and age < _LIVE_WRITER_MAX_AGE_S:
                continue
        elif age < _UNNAMED_MAX_AGE_S:
            continue
        try:
            entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    if removed:
        logging.getLogger(__name__).info(
            "%s: removed %d temporary file(s) left by an interrupted run: %s",
            directory, len(removed), ", ".join(p.name for p in removed[:5]),
        )
    return removed
