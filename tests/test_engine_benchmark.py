"""``fsar benchmark``: methods x benchmarks x shots on the same episodes, one table, resumable."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from engine_standins import TINY_CLIP

from fsar.cli import main
from fsar.data.episodes import EpisodeSampler
from fsar.data.manifest import Manifest
from fsar.data.splits import split_directory
from fsar.engine import benchmark as bench
from fsar.engine.benchmark import BenchmarkError, episodes_fingerprint, parse_data_spec, parse_method_spec
from fsar.engine.config import EvalConfig, resolve_config
from fsar.engine.run import run_evaluation

FROZEN = ["--backbone", "clip-vit-b32", "--weights", "random", "-O", TINY_CLIP, "-O", "finetune=frozen"]
EPISODES = 30


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from fsar.data.synth import render_dataset

    return render_dataset(tmp_path_factory.mktemp("synth") / "s", classes=6, videos_per_class=7, frames=8, size=32,
                          progress=False)


def _bench_args(synthetic, out, *extra):
    return ["benchmark", "--methods", "proto", "otam", "bimhm", "--data", f"synth={synthetic}", *FROZEN,
            "--episodes", str(EPISODES), "--chunk", "10", "--bootstrap", "500", "--out", str(out), "--no-progress",
            *extra]


@pytest.fixture(scope="module")
def table_dir(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    assert main(_bench_args(synthetic, out)) == 0
    return out


def test_three_methods_write_the_table_comparisons_and_png(table_dir):
    for ext in ("md", "csv", "json", "png"):
        assert (table_dir / f"benchmark.{ext}").is_file()
    assert (table_dir / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((table_dir / "benchmark.json").read_text())
    cells = record["cells"]
    assert {(c["method"], c["shot"]) for c in cells} == {(m, s) for m in ("proto", "otam", "bimhm") for s in (1, 5)}
    for cell in cells:
        assert cell["episodes"] == EPISODES and 0 <= cell["accuracy"] <= 1 and cell["ci95"] >= 0
        assert cell["backbone"] == "clip-vit-b32" and cell["num_frames"] == 8 and cell["image_size"] == 32
    # the same episodes for every method of a cell
    for shot in (1, 5):
        assert len({c["episodes_sha256"] for c in cells if c["shot"] == shot}) == 1
    assert cells[0]["episodes_sha256"] != cells[-1]["episodes_sha256"]  # 1-shot and 5-shot differ
    assert len(record["comparisons"]) == 6  # 3 pairs x 2 cells
    by = {(c["method"], c["shot"]): c for c in cells}
    for comparison in record["comparisons"]:
        a, b = by[(comparison["a"], comparison["shot"])], by[(comparison["b"], comparison["shot"])]
        assert comparison["difference"] == pytest.approx(a["accuracy"] - b["accuracy"], abs=1e-9)
        assert comparison["wins"] + comparison["ties"] + comparison["losses"] == EPISODES
    assert record["splits"]["synth"]["classes"] == 6 and record["fsar_version"]
    rows = list(csv.DictReader((table_dir / "benchmark.csv").open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"proto", "otam", "bimhm"}
    markdown = (table_dir / "benchmark.md").read_text()
    assert "| Method | synth 1-shot | synth 5-shot |" in markdown and "Paired comparisons" in markdown


def test_a_cell_equals_fsar_eval_on_the_same_settings(table_dir, synthetic):
    """The benchmark's protocol is fsar eval's: same episodes, same accuracy."""
    cell = json.loads((table_dir / "cells" / "synth" / "1shot" / "otam.json").read_text())
    config = resolve_config(EvalConfig, overrides={
        "data": str(synthetic), "method": "otam", "backbone": "clip-vit-b32", "weights": "random",
        "method_options": {"encoder_options": _tiny_options(), "finetune": "frozen"}, "way": 5, "shot": 1,
        "queries": 1, "episodes": EPISODES, "seed": 0, "progress": False,
    })
    outcome = run_evaluation(config)
    assert outcome.result.episode_accuracies == pytest.approx(cell["episode_accuracies"], abs=1e-6)


def _tiny_options():
    import yaml

    return yaml.safe_load(TINY_CLIP.split("=", 1)[1])


def test_an_interrupted_benchmark_resumes_and_finished_cells_are_not_rerun(table_dir, synthetic, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "resumed"
    shutil.copytree(table_dir, out)
    cell_path = out / "cells" / "synth" / "5shot" / "bimhm.json"
    finished = json.loads(cell_path.read_text())
    partial = {**finished, "complete": False, "episode_accuracies": finished["episode_accuracies"][:10]}
    cell_path.write_text(json.dumps(partial))
    calls = []
    from fsar.engine import evaluate as evaluate_module

    real = evaluate_module.evaluate

    def counting(method, source, *, episodes, **kwargs):
        calls.append((source.start, episodes))
        return real(method, source, episodes=episodes, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", counting)
    assert main(_bench_args(synthetic, out)) == 0
    assert calls == [(10, 10), (20, 10)]  # only the unfinished cell, from episode 10
    resumed = json.loads(cell_path.read_text())
    assert resumed["complete"] and resumed["episode_accuracies"] == finished["episode_accuracies"]
    def accuracies(path):
        return [(c["method"], c["shot"], c["accuracy"], c["ci95"]) for c in json.loads(path.read_text())["cells"]]

    assert accuracies(out / "benchmark.json") == accuracies(table_dir / "benchmark.json")


def test_resuming_with_other_settings_is_refused(table_dir, synthetic, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(table_dir, out)
    assert main(_bench_args(synthetic, out, "--seed", "1")) == 2
    error = capsys.readouterr().err
    assert "other settings" in error and "seed" in error


@pytest.mark.slow
def test_a_checkpoint_row(synthetic, tmp_path):
    run = tmp_path / "ma-1shot"
    assert main(["train", "--data", str(synthetic), "--val-classes", "3", "--method", "ma-fsar", *FROZEN,
                 "--way", "3", "--shot", "1", "--queries", "1", "--episodes", "4", "--tasks-per-step", "2",
                 "--val-every", "2", "--val-episodes", "2", "--no-progress", "--out", str(run)]) == 0
    out = tmp_path / "bench"
    assert main(["benchmark", "--methods", "otam", f"ma={tmp_path}/ma-{{shot}}shot", "--data", f"synth={synthetic}",
                 *FROZEN, "--shots", "1", "--way", "3", "--episodes", "8", "--out", str(out), "--no-progress",
                 "--bootstrap", "100"]) == 0
    cells = {c["method"]: c for c in json.loads((out / "benchmark.json").read_text())["cells"]}
    assert cells["ma"]["checkpoint"].startswith(str(run)) and cells["ma"]["method_name"] == "ma-fsar"
    assert cells["ma"]["episodes_sha256"] == cells["otam"]["episodes_sha256"]


def test_specs_parse_and_bad_ones_are_clear(tmp_path):
    assert parse_method_spec("proto") == bench.MethodSpec("proto", "proto", None)
    spec = parse_method_spec("ma=runs/ma-{benchmark}-{shot}shot")
    assert spec.checkpoint_for("ssv2-small", 5) == "runs/ma-ssv2-small-5shot"
    with pytest.raises(BenchmarkError, match="only {benchmark} and {shot}"):
        parse_method_spec("ma=runs/{way}").checkpoint_for("x", 1)
    with pytest.raises(BenchmarkError, match="LABEL=RUN_DIR"):
        parse_method_spec("=runs/x")
    data = parse_data_spec(f"ssv2-small={tmp_path}")
    assert data.name == "ssv2-small" and data.split.path == split_directory() / "ssv2-small" / "test.txt"
    assert parse_data_spec(f"ssv2_CMN:val={tmp_path}").name == "ssv2-small:val"
    assert parse_data_spec(f"mine={tmp_path}").split is None
    with pytest.raises(BenchmarkError, match="NAME=ROOT"):
        parse_data_spec("ssv2-small")
    plan = bench.BenchmarkPlan(methods=[parse_method_spec("proto")] * 2, data=[data])
    with pytest.raises(BenchmarkError, match="labels repeat"):
        plan.validate()


def test_episode_fingerprint_depends_on_the_episodes_only(synthetic):
    manifest = Manifest.from_folder(synthetic)
    a = EpisodeSampler(manifest, way=5, shot=1, queries=1, seed=0)
    b = EpisodeSampler(manifest, way=5, shot=1, queries=1, seed=0)
    c = EpisodeSampler(manifest, way=5, shot=1, queries=1, seed=1)
    assert episodes_fingerprint(a, 20, synthetic) == episodes_fingerprint(b, 20, synthetic)
    assert episodes_fingerprint(a, 20, synthetic) != episodes_fingerprint(c, 20, synthetic)
    assert episodes_fingerprint(a, 20, synthetic) != episodes_fingerprint(a, 21, synthetic)


def test_a_cell_that_cannot_be_served_fails_before_anything_runs(synthetic, tmp_path, capsys, monkeypatch):
    from fsar.engine import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("ran an episode"))
    out = tmp_path / "short"
    assert main(["benchmark", "--methods", "proto", "--data", f"synth={synthetic}", *FROZEN, "--shots", "1", "7",
                 "--out", str(out), "--no-progress"]) == 2
    assert "7-shot" in capsys.readouterr().err and not (out / "cells").exists()



@pytest.mark.parametrize("flag, value, words", [
    ("--seed", "-3", "--seed: must be an integer >= 0"),
    ("--shots", "0", "--shots: must be an integer >= 1"),
    ("--episodes", "0", "--episodes: must be an integer >= 1"),
    ("--bootstrap", "-1", "--bootstrap: must be an integer >= 0"),
    ("--frames", "0", "--frames: must be an integer >= 1"),
    ("--device", "bogus", "--device bogus: not a device"),
])
def test_bad_flag_values_are_one_line_errors_before_any_work(tmp_path, capsys, flag, value, words):
    out = tmp_path / "out"
    args = ["benchmark", "--methods", "proto", "--data", f"x={tmp_path}", "--out", str(out), flag, value]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own range errors
        code = exit_.code
    assert code == 2
    error = capsys.readouterr().err
    assert words in error and "Traceback" not in error
    assert not out.exists()
