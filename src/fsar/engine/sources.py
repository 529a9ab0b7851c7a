"""Episode sources: where the engine's episodes come from.

Two kinds, one interface (:class:`fsar.engine.evaluate.EpisodeSource`):

* :class:`FrameEpisodes` decodes and transforms the frames of every clip of an episode
  (training: random TSN frames and crops drawn from a generator seeded by
  ``(seed, episode index)``, so a resumed run draws the same augmentation);
* :class:`CachedEpisodes` reads per-frame features of a frozen encoder from a feature
  cache (:mod:`fsar.encoders.cache`). With a frozen encoder the encoder's output never
  changes, so encoding every clip once instead of in every episode is the whole cost
  saving; the price is that training sees the evaluation view of each clip (no frame or
  crop augmentation).

:func:`episode_source` picks the kind for a method: cached features when its encoder is
frozen (extracting them on the fly when no cache is given), frames otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fsar.data.episodes import EpisodeSampler
from fsar.data.inputs import EpisodeInputs
from fsar.data.loading import ClipLoader, load_episode
from fsar.data.manifest import Manifest
from fsar.data.transforms import TransformConfig
from fsar.engine.distributed import derive_seed
from fsar.methods.base import FewShotMethod

__all__ = ["CachedEpisodes", "FrameEpisodes", "episode_source", "loader_for", "open_feature_cache"]

log = logging.getLogger(__name__)


def loader_for(
    encoder, *, num_frames: int, image_size: int | None = None, hflip: bool = False, color_jitter: float = 0.0
) -> ClipLoader:
    """The clip loader matching an encoder's normalisation and input size (or ``image_size``)."""
    sizes = {} if image_size is None else {"image_size": image_size}
    transform = TransformConfig.for_encoder(encoder, hflip=hflip, color_jitter=color_jitter, **sizes)
    return ClipLoader(num_frames=num_frames, transform=transform)


@dataclass
class FrameEpisodes:
    """Episodes of decoded, transformed frames: support (n_support, T, C, H, W)."""

    sampler: EpisodeSampler
    loader: ClipLoader

    @property
    def class_names(self) -> list[str]:
        return list(self.sampler.manifest.classes)

    def sample(self, index: int, *, train: bool) -> EpisodeInputs:
        generator = torch.Generator().manual_seed(derive_seed(self.sampler.seed, index, 1))
        return load_episode(self.sampler.episode(index), self.loader, train=train, generator=generator)


@dataclass
class CachedEpisodes:
    """Episodes of cached per-frame features: support (n_support, T, D), ``features=True``."""

    sampler: EpisodeSampler
    cache: object  # fsar.encoders.cache.FeatureCache
    loader: ClipLoader
    #: Extra named streams the method reads (:meth:`FewShotMethod.required_streams`).
    streams: tuple[str, ...] = ()

    @property
    def class_names(self) -> list[str]:
        return list(self.sampler.manifest.classes)

    def sample(self, index: int, *, train: bool) -> EpisodeInputs:
        return self.cache.load_episode(self.sampler.episode(index), self.loader, streams=self.streams)


def open_feature_cache(directory: str | Path, encoder):
    """Open an existing cache and check it holds this very encoder's features."""
    from fsar.encoders.cache import FeatureCache

    cache = FeatureCache(directory)
    cache.check_encoder(encoder)  # backbone, weights fingerprint, stream_key, stream names
    return cache


def episode_source(
    method: FewShotMethod,
    manifest: Manifest,
    *,
    way: int,
    shot: int,
    queries: int,
    seed: int,
    num_frames: int = 8,
    image_size: int | None = None,
    use_feature_cache: bool = True,
    features: str | Path | None = None,
    extract_to: str | Path | None = None,
    weights: str | None = None,
    hflip: bool = False,
    color_jitter: float = 0.0,
    progress: bool = True,
    before_open: Callable[[], None] | None = None,
    may_extract: bool = True,
):
    """The episode source for ``method`` on ``manifest``.

    A method that :meth:`~FewShotMethod.uses_cached_features` (default: its encoder is
    frozen) and ``use_feature_cache``: features from the cache at ``features`` if given (it
    must hold every clip), else extracted into ``extract_to`` (resumable; reused by later
    runs), with the method's :meth:`~FewShotMethod.required_streams`. ``may_extract=False``
    skips the extraction (another process does it; call ``before_open`` to wait for it).
    Otherwise: frames.
    """
    sampler = EpisodeSampler(manifest, way=way, shot=shot, queries=queries, seed=seed)
    encoder = method.encoder
    loader = loader_for(encoder, num_frames=num_frames, image_size=image_size, hflip=hflip, color_jitter=color_jitter)
    if not (use_feature_cache and method.uses_cached_features()):
        return FrameEpisodes(sampler, loader)
    if features is None:
        if extract_to is None:
            raise ValueError("a frozen-encoder source needs a feature cache directory (features or extract_to)")
        if may_extract:
            from fsar.encoders.cache import extract_features

            summary = extract_features(
                manifest, encoder, loader, Path(extract_to), backbone_options={"weights": weights}, progress=progress
            )
            if summary.skipped:
                log.warning("%d clips of %s could not be encoded and are left out", len(summary.skipped), manifest.root)
        features = extract_to
    if before_open is not None:
        before_open()
    cache = open_feature_cache(features, encoder)
    return CachedEpisodes(_without_skipped(sampler, cache, manifest, way=way, shot=shot, queries=queries, seed=seed),
                          cache, loader, streams=tuple(method.required_streams()))


def _without_skipped(sampler: EpisodeSampler, cache, manifest: Manifest, **sampling) -> EpisodeSampler:
    """Drop clips the extraction could not encode (counted and logged) so no episode asks for them."""
    missing = [c for c in manifest.clips if c.path not in cache]
    if not missing:
        return sampler
    log.warning("%d clips of %s have no cached features (unreadable at extraction); leaving them out",
                len(missing), manifest.root)
    gone = {c.path for c in missing}
    kept = [c for c in manifest.clips if c.path not in gone]
    return EpisodeSampler(Manifest(manifest.root, manifest.classes, kept, manifest.skipped), **sampling)
