"""The decoding pipeline of the feature cache: the evaluation view of a clip, decoded ahead.

A cache stores one view of every clip, the one a :class:`fsar.data.ClipLoader` gives at
evaluation: centre TSN (or uniform) frame indices and the loader's evaluation transform (centre
crop). :func:`loader_transform_key` names that view (it is part of the cache key);
:func:`_load_eval_view` decodes it; :func:`_decoded` runs the decoding one thread ahead of the
encoder. Nothing here knows about shards or the index (:mod:`fsar.encoders.cache.store`).
"""

from __future__ import annotations

import torch

__all__ = ["loader_transform_key"]


def loader_transform_key(loader) -> str:
    """The stable key of a :class:`fsar.data.ClipLoader`'s evaluation view (frames, sampling, transform)."""
    key = getattr(loader, "key", None)
    if callable(key):
        return str(key())
    num_frames, sampling = _loader_sampling(loader)
    return f"frames={num_frames}|sampling={sampling}|{_eval_transform(loader).key()}"


def _loader_sampling(loader) -> tuple[int, str]:
    return int(loader.num_frames), str(getattr(loader, "sampling", "tsn"))


def _eval_transform(loader):
    from fsar.data.transforms import ClipTransform, TransformConfig

    config = getattr(loader, "transform", None)
    if isinstance(config, ClipTransform):
        config = config.config
    if not isinstance(config, TransformConfig):
        config = getattr(loader, "transform_config")
    return ClipTransform(config, train=False)


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
