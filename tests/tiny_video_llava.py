"""A tiny random Video-LLaVA of the real transformers classes, saved once per test session.

``tiny_folder(tmp_path_factory)`` writes it with ``save_pretrained`` (model + offline BPE tokenizer) and
returns the folder, which loads through ``weights=FOLDER`` exactly as a downloaded checkpoint does;
``tiny_encoder(folder)`` loads it (one load per session).
"""

from __future__ import annotations

from pathlib import Path

import torch

_FOLDERS: dict[str, Path] = {}
_ENCODERS: dict[tuple, object] = {}

#: frames, image side and tokens per frame of the tiny model: (28 / 14)^2 + 1 = 5
FRAMES, IMAGE_SIZE, TOKENS_PER_FRAME = 8, 28, 5


def tiny_folder(tmp_path_factory, name: str = "tiny-video-llava", **sizes) -> Path:
    from fsar.encoders.video_llava import save_tiny_video_llava

    key = name + repr(sorted(sizes.items()))
    if key not in _FOLDERS:
        _FOLDERS[key] = save_tiny_video_llava(tmp_path_factory.mktemp("mllm") / name, **sizes)
    return _FOLDERS[key]


def tiny_encoder(folder: Path, **options):
    from fsar.encoders import create_encoder

    key = (str(folder), tuple(sorted(options.items())))
    if key not in _ENCODERS:
        _ENCODERS[key] = create_encoder("video-llava", weights=str(folder), **options)
    return _ENCODERS[key]


def clips(batch: int, seed: int = 0, frames: int = FRAMES) -> torch.Tensor:
    return torch.randn(batch, frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
