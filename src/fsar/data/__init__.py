"""Data layer: video decoding, frame sampling, transforms, manifests, episodes, synthetic actions.

Never imports a model.
"""

from fsar.data.inputs import EpisodeInputs

__all__ = ["EpisodeInputs"]
