"""Which frames of a clip a model sees: TSN segment sampling and uniform sampling.

TSN (Wang et al., used by OTAM, TRX, CLIP-FSAR, MA-FSAR): split the clip into
``num_segments`` equal segments and take one frame from each: a random frame of the
segment in training, the segment's centre frame at evaluation. "uniform" takes evenly
spaced frames from the first to the last, the same in training and evaluation.

Short clips: when a clip has fewer frames than ``num_segments`` the indices *repeat*
(each frame is used for ``num_segments / num_frames`` consecutive positions, in order),
so a 5-frame clip sampled at T=8 gives ``[0, 0, 1, 2, 2, 3, 4, 4]`` at evaluation. The model always
receives T frames; nothing crashes and no frame is invented.
"""

from __future__ import annotations

import math

import torch

SAMPLING_MODES: tuple[str, ...] = ("tsn", "uniform")


def sample_indices(
    num_frames: int,
    num_segments: int,
    *,
    mode: str = "tsn",
    train: bool,
    generator: torch.Generator | None = None,
) -> list[int]:
    """``num_segments`` frame indices in ``0..num_frames-1``, non-decreasing.

    ``generator`` drives the training randomness (TSN only); evaluation is deterministic.
    """
    if num_frames < 1:
        raise ValueError(f"cannot sample from a clip of {num_frames} frames")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if mode == "tsn":
        return _tsn(num_frames, num_segments, train=train, generator=generator)
    if mode == "uniform":
        return _uniform(num_frames, num_segments)
    raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")


def _tsn(num_frames: int, num_segments: int, *, train: bool, generator: torch.Generator | None) -> list[int]:
    segment = num_frames / num_segments  # frames per segment (float; < 1 for short clips)
    if not train:
        # Centre of segment i: floor((i + 1/2) * segment). For short clips this repeats frames in order.
        return [min(num_frames - 1, math.floor((i + 0.5) * segment)) for i in range(num_segments)]
    indices = []
    for i in range(num_segments):
        start = math.floor(i * segment)
        end = max(start + 1, math.floor((i + 1) * segment))  # segment covers [start, end)
        offset = int(torch.randint(end - start, (1,), generator=generator)) if end - start > 1 else 0
        indices.append(min(num_frames - 1, start + offset))
    return indices


def _uniform(num_frames: int, num_segments: int) -> list[int]:
    if num_segments == 1:
        return [(num_frames - 1) // 2]
    step = (num_frames - 1) / (num_segments - 1)
    return [math.floor(i * step + 0.5) for i in range(num_segments)]
