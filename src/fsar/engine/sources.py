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
from dataclasses import dataclass, field
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
    """The clip loader matching an encoder's normalisation and input size (or ``image_size``).

    An ``image_size`` other than the encoder's own is tried on one blank frame first, so a size
    the encoder cannot take (a ViT's fixed grid, a CNN's minimum) is a :class:`ConfigError`
    naming ``--image-size`` here, not a failure in the first episode.
    """
    if image_size is not None and int(image_size) != int(getattr(encoder, "image_size", image_size)):
        _probe_image_size(encoder, int(image_size))
    sizes = {} if image_size is None else {"image_size": image_size}
    transform = TransformConfig.for_encoder(encoder, hflip=hflip, color_jitter=color_jitter, **sizes)
    return ClipLoader(num_frames=num_frames, transform=transform)


def left_out_clip(clip, reason: str, stage: str) -> dict:
    """One entry of a result's ``skipped`` list: a clip left out, why, and at which stage
    ("listing": missing or unreadable when the data set was listed; "extraction": could not be
    encoded into the feature cache; "episodes": failed to decode while an episode was built)."""
    return {"path": str(clip.path), "class": clip.class_name, "reason": str(reason), "stage": stage}


def _sampler_without(sampler: EpisodeSampler, gone: set[Path]) -> EpisodeSampler:
    manifest = sampler.manifest
    kept = [c for c in manifest.clips if c.path not in gone]
    return EpisodeSampler(Manifest(manifest.root, manifest.classes, kept, manifest.skipped),
                          way=sampler.way, shot=sampler.shot, queries=sampler.queries, seed=sampler.seed)


def _probe_image_size(encoder, size: int) -> None:
    from fsar.errors import ConfigError

    first = next(iter(encoder.parameters()), None)
    blank = torch.zeros(1, 1, 3, size, size, device=first.device if first is not None else "cpu")
    was_training = encoder.training
    encoder.eval()  # no BatchNorm statistics may move for a probe
    try:
        with torch.no_grad():
            encoder.encode_frames(blank)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"--image-size {size}: backbone {getattr(encoder, 'name', type(encoder).__name__)!r} cannot take "
            f"{size}x{size} frames ({str(error).splitlines()[0]}); its own size is {encoder.image_size}"
        ) from None
    finally:
        encoder.train(was_training)


@dataclass
class FrameEpisodes:
    """Episodes of decoded, transformed frames: support (n_support, T, C, H, W).

    A clip that fails to decode while an episode is built (it listed and opened, but a frame is
    corrupt) is left out from then on, logged and recorded in ``left_out``; the episode is drawn
    again from the remaining clips (same seed and index), so an evaluation reports the clip
    instead of stopping at it. The episodes after such a clip therefore differ from those of a
    data set without it (as with the feature cache, which leaves such clips out up front).
    """

    sampler: EpisodeSampler
    loader: ClipLoader
    left_out: list[dict] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return list(self.sampler.manifest.classes)

    def sample(self, index: int, *, train: bool) -> EpisodeInputs:
        from fsar.data.video import VideoReadError

        while True:
            episode = self.sampler.episode(index)
            generator = torch.Generator().manual_seed(derive_seed(self.sampler.seed, index, 1))
            try:
                return load_episode(episode, self.loader, train=train, generator=generator)
            except VideoReadError as error:
                clip = _failed_clip(episode, error.path)
                if clip is None:
                    raise
                self.left_out.append(left_out_clip(clip, error.reason, "episodes"))
                log.warning("leaving out clip %s: %s", clip.path, error.reason)
                self.sampler = _sampler_without(self.sampler, {clip.path})


def _failed_clip(episode, path: Path):
    """The clip of ``episode`` a read error at ``path`` belongs to (a video file, a frame folder or
    one of its frames)."""
    path = Path(path)
    for clip in (*episode.support, *episode.query):
        if path == clip.path or clip.path in path.parents:
            return clip
    return None


@dataclass
class CachedEpisodes:
    """Episodes of cached per-frame features: support (n_support, T, D), ``features=True``.
    ``left_out``: the clips of the manifest the cache has no features for (and why)."""

    sampler: EpisodeSampler
    cache: object  # fsar.encoders.cache.FeatureCache
    loader: ClipLoader
    #: Extra named streams the method reads (:meth:`FewShotMethod.required_streams`).
    streams: tuple[str, ...] = ()
    left_out: list[dict] = field(default_factory=list)

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
    kept_sampler, left_out = _without_skipped(sampler, cache, manifest)
    return CachedEpisodes(kept_sampler, cache, loader, streams=tuple(method.required_streams()), left_out=left_out)


def _without_skipped(sampler: EpisodeSampler, cache, manifest: Manifest) -> tuple[EpisodeSampler, list[dict]]:
    """Drop clips the extraction could not encode (counted and logged) so no episode asks for them;
    returns the sampler and the clips left out, with the reasons the cache recorded."""
    missing = [c for c in manifest.clips if c.path not in cache]
    if not missing:
        return sampler, []
    log.warning("%d clips of %s have no cached features (unreadable at extraction); leaving them out",
                len(missing), manifest.root)
    reasons = getattr(cache, "skipped", {})
    left_out = []
    for clip in missing:
        key = cache._key(clip.path)  # noqa: SLF001 - the index key the reasons are filed under
        left_out.append(left_out_clip(clip, reasons.get(key, "no features in the cache"), "extraction"))
    return _sampler_without(sampler, {c.path for c in missing}), left_out
