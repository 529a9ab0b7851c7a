"""``fsar demo --quick``: the whole loop on the embedded default (slow: renders, encodes, trains)."""

import json
import shlex
from pathlib import Path

import pytest

from fsar.cli import main


@pytest.mark.slow
def test_demo_quick_runs_the_whole_loop(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results-v2-quick.json").read_text())
    methods = [row["method"] for row in results["rows"]]
    assert methods == ["ma-fsar", "proto", "otam", "bimhm"]
    for row in results["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ci95"] < 0.2 and row["episodes"] == 300
        assert f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}" in printed
        # the order-sensitive column: episodes holding a motion and its reverse, a subset of all
        assert 0 < row["pairs_episodes"] < row["episodes"] and 0.0 <= row["pairs_accuracy"] <= 1.0
    assert results["demo_version"] == 2 and results["train_config"]["backbone"] == "effnet-lite0-grid+minilm"
    assert results["train_config"]["method_options"]["start"] == "training-free"
    assert (out / "results-v2-quick.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "run-v2-quick" / "learning_curve.png").is_file()
    # the suggested predict command survives a shell: paths with spaces are quoted
    hint = next(line for line in printed.splitlines() if line.startswith("try:"))
    words = shlex.split(hint.removeprefix("try:"))
    assert words[:2] == ["fsar", "predict"]
    assert Path(words[words.index("--query") + 1]).is_file()
    # trained on the training classes, chosen on the validation classes, tested on the rest
    record = json.loads((out / "run-v2-quick" / "best.json").read_text())
    test_classes = {line.split("/")[0] for line in (out / "splits-v2-quick" / "test.txt").read_text().splitlines()}
    assert not test_classes & set(record["training_classes"] + record["validation_classes"])
    # a second run reuses data, features and the finished run
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().out
