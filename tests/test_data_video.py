"""Video files and frame folders behind one reader: right frames, cheap seeks, clear errors."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from fsar.data.testing import frame_numbers, write_frame_folder, write_video
from fsar.data.video import FrameFolderReader, VideoFileReader, VideoReadError, open_video

EXTENSIONS = [".mp4", ".avi", ".webm", ".mkv"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {ext: write_video(root / f"clip{ext}", 40, gop=10) for ext in EXTENSIONS}


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_video_file_reads_requested_frames_in_order_with_repeats(videos, ext):
    reader = open_video(videos[ext])
    assert isinstance(reader, VideoFileReader)
    assert reader.num_frames == 40
    wanted = [13, 0, 39, 7, 13, 25]
    frames = reader.read(wanted)
    assert frames.dtype == torch.uint8 and frames.shape == (6, 3, 24, 32)
    assert frame_numbers(frames) == wanted


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_full_read_matches_every_frame(videos, ext):
    frames = open_video(videos[ext]).read(range(40))
    assert frame_numbers(frames) == list(range(40))


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_eight_frames_of_a_300_frame_video_do_not_decode_all(tmp_path, ext):
    path = write_video(tmp_path / f"long{ext}", 300, gop=25)
    reader = open_video(path)
    assert reader.num_frames == 300  # webm: counted from packets (no header count)
    wanted = [18, 56, 93, 131, 168, 206, 243, 281]
    assert frame_numbers(reader.read(wanted)) == wanted
    # Each frame costs at most the GOP before it; a full decode would be 300.
    assert 0 < reader.decoded_frames <= 8 * 25
    assert reader.seeks >= 1


def test_sequential_fallback_when_seeking_is_not_trusted(videos):
    reader = open_video(videos[".mp4"])
    reader.read([0])
    reader._index.usable = False  # as for a stream without timestamps
    reader.decoded_frames = 0
    wanted = [30, 3, 17]
    assert frame_numbers(reader.read(wanted)) == wanted
    assert reader.decoded_frames == 31  # decoded from the start up to the last frame needed


def test_overstated_header_count_is_clamped_within_tolerance_and_an_error_beyond(videos, caplog):
    reader = open_video(videos[".mp4"])
    reader.num_frames = 41  # one frame more than decodes
    with caplog.at_level(logging.WARNING):
        frames = reader.read([39, 40])
    assert frame_numbers(frames) == [39, 39]
    assert reader.num_frames == 40
    assert "clamped" in caplog.text

    reader = open_video(videos[".mp4"])
    reader.num_frames = 60
    with pytest.raises(VideoReadError, match="only 40 of the 60 frames"):
        reader.read([59])


def test_out_of_range_and_empty_requests_are_errors(videos):
    reader = open_video(videos[".mkv"])
    with pytest.raises(IndexError, match="clip.mkv"):
        reader.read([40])
    with pytest.raises(IndexError):
        reader.read([-1])
    with pytest.raises(ValueError, match="no frame indices"):
        reader.read([])


def test_corrupt_video_file_names_the_file(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(os.urandom(4000))
    with pytest.raises(VideoReadError, match="broken.mp4") as info:
        open_video(path)
    assert info.value.path == path
    assert isinstance(info.value, ValueError)


def test_empty_video_file_is_an_error(tmp_path):
    path = tmp_path / "empty.webm"
    path.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.webm"):
        open_video(path)


def test_truncated_mp4_is_an_error(videos, tmp_path):
    data = videos[".mp4"].read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="truncated.mp4"):
        reader = open_video(path)
        reader.read(range(reader.num_frames))


def test_truncated_webm_reads_only_what_it_holds(videos, tmp_path):
    """No header count: the packets present are the frames; every one decodes to the right frame."""
    data = videos[".webm"].read_bytes()
    path = tmp_path / "truncated.webm"
    path.write_bytes(data[: len(data) // 2])
    reader = open_video(path)
    assert 0 < reader.num_frames < 40
    n = reader.num_frames
    assert frame_numbers(reader.read(range(n))) == list(range(n))


def test_missing_path_and_unsupported_type(tmp_path):
    with pytest.raises(VideoReadError, match="no such file"):
        open_video(tmp_path / "nothing.mp4")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(VideoReadError, match="unsupported file type '.txt'"):
        open_video(notes)


def test_odd_characters_in_path(videos, tmp_path):
    folder = tmp_path / "Pushing [something], left→right (ünï)"
    folder.mkdir()
    path = shutil.copy(videos[".mp4"], folder / "clip, [1] é.mp4")
    assert frame_numbers(open_video(path).read([5])) == [5]


# ---------------------------------------------------------------------------- frame folders


def test_frame_folder_natural_sort_and_exact_frames(tmp_path):
    folder = write_frame_folder(tmp_path / "vid", 12)  # 1.png .. 12.png: lexical order would put 10 after 1
    reader = open_video(folder)
    assert isinstance(reader, FrameFolderReader)
    assert reader.num_frames == 12
    assert [p.name for p in reader.frame_paths[:3]] == ["1.png", "2.png", "3.png"]
    frames = reader.read([9, 1, 11, 1])
    assert frames.shape == (4, 3, 24, 32) and frames.dtype == torch.uint8
    assert frame_numbers(frames) == [9, 1, 11, 1]
    assert reader.decoded_frames == 3  # the repeated frame is loaded once


def test_frame_folder_ignores_and_counts_non_images(tmp_path):
    folder = write_frame_folder(tmp_path / "vid", 5, suffix=".jpg")
    (folder / "notes.txt").write_text("x")
    (folder / "Thumbs.db").write_bytes(b"\0")
    reader = open_video(folder)
    assert reader.num_frames == 5
    assert reader.ignored_files == 2
    assert frame_numbers(reader.read([4])) == [4]


def test_empty_frame_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="empty.*no .jpg"):
        open_video(tmp_path / "empty")


def test_frame_folder_with_only_non_images_is_an_error(tmp_path):
    folder = tmp_path / "vid"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    with pytest.raises(VideoReadError, match="1 non-image file"):
        open_video(folder)


def test_corrupt_frame_image_names_the_image(tmp_path):
    folder = write_frame_folder(tmp_path / "vid", 3)
    (folder / "2.png").write_bytes(b"not a png")
    reader = open_video(folder)
    assert frame_numbers(reader.read([0])) == [0]
    with pytest.raises(VideoReadError, match="2.png"):
        reader.read([1])


def test_frames_of_different_sizes_are_an_error(tmp_path):
    folder = write_frame_folder(tmp_path / "vid", 2)
    write_frame_folder(folder, 1, height=10, width=10, start=3)
    with pytest.raises(VideoReadError, match="different sizes"):
        open_video(folder).read([0, 2])
