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
    # every trained method, its transductive choice named, then the training-free baselines
    assert methods == ["ma-fsar", "lga", "proto", "otam", "bimhm"]  # --quick trains two of the three
    assert [row["trained"] for row in results["rows"]] == [True] * 2 + [False] * 3
    assert set(results["best_steps"]) == {"ma-fsar", "lga"}
    assert (out / "run-v2-quick-lga" / "best.json").is_file()
    assert results["train_configs"]["lga"]["method"] == "lga"
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


def test_order_sensitive_episodes_are_those_holding_a_motion_and_its_reverse(tmp_path):
    from fsar.cli.demo import PLANS, mean_and_interval, order_sensitive_episodes
    from fsar.data.episodes import EpisodeSampler
    from fsar.data.manifest import Manifest
    from fsar.data.synth import render_dataset, reverse_pairs

    root = render_dataset(tmp_path / "s", classes=8, videos_per_class=2, frames=4, size=32, progress=False, version=2)
    manifest = Manifest.from_folder(root, progress=False)
    pairs = reverse_pairs(manifest.classes)
    chosen = order_sensitive_episodes(manifest, pairs, way=5, shot=1, seed=0, episodes=40)
    sampler = EpisodeSampler(manifest, way=5, shot=1, queries=1, seed=0)
    for index in range(40):
        names = set(sampler.episode(index).class_names)
        assert (index in chosen) == any(a in names and b in names for a, b in pairs)
    assert 0 < len(chosen) < 40
    mean, interval = mean_and_interval([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and interval == pytest.approx(1.96 * 0.5 / 2)
    # the default demo is version 2 on the grid backbone; version 1 is the first demo's setting
    assert PLANS[(2, False)].backbone == "effnet-lite0-grid+minilm" and PLANS[(2, False)].data_version == 2
    assert PLANS[(1, False)].backbone == "effnet-lite0+minilm" and PLANS[(1, False)].train_episodes == 2400


@pytest.mark.parametrize("trained, words", [
    (["proto"], "--trained proto: a training-free method"),
    (["nope"], "--trained nope: unknown method; trainable methods: "),
    (["lga", "lga"], "a method is named twice"),
])
def test_trained_methods_are_checked_before_any_work(tmp_path, capsys, trained, words):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--trained", *trained]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_options_go_to_one_trained_method_or_to_all():
    from fsar.cli import CLIError
    from fsar.cli._args import method_options_per_label

    got = method_options_per_label(["lga:alpha=0.3", "embed_dim=64"], ["ma-fsar", "lga"])
    assert got == {"ma-fsar": {"embed_dim": 64}, "lga": {"alpha": 0.3, "embed_dim": 64}}
    with pytest.raises(CLIError, match="'otam' is not one of the methods run here"):
        method_options_per_label(["otam:lam=1"], ["ma-fsar", "lga"])
