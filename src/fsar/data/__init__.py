"""Data layer: video decoding, frame sampling, transforms, manifests, episodes, synthetic actions.

Never imports a model. PyAV and Pillow are imported when a video is first read.
"""

from fsar.data.episodes import Episode, EpisodeError, EpisodeSampler
from fsar.data.inputs import EpisodeInputs, MissingStreamError
from fsar.data.loading import ClipLoader, load_episode
from fsar.data.manifest import Clip, Manifest, ManifestError, Skipped
from fsar.data.sampling import sample_indices
from fsar.data.transforms import ClipTransform, TransformConfig
from fsar.data.video import VideoReader, VideoReadError, open_video

__all__ = [
    "Clip",
    "ClipLoader",
    "ClipTransform",
    "Episode",
    "EpisodeError",
    "EpisodeInputs",
    "MissingStreamError",
    "EpisodeSampler",
    "Manifest",
    "ManifestError",
    "Skipped",
    "TransformConfig",
    "VideoReadError",
    "VideoReader",
    "load_episode",
    "open_video",
    "sample_indices",
]
