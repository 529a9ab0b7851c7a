"""The standard splits ship in the package, are addressed by name, and say where they come from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fsar.cli import main
from fsar.data.manifest import Manifest
from fsar.data.splits import (
    SplitError,
    get_benchmark,
    list_benchmarks,
    resolve_split,
    resolve_training_splits,
    split_directory,
    summarise_split_dir,
)

#: Class counts per part as the papers state them (CMN, OTAM: 64/12/24; ARN: 70/10/21, 31/10/10).
PAPER_CLASS_COUNTS = {
    "kinetics-100": (64, 12, 24),
    "ssv2-small": (64, 12, 24),
    "ssv2-full": (64, 12, 24),
    "ucf101": (70, 10, 21),
    "hmdb51": (31, 10, 10),
}

SHARED_SPLITS = Path(__file__).resolve().parents[1].parent / "shared" / "splits"


def test_the_five_benchmarks_ship_with_the_papers_class_counts():
    benchmarks = {b.name: b for b in list_benchmarks()}
    assert sorted(benchmarks) == sorted(PAPER_CLASS_COUNTS)
    for name, counts in PAPER_CLASS_COUNTS.items():
        parts = benchmarks[name].parts
        assert (parts["train"].classes, parts["val"].classes, parts["test"].classes) == counts, name


@pytest.mark.parametrize("name", sorted(PAPER_CLASS_COUNTS))
def test_provenance_matches_the_files_it_describes(name):
    """Counts and checksums are recomputed from the shipped files: an edited split fails here."""
    benchmark = get_benchmark(name)
    recomputed = summarise_split_dir(benchmark.directory)
    assert set(recomputed) == set(benchmark.parts)
    for part, info in benchmark.parts.items():
        assert recomputed[part] == {
            "file": info.file, "classes": info.classes, "clips": info.clips, "sha256": info.sha256,
            "classnames_file": info.classnames_file,
        }
    record = json.loads((benchmark.directory / "provenance.json").read_text())
    assert record["source"] and record["copied_from"]


def test_ssv2_small_and_kinetics_have_100_clips_per_class():
    for name in ("ssv2-small", "kinetics-100"):
        benchmark = get_benchmark(name)
        for part in ("train", "val", "test"):
            assert benchmark.parts[part].clips == 100 * benchmark.parts[part].classes


@pytest.mark.skipif(not SHARED_SPLITS.is_dir(), reason="../shared/splits absent (a user's clone)")
def test_shipped_files_are_byte_copies_of_the_shared_splits():
    originals = {"kinetics-100": "kinetics_CMN", "ssv2-small": "ssv2_CMN", "ssv2-full": "ssv2_OTAM",
                 "ucf101": "ucf_ARN", "hmdb51": "hmdb_ARN"}
    for name, folder in originals.items():
        shipped = get_benchmark(name).directory
        for original in sorted((SHARED_SPLITS / folder).glob("*.txt")):
            copy = shipped / original.name
            assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()


def test_names_parts_and_aliases_resolve_to_the_package_files():
    ref = resolve_split("ssv2-small")
    assert ref.part == "test" and ref.path == split_directory() / "ssv2-small" / "test.txt"
    assert resolve_split("ssv2-small:val").path.name == "val.txt"
    assert resolve_split("ssv2_CMN:train").benchmark.name == "ssv2-small"  # the TRX-family folder name
    assert resolve_split("SSV2-Small").benchmark.name == "ssv2-small"
    full = resolve_split("ssv2-full")
    assert full.classnames_file is not None and full.classnames_file.name == "classnames_test.txt"
    assert resolve_split("ssv2-full:val").classnames_file is None  # OTAM ships no classnames_val.txt
    provenance = ref.provenance()
    assert provenance["benchmark"] == "ssv2-small" and provenance["clips"] == 2400 and len(provenance["sha256"]) == 64
    assert ref.label == "ssv2-small:test"


def test_a_path_still_works(tmp_path):
    split = tmp_path / "mine.txt"
    split.write_text("a/1\nb/2\n")
    ref = resolve_split(str(split))
    assert ref.path == split and ref.benchmark is None and ref.provenance()["sha256"]
    (tmp_path / "train.txt").write_text("a/1\n")
    pair = resolve_training_splits(str(tmp_path))
    assert pair.train.path == tmp_path / "train.txt" and pair.val is None


def test_bad_names_and_paths_are_clear_errors(tmp_path):
    with pytest.raises(SplitError, match="unknown split 'ssv3'.*ssv2-small"):
        resolve_split("ssv3")
    with pytest.raises(SplitError, match="unknown part 'dev'"):
        resolve_split("ssv2-small:dev")
    with pytest.raises(SplitError, match="split file not found"):
        resolve_split(str(tmp_path / "nope.txt"))
    with pytest.raises(SplitError, match="--splits takes a folder"):
        resolve_split(str(tmp_path))
    with pytest.raises(SplitError, match="no train.txt"):
        resolve_training_splits(str(tmp_path))
    with pytest.raises(SplitError, match="unknown split"):
        resolve_training_splits("kinetics-200")


def test_training_splits_are_train_and_val_never_test():
    pair = resolve_training_splits("hmdb51")
    assert (pair.train.part, pair.val.part) == ("train", "val")
    assert pair.train.path.name == "train.txt" and pair.val.path.name == "val.txt"


def test_ssv2_full_labels_resolve_through_the_shipped_class_names(tmp_path):
    ref = resolve_split("ssv2-full:train")
    manifest = Manifest.from_split_file(tmp_path, ref.path, classnames_file=ref.classnames_file, validate=False)
    assert manifest.classes[0] == "Bending [something] until it breaks"
    assert len(manifest.classes) == 64 and len(manifest.skipped) == 67013  # nothing under an empty root


def test_cli_lists_the_five_benchmarks_with_counts(capsys):
    assert main(["data", "splits"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_CLASS_COUNTS:
        assert name in out
    assert "64 / 6400" in out and "10 / 1292" in out
    assert main(["data", "splits", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {b["benchmark"] for b in listed} == set(PAPER_CLASS_COUNTS)


def test_data_check_takes_a_split_name(tmp_path, capsys):
    (tmp_path / "brush_hair").mkdir()
    code = main(["data", "check", str(tmp_path), "--split", "hmdb51", "--no-progress", "--no-duplicates"])
    out = capsys.readouterr()
    assert code == 1  # nothing of the test split is there
    assert "hmdb51" in out.out or "test.txt" in out.out
    assert main(["data", "check", str(tmp_path), "--split", "hmdb52"]) == 2
    assert "unknown split" in capsys.readouterr().err


def test_train_and_eval_configs_take_split_names(tmp_path):
    from fsar.engine.config import EvalConfig, TrainConfig
    from fsar.engine.run import eval_split, training_manifests

    assert eval_split(EvalConfig(data=str(tmp_path), split_file="ssv2-full")).classnames_file.name == "classnames_test.txt"
    assert eval_split(EvalConfig(data=str(tmp_path))) is None
    train, val = training_manifests(TrainConfig(data=str(tmp_path), split_file_dir="ucf101", progress=False))
    assert len(train.classes) == 70 and len(val.classes) == 10 and not train.clips  # nothing under an empty root
