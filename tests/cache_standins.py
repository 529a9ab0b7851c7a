"""Stand-ins for the feature-cache tests: tiny deterministic frozen encoders and a tiny data set.

``TinyEncoder`` produces the single primary stream (``encode_frames`` only, every stream hook at
its default); ``StreamingEncoder`` adds two per-clip streams and one per-class stream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from fsar.data.testing import write_frame_folder, write_video
from fsar.encoders.base import Encoder


class TinyEncoder(Encoder):
    """Deterministic, frozen: per-frame channel means and a fixed random projection of them."""

    name = "tiny-test"
    feature_dim = 6
    text_dim = 2
    image_size = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    shared_space = False

    def __init__(self, seed: int = 0, trainable: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Parameter(torch.randn(3, 3, generator=g), requires_grad=trainable)
        self.calls = 0
        self.clips_seen = 0

    def encode_frames(self, frames, text_features=None):
        self.calls += 1
        self.clips_seen += frames.shape[0]
        means = frames.mean(dim=(-2, -1))  # (B, T, 3)
        return torch.cat([means, means @ self.proj], dim=-1)

    def encode_text(self, texts):
        return torch.zeros(len(texts), 2)


class StreamingEncoder(TinyEncoder):
    """TinyEncoder plus named streams, all from one forward.

    Streams:
        features: (B, T, 6) float32, as TinyEncoder.
        row_means: (B, T, 3, H) float32, per-frame channel means over the width (a "middle layer").
        clip_code: (B, 2) float64, the clip's mean and max value scaled by ``layer``.
        name_code: (N, 4) float32 per class name, a hash of ``prompt`` and the name (a "text bank").
    ``stream_key()`` is ``{"layer": layer, "prompt_sha1": <sha1 of prompt>}``.
    """

    name = "tiny-streams"

    def __init__(self, seed: int = 0, *, layer: int = 1, prompt: str = "a video of {}") -> None:
        super().__init__(seed)
        self.layer = layer
        self.prompt = prompt
        self.class_calls: list[list[str]] = []

    def clip_stream_names(self):
        return ("row_means", "clip_code")

    def class_stream_names(self):
        return ("name_code",)

    def encode_clips(self, frames):
        features = self.encode_frames(frames)
        flat = frames.reshape(frames.shape[0], -1)
        code = torch.stack([flat.mean(dim=1), flat.amax(dim=1)], dim=1).double() * self.layer
        return {"features": features, "row_means": frames.mean(dim=-1), "clip_code": code}

    def encode_class_streams(self, class_names):
        self.class_calls.append(list(class_names))
        rows = []
        for class_name in class_names:
            digest = hashlib.sha1(self.prompt.format(class_name).encode()).digest()
            rows.append(torch.tensor(list(digest[:4]), dtype=torch.float32) / 255.0)
        return {"name_code": torch.stack(rows)}

    def stream_key(self):
        return {"layer": self.layer, "prompt_sha1": hashlib.sha1(self.prompt.encode()).hexdigest()[:12]}


class LabelledEncoder(StreamingEncoder):
    """StreamingEncoder plus one label-aware clip stream, ``label_code`` (B, 4) float32: a hash of the
    clip's class name added to its mean value, given only when ``encode_clips`` gets ``labels``.
    ``label_calls`` records the ``labels`` argument of every call."""

    name = "tiny-labelled"

    def __init__(self, seed: int = 0, **options) -> None:
        super().__init__(seed, **options)
        self.label_calls: list[list[str] | None] = []

    def clip_stream_names(self):
        return ("row_means", "clip_code", "label_code")

    def label_stream_names(self):
        return ("label_code",)

    def encode_clips(self, frames, labels=None):
        self.label_calls.append(None if labels is None else list(labels))
        out = super().encode_clips(frames)
        if labels is not None:
            if len(labels) != frames.shape[0]:
                raise ValueError("one label per clip")
            codes = self.encode_class_streams(list(labels))["name_code"]
            out["label_code"] = codes + frames.reshape(frames.shape[0], -1).mean(1, keepdim=True)
        return out


def write_dataset(root: Path) -> Path:
    """3 classes x 3 clips: frame folders and mp4 files of different lengths (frame-identifying colours)."""
    for c, name in enumerate(["alpha", "beta", "gamma"]):
        for v in range(3):
            length = 6 + 3 * v + c
            if v == 2:
                write_video(root / name / f"clip{v}.mp4", length)
            else:
                write_frame_folder(root / name / f"clip{v}", length, start=5 * c + v)
    return root
