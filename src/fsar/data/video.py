"""One reader over two kinds of video source: encoded video files and frame folders.

``open_video(path)`` returns a :class:`VideoReader` whose ``read(indices)`` gives the
requested frames as a ``(T, C, H, W)`` uint8 RGB tensor, in the order asked for
(repeats allowed, which TSN sampling of short clips needs).

Video files (mp4, avi, webm, mkv, mov) are decoded with PyAV. Decoding a whole clip
to keep 8 of its frames is the main cost of few-shot episode loading, so the reader
*seeks*: it demuxes the packets once (cheap: no decoding) to learn every frame's
presentation timestamp and where the keyframes are, then for each needed frame jumps
to the keyframe before it, unless that keyframe is not ahead of the current decoder
position (then decoding on is no more work). So it never decodes more frames than a
sequential decode up to the last needed frame would. When seeking misbehaves (a timestamp that isn't in the index, an overshoot,
a decoder error) the reader falls back to one sequential decode from the start, which
numbers frames by their decode-output order. ``VideoReader.decoded_frames`` counts the
frames decoded so far, so tests (and curious users) can see what a read costs.

Frame folders (``video_id/*.jpg|*.jpeg|*.png``) are sorted naturally (``2.jpg`` before
``10.jpg``). Other files in the folder are ignored and counted (``ignored_files``); a
folder without any image is an error. Frame images of every usual layout read with their
real values (:func:`image_to_rgb8`): 8-bit gray, palette, RGB and RGBA (alpha dropped), and
16-bit gray and RGB PNGs (rescaled to 8 bit, never clipped); float or signed images are
refused with the file and the mode named.

Every failure is a :class:`VideoReadError` naming the path and the reason.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fsar.errors import DataError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
"""File suffixes treated as encoded video (lower case)."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
"""Frame-folder image suffixes (lower case)."""

# A header frame count may overstate what actually decodes (edit lists, a lost final
# packet). Up to this fraction of missing tail frames is tolerated: the tail indices
# are clamped to the last decodable frame with a warning. More than that means a
# truncated or broken file, which is an error.
_TAIL_TOLERANCE = 0.05


class VideoReadError(DataError):
    """A video file or frame folder could not be read. ``path`` and ``reason`` are kept."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def unreachable_reason(path: str | Path) -> str:
    """Why ``path`` cannot be opened although a directory listing may show it: a symbolic link
    loop, a dangling symbolic link (naming its target), no permission, or simply absent."""
    path = Path(path)
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop (the link resolves to itself through a cycle of links)"
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symbolic link (points to {target!r}, which does not exist)"
        if error.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied ({error.strerror})"
        if error.errno == errno.ENAMETOOLONG:
            return "file name too long"
        return "no such file or frame folder"
    return "no such file or frame folder"


def natural_key(text: str) -> list[object]:
    """Sort key putting ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


