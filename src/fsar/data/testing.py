"""Tiny, frame-identifying videos and frame folders for tests (no data set needed).

Frame ``k`` is painted one flat colour that encodes ``k`` (red = 10·(k mod 25),
green = 10·(k div 25)), coarse enough to survive lossy compression, so a test can read
frames back with :func:`frame_numbers` and assert that seeking returned the right ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9", ".mov": "libx264"}


def frame_colour(k: int) -> tuple[int, int, int]:
    """The RGB colour painted on frame ``k`` (supports k < 625)."""
    if not 0 <= k < 625:
        raise ValueError(f"frame number {k} cannot be encoded (0 <= k < 625)")
    return 10 * (k % 25), 10 * (k // 25), 128


def frame_image(k: int, *, height: int = 24, width: int = 32) -> np.ndarray:
    """(H, W, 3) uint8 image of frame ``k``."""
    return np.broadcast_to(np.array(frame_colour(k), np.uint8), (height, width, 3)).copy()


def frame_numbers(frames: torch.Tensor) -> list[int]:
    """Decode the frame numbers of ``(T, C, H, W)`` uint8 frames painted by :func:`frame_image`."""
    mean = frames.float().mean(dim=(2, 3))  # (T, C)
    red = torch.round(mean[:, 0] / 10).long()
    green = torch.round(mean[:, 1] / 10).long()
    return (green * 25 + red).tolist()


def write_video(
    path: str | Path,
    num_frames: int,
    *,
    height: int = 24,
    width: int = 32,
    fps: int = 25,
    gop: int = 12,
    codec: str | None = None,
) -> Path:
    """Encode ``num_frames`` frame-identifying frames; the codec follows the suffix."""
    import av

    path = Path(path)
    codec = codec or _CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = 4_000_000  # flat colours must survive (mpeg4's default rate blurs them)
        if codec == "libx264":
            stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(k, height=height, width=width), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(
    path: str | Path, num_frames: int, *, height: int = 24, width: int = 32, suffix: str = ".png", start: int = 1
) -> Path:
    """``path/<n>.<suffix>`` images, numbered from ``start`` without zero padding (tests natural sort)."""
    from PIL import Image

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for k in range(num_frames):
        Image.fromarray(frame_image(k, height=height, width=width)).save(path / f"{k + start}{suffix}")
    return path
