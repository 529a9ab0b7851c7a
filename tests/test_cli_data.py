"""`fsar data check` / `fsar data synth` from the command line: output, exit codes, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsar.cli import main
from fsar.data.testing import write_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture()
def root(tmp_path) -> Path:
    root = tmp_path / "data"
    for c, n in (("open [door]", 3), ("close, door", 2), ("wave", 1)):
        for v in range(n):
            write_video(root / c / f"{v}.mp4", 5 + v)
    return root


def test_check_ok_prints_report_and_writes_json(root, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["data", "check", str(root), "--way", "2", "--json", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "classes: 3" in printed and "videos: 6 readable" in printed
    assert "frames per video: min 5 / median 5.5 / max 7" in printed
    assert "OK: 2-way 1-shot" in printed
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["videos"] == 6 and data["short_classes"] == {"wave": 1}


def test_check_fails_naming_short_classes(root, capsys):
    code = main(["data", "check", str(root), "--way", "3", "--shot", "1", "--queries", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "needs 3 classes with at least 2 videos" in captured.err
    assert "'wave' (1)" in captured.err


def test_check_with_split_file(root, tmp_path, capsys):
    split = tmp_path / "test.txt"
    split.write_text("open [door]/0\nopen [door]/1\nclose, door/0\nclose, door/1\nclose, door/9\n", encoding="utf-8")
    code = main(["data", "check", str(root), "--split-file", str(split), "--way", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "videos: 4 readable, 1 skipped" in printed and "close, door/9" in printed


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "absent"), "--no-progress"]) == 2
    assert "absent" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path), "--way", "0"]) == 2
    assert "--way must be >= 1" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path), "--classnames-file", "x.txt"]) == 2
    assert "--split-file" in capsys.readouterr().err


def test_synth_renders_a_checkable_set(tmp_path, capsys):
    out = tmp_path / "synth"
    code = main(["data", "synth", str(out), "--classes", "2", "--videos-per-class", "2", "--seed", "3",
                 "--frames", "4", "--size", "32", "--no-progress"])
    assert code == 0
    assert (out / "synth.json").is_file()
    assert len(list(out.glob("*/*.mp4"))) == 4
    capsys.readouterr()
    assert main(["data", "check", str(out), "--way", "2", "--no-progress"]) == 0
    assert "frames per video: min 4 / median 4 / max 4" in capsys.readouterr().out
    assert main(["data", "synth", str(out), "--classes", "0"]) == 2
    assert json.loads((out / "synth.json").read_text())["format_version"] == 2  # the default generator
    old = tmp_path / "synth-v1"
    assert main(["data", "synth", str(old), "--classes", "2", "--videos-per-class", "1", "--frames", "4",
                 "--size", "32", "--version", "1", "--no-progress"]) == 0
    assert json.loads((old / "synth.json").read_text())["format_version"] == 1


def test_ssv2_mini_check_from_the_cli(capsys):
    mini = SHARED / "data" / "ssv2-mini"
    if not mini.is_dir():
        pytest.skip(f"{mini} is absent (a user's clone has no ../shared)")
    assert main(["data", "check", str(mini), "--no-progress", "--no-duplicates"]) == 0
    printed = capsys.readouterr().out
    assert "classes: 10" in printed and "videos: 100 readable, 0 skipped" in printed
    assert "frames per video: min 8 / median 8 / max 8" in printed