class VideoReader(ABC):
    """Random access to the frames of one video. ``num_frames`` frames, indexed from 0."""

    path: Path
    num_frames: int
    decoded_frames: int
    """Frames decoded (file) or image files loaded (folder) by this reader so far."""

    @abstractmethod
    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``(T, C, H, W)`` RGB.

        Raises :class:`VideoReadError` when the source cannot be decoded and ``IndexError``
        for indices outside ``0..num_frames-1`` (a caller's mistake, not bad data).
        """

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        wanted = [int(i) for i in indices]
        if not wanted:
            raise ValueError(f"{self.path}: no frame indices requested")
        bad = [i for i in wanted if i < 0 or i >= self.num_frames]
        if bad:
            raise IndexError(
                f"{self.path}: frame indices {bad[:5]} out of range for a video of {self.num_frames} frames"
            )
        return wanted

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, num_frames={self.num_frames})"


def open_video(path: str | Path) -> VideoReader:
    """A reader for a video file or a frame folder; raises :class:`VideoReadError`."""
    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path)
    if not path.exists():
        raise VideoReadError(path, unreachable_reason(path))
    if not is_video_file(path):
        raise VideoReadError(
            path, f"unsupported file type {path.suffix!r} (expected one of {', '.join(VIDEO_EXTENSIONS)} or a frame folder)"
        )
    return VideoFileReader(path)


# --------------------------------------------------------------------------------------
# Frame folders


class FrameFolderReader(VideoReader):
    """``video_id/`` holding one image per frame, naturally sorted."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            entries = [p for p in self.path.iterdir() if p.is_file()]
        except OSError as error:
            raise VideoReadError(self.path, f"cannot list frame folder ({error})") from error
        self.frame_paths: list[Path] = sorted((p for p in entries if is_image_file(p)), key=lambda p: natural_key(p.name))
        self.ignored_files = len(entries) - len(self.frame_paths)
        """Non-image files found in the folder and ignored."""
        if not self.frame_paths:
            what = f"{len(entries)} non-image file(s) and no" if entries else "no"
            raise VideoReadError(self.path, f"frame folder has {what} {'/'.join(IMAGE_EXTENSIONS)} images")
        if self.ignored_files:
            # Counted, not warned about on every open: `fsar data check` reports the counts.
            log.debug("%s: ignored %d non-image file(s) in frame folder", self.path, self.ignored_files)
        self.num_frames = len(self.frame_paths)
        self.decoded_frames = 0

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        wanted = self._check_indices(indices)
        loaded: dict[int, np.ndarray] = {}
        for index in dict.fromkeys(wanted):
            frame_path = self.frame_paths[index]
            try:
                with Image.open(frame_path) as image:
                    loaded[index] = image_to_rgb8(image, frame_path)
            except VideoReadError as error:
                raise VideoReadError(self.path, f"frame {frame_path.name}: {error.reason}") from error
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
                raise VideoReadError(
                    self.path, f"frame {frame_path.name}: cannot decode frame image ({error})"
                ) from error
            self.decoded_frames += 1
        sizes = {array.shape for array in loaded.values()}
        if len(sizes) > 1:
            raise VideoReadError(self.path, f"frames have different sizes {sorted(sizes)}")
        return _stack([loaded[i] for i in wanted])


#: Pillow modes whose samples are 8 bit and whose ``convert("RGB")`` keeps the real values:
#: gray (L, 1-bit), palette (P, PA: looked up), and colour with alpha (RGBA, LA, RGBa: the alpha
#: is dropped, the stored colour kept; transparency means nothing to a video frame).
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def image_to_rgb8(image, path: str | Path) -> np.ndarray:
    """One frame image as an ``(H, W, 3)`` uint8 RGB array holding its real values.

    8-bit images of any layout (gray, palette, RGB, RGBA: alpha dropped) convert exactly.
    16-bit gray (PNG ``I;16``, or ``I`` holding 0..65535) is rescaled to 0..255
    (``round(v * 255 / 65535)``), not clipped: a plain ``convert("RGB")`` would saturate every
    value above 255. 16-bit RGB(A) PNGs arrive from Pillow already reduced to their high byte.
    Anything else (32-bit float, signed or out-of-range integer images) is refused with a
    :class:`VideoReadError` naming the file and the mode.
    """
    mode = image.mode
    if mode in _EIGHT_BIT_MODES:
        return np.asarray(image.convert("RGB"))
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise VideoReadError(
                path, f"{mode} image with values {values.min()}..{values.max()} outside 0..65535 (not a 16-bit frame)"
            )
        gray = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise VideoReadError(
        path, f"unsupported image mode {mode!r} (frames must be 8- or 16-bit gray, palette, RGB or RGBA)"
    )


# --------------------------------------------------------------------------------------
# Video files


class VideoFileReader(VideoReader):
    """An encoded video file decoded with PyAV, seeking to the frames needed."""

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = Path(path)
        self.decoded_frames = 0
        self.seeks = 0
        """Container seeks done by this reader (0 when it decoded sequentially)."""
        self._index: _PacketIndex | None = None
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoReadError(self.path, "file has no video stream")
                stream = container.streams.video[0]
                frames = int(stream.frames or 0)
                if frames <= 0:
                    # webm/mkv headers carry no frame count: count packets (demux only, no decode).
                    self._index = _PacketIndex.build(container, stream)
                    frames = self._index.num_frames
        except VideoReadError:
            raise
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise VideoReadError(self.path, f"cannot open video ({error})") from error
        if frames <= 0:
            raise VideoReadError(self.path, "video stream has no frames")
        self.num_frames = frames

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        import av

        wanted = self._check_indices(indices)
        needed = sorted(set(wanted))
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                frames = None
                if self._index is None:
                    self._index = _PacketIndex.build(container, stream)
                if self._index.usable:
                    frames = self._read_seeking(container, stream, needed)
                if frames is None:
                    container.seek(0)
                    frames = self._read_sequential(container, stream, needed)
        except VideoReadError:
            raise
        except (av.FFmpegError, OSError) as error:
            raise VideoReadError(self.path, f"cannot decode video ({error})") from error
        return _stack([frames[i] for i in wanted])

    # ----------------------------------------------------------------------------------

    def _read_seeking(self, container, stream, needed: list[int]) -> dict[int, np.ndarray] | None:
        """Seek to the keyframe before each needed frame; None when seeking misbehaves."""
        import av

        index = self._index
        assert index is not None
        if needed[-1] >= index.num_frames:
            return None  # header promises more frames than the packets hold: sequential path decides
        needed_set = set(needed)
        got: dict[int, np.ndarray] = {}
        position = -1  # index of the last frame decoded from the current decoder state
        decoder = None
        try:
            for target in needed:
                if target in got:
                    continue
                keyframe = index.keyframe_before(target)
                if decoder is None or keyframe > position or target <= position:
                    container.seek(index.pts[keyframe], stream=stream, backward=True, any_frame=False)
                    self.seeks += 1
                    decoder = container.decode(stream)
                    position = -1
                while position < target:
                    frame = next(decoder, None)
                    if frame is None:
                        return None
                    self.decoded_frames += 1
                    frame_index = index.frame_of_pts(frame.pts)
                    if frame_index is None or (position == -1 and frame_index > target):
                        return None  # unknown timestamp or the seek overshot: don't trust it
                    position = frame_index
                    if frame_index in needed_set and frame_index not in got:
                        got[frame_index] = frame.to_ndarray(format="rgb24")
                if target not in got:
                    return None
        except av.FFmpegError as error:
            log.debug("%s: seeking decode failed (%s); decoding sequentially", self.path, error)
            return None
        return got

    def _read_sequential(self, container, stream, needed: list[int]) -> dict[int, np.ndarray]:
        """Decode from the start, numbering frames by output order (robust, slower)."""
        got: dict[int, np.ndarray] = {}
        wanted = set(needed)
        last = needed[-1]
        count = 0
        last_frame = None
        for frame in container.decode(stream):
            self.decoded_frames += 1
            if count in wanted:
                got[count] = frame.to_ndarray(format="rgb24")
            last_frame = frame
            count += 1
            if count > last:
                break
        missing = [i for i in needed if i not in got]
        if missing:
            if count == 0 or last_frame is None:
                raise VideoReadError(self.path, "no frame could be decoded")
            shortfall = self.num_frames - count
            if shortfall > max(1, int(_TAIL_TOLERANCE * self.num_frames)):
                raise VideoReadError(
                    self.path,
                    f"only {count} of the {self.num_frames} frames the header announces could be decoded "
                    "(truncated or corrupt file?)",
                )
            log.warning(
                "%s: header announces %d frames but %d decode; frame(s) %s clamped to the last one",
                self.path, self.num_frames, count, missing,
            )
            self.num_frames = count
            tail = last_frame.to_ndarray(format="rgb24")
            for i in missing:
                got[i] = tail
        return got


class _PacketIndex:
    """Presentation timestamps and keyframe positions of a video stream, from demuxing only."""

    def __init__(self, pts: list[int], keyframes: list[int], *, num_frames: int | None = None) -> None:
        self.pts = pts
        self.keyframes = keyframes
        self.num_frames = len(pts) if num_frames is None else num_frames
        self._frame_of = {p: i for i, p in enumerate(pts)}
        # Seeking relies on one unique timestamp per frame and a keyframe at the very start.
        self.usable = (
            bool(pts)
            and len(pts) == self.num_frames
            and len(self._frame_of) == len(pts)
            and bool(keyframes)
            and keyframes[0] == 0
        )

    @classmethod
    def build(cls, container, stream) -> "_PacketIndex":
        packets = []
        missing_pts = False
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            if packet.pts is None:
                missing_pts = True
            packets.append((packet.pts, bool(packet.is_keyframe)))
        container.seek(0)
        if missing_pts:
            # Without timestamps frames can only be numbered by decode order: count only.
            return cls([], [], num_frames=len(packets))
        packets.sort(key=lambda item: item[0])
        pts = [p for p, _ in packets]
        keyframes = [i for i, (_, key) in enumerate(packets) if key]
        return cls(pts, keyframes)

    def keyframe_before(self, frame_index: int) -> int:
        position = bisect.bisect_right(self.keyframes, frame_index) - 1
        return self.keyframes[max(position, 0)]

    def frame_of_pts(self, pts: int | None) -> int | None:
        if pts is None:
            return None
        return self._frame_of.get(pts)


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> (T, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
