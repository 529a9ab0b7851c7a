"""From clips to tensors: sample frame indices, decode, transform; and whole episodes.

``ClipLoader`` is the one place where a clip becomes model input, so that training,
evaluation, prediction and the feature cache all see frames chosen and transformed the
same way (``ClipLoader.key()`` names the evaluation pipeline for cache keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fsar.data.episodes import Episode
from fsar.data.inputs import EpisodeInputs
from fsar.data.manifest import Clip
from fsar.data.sampling import SAMPLING_MODES, sample_indices
from fsar.data.transforms import ClipTransform, TransformConfig
from fsar.data.video import open_video


@dataclass(kw_only=True)
class ClipLoader:
    """Loads ``num_frames`` frames of a clip (TSN or uniform sampling) as normalised float32 ``(T, C, H, W)``."""

    num_frames: int = 8
    sampling: str = "tsn"
    transform: TransformConfig = field(default_factory=TransformConfig)

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
        self._transforms = {
            True: ClipTransform(self.transform, train=True),
            False: ClipTransform(self.transform, train=False),
        }

    def indices(self, clip: Clip, *, train: bool, generator: torch.Generator | None = None) -> list[int]:
        """The frame indices ``load`` would read (evaluation: deterministic)."""
        reader = open_video(clip.path)
        return sample_indices(reader.num_frames, self.num_frames, mode=self.sampling, train=train, generator=generator)

    def load_uint8(self, clip: Clip, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sampled, untransformed frames: uint8 ``(T, C, H, W)``."""
        reader = open_video(clip.path)
        indices = sample_indices(reader.num_frames, self.num_frames, mode=self.sampling, train=train, generator=generator)
        return reader.read(indices)

    def load(self, clip: Clip, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sampled and transformed frames: float32 ``(T, C, image_size, image_size)``."""
        frames = self.load_uint8(clip, train=train, generator=generator)
        return self._transforms[train](frames, generator=generator)

    def key(self) -> str:
        """Stable text naming the evaluation pipeline (frames sampled + transform), for caches."""
        return f"frames={self.num_frames}|sampling={self.sampling}|{self._transforms[False].key()}"


def load_episode(
    episode: Episode, loader: ClipLoader, *, train: bool, generator: torch.Generator | None = None
) -> EpisodeInputs:
    """Frames of every support and query clip: support ``(n_support, T, C, H, W)``, query ``(n_query, T, C, H, W)``."""
    support = torch.stack([loader.load(clip, train=train, generator=generator) for clip in episode.support])
    query = torch.stack([loader.load(clip, train=train, generator=generator) for clip in episode.query])
    return EpisodeInputs(
        support=support,
        support_labels=torch.tensor(episode.support_labels, dtype=torch.long),
        query=query,
        query_labels=torch.tensor(episode.query_labels, dtype=torch.long),
        class_names=list(episode.class_names),
        features=False,
    )
