"""Manifests from folder layouts and split files: resolution, skips, odd names, the standard splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsar.data.manifest import Clip, Manifest, ManifestError, parse_split_file
from fsar.data.testing import write_frame_folder, write_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ODD = "Pushing [something], left→right (ünï)"


@pytest.fixture()
def folder_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_video(root / "walking" / "w1.mp4", 6)
    write_video(root / "walking" / "w10.webm", 6)
    write_video(root / "walking" / "w2.avi", 6)
    write_frame_folder(root / ODD / "clip, [1]", 4)
    write_frame_folder(root / ODD / "clip 2", 4)
    (root / "walking" / "labels.csv").write_text("x")  # not a clip
    (root / "walking" / "broken.mkv").write_bytes(os.urandom(500))  # unreadable
    (root / "empty class").mkdir()
    (root / "synth.json").write_text("{}")  # metadata beside the classes: ignored
    write_video(root / "stray.mp4", 3)  # misplaced video: skipped
    return root


def test_from_folder_classes_clips_and_skips(folder_root):
    manifest = Manifest.from_folder(folder_root)
    assert manifest.classes == ["empty class", ODD, "walking"]  # natural, case-insensitive order
    assert manifest.counts() == {ODD: 2, "empty class": 0, "walking": 3}
    walking = manifest.clips_of("walking")
    assert [c.path.name for c in walking] == ["w1.mp4", "w2.avi", "w10.webm"]  # natural sort
    assert all(c.label == 2 and c.class_name == "walking" for c in walking)
    odd = manifest.clips_of(ODD)
    assert {c.path.name for c in odd} == {"clip, [1]", "clip 2"}
    reasons = {s.path.name: (s.reason, s.class_name) for s in manifest.skipped}
    assert set(reasons) == {"labels.csv", "broken.mkv", "stray.mp4"}
    assert "not a video file" in reasons["labels.csv"][0]
    assert "cannot open video" in reasons["broken.mkv"][0] and reasons["broken.mkv"][1] == "walking"
    assert "directly under the data root" in reasons["stray.mp4"][0]


def test_from_folder_without_validation_keeps_unreadable_files(folder_root):
    manifest = Manifest.from_folder(folder_root, validate=False)
    assert manifest.counts()["walking"] == 4


def test_subset_relabels_in_the_given_order(folder_root):
    manifest = Manifest.from_folder(folder_root)
    sub = manifest.subset(["walking", ODD])
    assert sub.classes == ["walking", ODD]
    assert {c.label for c in sub.clips_of("walking")} == {0}
    assert {c.label for c in sub.clips_of(ODD)} == {1}
    assert len(sub) == 5
    assert all(s.class_name in {"walking", ODD} for s in sub.skipped)
    with pytest.raises(ValueError, match="'running'"):
        manifest.subset(["running"])
    with pytest.raises(ValueError, match="'running'"):
        manifest.clips_of("running")


def test_bad_roots(tmp_path):
    with pytest.raises(ManifestError, match="not a directory"):
        Manifest.from_folder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    write_video(tmp_path / "flat" / "a.mp4", 3)
    with pytest.raises(ManifestError, match="no class folders"):
        Manifest.from_folder(tmp_path / "flat")


def test_inconsistent_manifest_is_rejected(tmp_path):
    with pytest.raises(ManifestError, match="does not name class"):
        Manifest(tmp_path, ["a", "b"], [Clip(tmp_path / "x", 0, "b")])


# ------------------------------------------------------------------------------ split files


@pytest.fixture()
def split_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_frame_folder(root / "jumping" / "v1", 3)  # 1. root/label/id/
    write_video(root / "jumping" / "v2.mp4", 3)  # 2. root/label/id.ext
    write_frame_folder(root / "v3", 3)  # 3. root/id/
    write_video(root / "v4.webm", 3)  # 4. root/id.ext
    write_video(root / ODD / "v5.avi", 3)
    return root


def write_split(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_split_entries_resolve_in_all_four_layouts(split_root, tmp_path):
    split = write_split(
        tmp_path / "test.txt",
        ["jumping/v1", "jumping/v2", "jumping/v3", "jumping/v4", f"{ODD}/v5", "jumping/v404", "jumping/v1", ""],
    )
    manifest = Manifest.from_split_file(split_root, split)
    assert manifest.classes == ["jumping", ODD]
    paths = {c.path.relative_to(split_root).as_posix() for c in manifest.clips_of("jumping")}
    assert paths == {"jumping/v1", "jumping/v2.mp4", "v3", "v4.webm"}
    assert [c.path.name for c in manifest.clips_of(ODD)] == ["v5.avi"]
    reasons = [s.reason for s in manifest.skipped]
    assert len(reasons) == 2
    assert any("not found" in r and "v404" in r and "test.txt:6" in r for r in reasons)
    assert any("duplicate entry" in r and "test.txt:7" in r for r in reasons)


def test_malformed_split_line_names_file_and_line(tmp_path, split_root):
    split = write_split(tmp_path / "bad.txt", ["jumping/v1", "no-slash-here"])
    with pytest.raises(ManifestError, match=r"bad\.txt:2"):
        Manifest.from_split_file(split_root, split)
    with pytest.raises(ManifestError, match="no entries"):
        parse_split_file(write_split(tmp_path / "empty.txt", [""]))


def test_anonymised_labels_index_the_classnames_file_from_zero(tmp_path):
    root = tmp_path / "data"
    write_video(root / "Closing something" / "11.mp4", 3)  # SSv2 folder spelling: no brackets
    write_video(root / "Opening [something]" / "12.mp4", 3)
    splits = tmp_path / "splits"
    splits.mkdir()
    write_split(splits / "classnames_train.txt", ["Closing [something]", "Opening [something]"])
    split = write_split(splits / "train.txt", ["train0/11", "train1/12"])
    for classnames in (None, splits / "classnames_train.txt"):  # found beside the split, or given
        manifest = Manifest.from_split_file(root, split, classnames_file=classnames)
        assert manifest.classes == ["Closing [something]", "Opening [something]"]
        assert manifest.counts() == {"Closing [something]": 1, "Opening [something]": 1}
        assert manifest.clips_of("Closing [something]")[0].path == root / "Closing something" / "11.mp4"
    bad = write_split(splits / "other.txt", ["train2/11"])
    with pytest.raises(ManifestError, match="indexes class 2.*has 2"):
        Manifest.from_split_file(root, bad, classnames_file=splits / "classnames_train.txt")


def test_labels_without_classnames_file_stay_as_written(tmp_path):
    root = tmp_path / "data"
    write_video(root / "val2" / "7.mp4", 3)
    split = write_split(tmp_path / "val.txt", ["val2/7", "val10/8"])
    manifest = Manifest.from_split_file(root, split)
    assert manifest.classes == ["val2", "val10"]  # natural order
    assert manifest.counts() == {"val2": 1, "val10": 0}


# --------------------------------------------------------------------- the standard splits

EXPECTED_CLASSES = {
    ("kinetics_CMN", "train"): 64, ("kinetics_CMN", "val"): 12, ("kinetics_CMN", "test"): 24,
    ("ssv2_CMN", "train"): 64, ("ssv2_CMN", "val"): 12, ("ssv2_CMN", "test"): 24,
    ("ssv2_OTAM", "train"): 64, ("ssv2_OTAM", "val"): 12, ("ssv2_OTAM", "test"): 24,
    ("ucf_ARN", "train"): 70, ("ucf_ARN", "val"): 10, ("ucf_ARN", "test"): 21,
    ("hmdb_ARN", "train"): 31, ("hmdb_ARN", "val"): 10, ("hmdb_ARN", "test"): 10,
}


def shared_or_skip() -> Path:
    if not (SHARED / "splits").is_dir():
        pytest.skip(f"{SHARED} is absent (a user's clone has no ../shared)")
    return SHARED


@pytest.mark.parametrize(("split", "part"), sorted(EXPECTED_CLASSES))
def test_standard_split_files_parse_with_the_known_class_counts(split, part, tmp_path):
    from fsar.data.splits import get_benchmark

    directory = get_benchmark(split).directory  # the copies shipped in the package (the folder name is an alias)
    path = directory / f"{part}.txt"
    manifest = Manifest.from_split_file(tmp_path, path, validate=False)  # empty root: every entry missing
    assert len(manifest.classes) == EXPECTED_CLASSES[split, part]
    lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    assert len(manifest.clips) == 0 and len(manifest.skipped) == lines
    if split == "ssv2_OTAM":
        # train/test resolve through classnames_<part>.txt; val has no classnames file and stays anonymised.
        if part == "val":
            assert all(name.startswith("val") for name in manifest.classes)
        else:
            assert manifest.classes[0] == (directory / f"classnames_{part}.txt").read_text().splitlines()[0]
            assert any("[something]" in name for name in manifest.classes)


def test_ssv2_otam_train_split_resolves_the_ssv2_mini_frames():
    """OTAM's train0..train9 are the ssv2-mini classes: checks 0-based indexing against real data."""
    shared = shared_or_skip()
    mini = shared / "data" / "ssv2-mini"
    if not mini.is_dir():
        pytest.skip(f"{mini} is absent")
    manifest = Manifest.from_split_file(mini, shared / "splits" / "ssv2_OTAM" / "train.txt", validate=False)
    assert len(manifest.clips) == 100
    counts = {name: n for name, n in manifest.counts().items() if n}
    assert len(counts) == 10 and set(counts.values()) == {10}
    assert "Bending [something] until it breaks" in counts
    for clip in manifest.clips:  # each clip sits in the folder of its (bracket-free) class name
        assert clip.path.parent.name == clip.class_name.replace("[", "").replace("]", "")
