"""check_dataset: counts, frame statistics, unreadable files, duplicates, episode feasibility."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fsar.data.check import check_dataset
from fsar.data.manifest import ManifestError
from fsar.data.testing import write_frame_folder, write_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture()
def root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_video(root / "alpha" / "a1.mp4", 10)
    write_video(root / "alpha" / "a2.webm", 14)
    write_video(root / "alpha" / "a3.avi", 6)
    write_frame_folder(root / "beta [b], ü" / "b1", 4)
    (root / "beta [b], ü" / "b1" / "notes.txt").write_text("x")
    shutil.copytree(root / "beta [b], ü" / "b1", root / "beta [b], ü" / "b2")  # duplicate frame folder
    shutil.copy(root / "alpha" / "a1.mp4", root / "beta [b], ü" / "b3.mp4")  # duplicate across classes
    (root / "beta [b], ü" / "bad.mp4").write_bytes(os.urandom(300))
    (root / "gamma").mkdir()
    write_video(root / "gamma" / "g1.mkv", 8)
    return root


def test_report_counts_frames_skips_and_duplicates(root):
    report = check_dataset(root, way=2, shot=1, queries=1)
    assert report.ok
    by_name = {c.name: c for c in report.classes}
    assert [c.name for c in report.classes] == ["alpha", "beta [b], ü", "gamma"]
    assert (by_name["alpha"].videos, by_name["alpha"].frames_min, by_name["alpha"].frames_median, by_name["alpha"].frames_max) == (3, 6, 10, 14)
    assert (by_name["beta [b], ü"].videos, by_name["beta [b], ü"].skipped) == (3, 1)
    assert report.videos == 7
    assert (report.frames_min, report.frames_max) == (4, 14)
    assert [Path(s["path"]).name for s in report.skipped] == ["bad.mp4"]
    assert "bad.mp4" in report.format()
    assert len(report.ignored_files) == 2 and set(report.ignored_files.values()) == {1}
    groups = [sorted(Path(entry.split(": ", 1)[1]).name for entry in group) for group in report.duplicates]
    assert sorted(groups) == [["a1.mp4", "b3.mp4"], ["b1", "b2"]]
    assert report.short_classes == {"gamma": 1}
    assert "'gamma' (1)" in report.message  # short classes named even when the request can be served


def test_request_that_cannot_be_served_names_the_short_classes(root):
    report = check_dataset(root, way=3, shot=2, queries=1, duplicates=False)
    assert not report.ok
    assert report.usable_classes == 2
    assert "needs 3 classes with at least 3 videos" in report.message
    assert "'gamma' (1)" in report.message
    assert report.duplicates == []
    assert report.format().endswith("NOT OK: " + report.message)


def test_truncated_file_found_by_decoding_first_and_last_frames(root):
    data = (root / "alpha" / "a1.mp4").read_bytes()
    (root / "gamma" / "g2.mp4").write_bytes(data[: len(data) * 2 // 3])
    report = check_dataset(root, way=2, shot=1, queries=1, deep=True)
    assert any(Path(s["path"]).name == "g2.mp4" and s["class"] == "gamma" for s in report.skipped)
    assert report.manifest is not None and all(c.path.name != "g2.mp4" for c in report.manifest.clips)


def test_json_report_is_written_whole(root, tmp_path):
    report = check_dataset(root, way=2, shot=1, queries=1)
    out = report.write_json(tmp_path / "reports" / "check.json")
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["videos"] == 7 and data["ok"] is True
    assert data["classes"][1]["name"] == "beta [b], ü"
    assert [p.name for p in out.parent.iterdir()] == ["check.json"]  # no temporary left behind


def test_split_file_check_counts_missing_entries(root, tmp_path):
    split = tmp_path / "test.txt"
    split.write_text("alpha/a1\nalpha/a2\nalpha/zz\ngamma/g1\n", encoding="utf-8")
    report = check_dataset(root, split_file=split, way=2, shot=1, queries=1)
    assert report.split_file == str(split)
    assert {c.name: c.videos for c in report.classes} == {"alpha": 2, "gamma": 1}
    assert any("zz" in s["path"] and "not found" in s["reason"] for s in report.skipped)
    assert not report.ok and "'gamma' (1)" in report.message


def test_missing_root_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="absent"):
        check_dataset(tmp_path / "absent")


def test_ssv2_mini_report():
    mini = SHARED / "data" / "ssv2-mini"
    if not mini.is_dir():
        pytest.skip(f"{mini} is absent (a user's clone has no ../shared)")
    report = check_dataset(mini, way=5, shot=1, queries=1)
    assert report.ok
    assert len(report.classes) == 10 and report.videos == 100
    assert all(c.videos == 10 and c.frames_min == c.frames_max == 8 for c in report.classes)
    assert report.skipped == []
