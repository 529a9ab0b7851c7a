"""``fsar train`` / ``fsar eval`` / ``fsar predict`` end to end on a tiny data set and a tiny CLIP."""

import json
import math

import pytest
from engine_standins import TINY_CLIP

from fsar.cli import main
from fsar.data.episodes import EpisodeSampler
from fsar.data.manifest import Manifest
from fsar.engine.config import TrainConfig, resolve_config
from fsar.engine.logging import read_metrics
from fsar.engine.run import run_training
from fsar.engine.train import TrainHooks

# frozen tiny CLIP: the frozen-encoder path (features extracted on the fly into RUN_DIR/features)
FROZEN = ["--backbone", "clip-vit-b32", "--weights", "random", "-O", TINY_CLIP, "-O", "finetune=frozen"]
SMALL = ["--way", "3", "--shot", "1", "--queries", "1", "--no-progress"]


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return tiny_dataset


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ma"
    code = main(["train", "--data", str(data), "--val-classes", "3", "--method", "ma-fsar", *FROZEN, *SMALL,
                 "--episodes", "8", "--tasks-per-step", "2", "--val-every", "2", "--val-episodes", "4",
                 "--lr", "1e-3", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_run_directory(run_dir, data):
    for name in ("config.json", "last.json", "best.json", "metrics.csv", "learning_curve.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "features" / "train").glob("*.safetensors"))  # trained from the feature cache
    record = json.loads((run_dir / "last.json").read_text())
    assert record["method"] == "ma-fsar" and record["backbone"] == "clip-vit-b32" and record["step"] == 4
    assert record["config"]["way"] == 3 and record["config"]["method_options"]["finetune"] == "frozen"
    classes = sorted(p.name for p in data.iterdir())
    assert record["training_classes"] == classes[:6] and record["validation_classes"] == classes[6:]
    val_rows = [r for r in read_metrics(run_dir / "metrics.csv") if r["split"] == "val"]
    assert [int(r["step"]) for r in val_rows] == [2, 4]


def test_eval_json_and_png(run_dir, data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["eval", "--data", str(data), "--checkpoint", str(run_dir), *SMALL, "--episodes", "12",
                 "--seed", "3", "--json", str(out), "--png", str(tmp_path / "eval.png")])
    assert code == 0
    result = json.loads(out.read_text())
    for key in ("method", "backbone", "way", "shot", "queries", "episodes", "seed", "accuracy", "ci95"):
        assert key in result, key
    assert (result["method"], result["backbone"], result["episodes"], result["seed"]) == ("ma-fsar", "clip-vit-b32", 12, 3)
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["ci95"] == pytest.approx(1.96 * result["std"] / math.sqrt(12))
    assert sum(map(sum, result["confusion_matrix"])) == 12 * 3
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert f"{100 * result['accuracy']:.2f}" in capsys.readouterr().out
    # the same seed gives the same episodes and so the same accuracy
    main(["eval", "--data", str(data), "--checkpoint", str(run_dir), *SMALL, "--episodes", "12", "--seed", "3",
          "--json", str(tmp_path / "again.json")])
    assert json.loads((tmp_path / "again.json").read_text())["accuracy"] == result["accuracy"]


def _as_written_before_method_args(run_dir, copy_to, *, keep_method_config):
    """A copy of ``run_dir`` whose records look as fsar 0.1 wrote them: the method options of
    LGA at the top level (``descriptions``), no ``method_args``, optionally no ``method_config``."""
    import shutil

    shutil.copytree(run_dir, copy_to, ignore=shutil.ignore_patterns("features"))
    for name in ("best.json", "last.json"):
        record = json.loads((copy_to / name).read_text())
        record["config"].pop("method_args")
        record["config"]["descriptions"] = None
        record.pop("record_sha256")  # fsar 0.1 records carried no digest
        if not keep_method_config:
            record.pop("method_config")
        (copy_to / name).write_text(json.dumps(record))
    return copy_to


@pytest.mark.parametrize("keep_method_config", [True, False])
def test_checkpoints_written_before_method_args_still_evaluate_the_same(run_dir, data, tmp_path, keep_method_config):
    old = _as_written_before_method_args(run_dir, tmp_path / "old", keep_method_config=keep_method_config)
    results = []
    for directory in (run_dir, old):
        out = tmp_path / f"{directory.name}.json"
        assert main(["eval", "--data", str(data), "--checkpoint", str(directory), *SMALL, "--episodes", "6",
                     "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["confusion_matrix"] == results[1]["confusion_matrix"]


def test_the_saved_method_config_is_what_rebuilds_the_method(run_dir, data, tmp_path, capsys):
    """The record's method_config, not the run's -O options, decides the rebuilt method: a
    config the code cannot build (a record of another fsar version, without a digest) is an
    error that says so; the same edit in a digest-carrying record is refused as an edit."""
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("features"))
    record = json.loads((copy / "best.json").read_text())
    assert record["method_config"]["finetune"] == "frozen" and record["method_config"]["alpha"] == 0.75
    record["method_config"]["tpcm_heads"] = 0
    (copy / "best.json").write_text(json.dumps(record))
    assert main(["eval", "--data", str(data), "--checkpoint", str(copy), *SMALL, "--episodes", "2"]) == 2
    assert "the checkpoint record was changed after it was written" in capsys.readouterr().err
    record.pop("record_sha256")
    (copy / "best.json").write_text(json.dumps(record))
    assert main(["eval", "--data", str(data), "--checkpoint", str(copy), *SMALL, "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot rebuild 'ma-fsar' from its saved method_config" in err and "method_config" in err


def test_eval_refuses_checkpoint_of_other_method_or_backbone(run_dir, data, capsys):
    code = main(["eval", "--data", str(data), "--checkpoint", str(run_dir), "--method", "clip-fsar", *SMALL,
                 "--episodes", "2"])
    assert code == 2
    assert "trained with method 'ma-fsar' (asked for 'clip-fsar')" in capsys.readouterr().err
    code = main(["eval", "--data", str(data), "--checkpoint", str(run_dir), "--backbone", "effnet-lite0+minilm",
                 *SMALL, "--episodes", "2"])
    assert code == 2
    assert "backbone 'clip-vit-b32'" in capsys.readouterr().err


def test_training_free_eval_without_checkpoint(data, tmp_path):
    out = tmp_path / "proto.json"
    assert main(["eval", "--data", str(data), "--method", "proto", *FROZEN, *SMALL, "--episodes", "5",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["method"] == "proto"


def test_predict_ranks_support_classes(run_dir, data, capsys):
    queries = [str(data / "class00" / "clip0"), str(data / "class07" / "clip2")]
    support = data
    assert main(["predict", "--data", str(support), "--query", *queries, "--checkpoint", str(run_dir), "--json", "-"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["method"] == "ma-fsar" and len(output["predictions"]) == 2
    for prediction, query in zip(output["predictions"], queries):
        assert prediction["query"] == query
        probabilities = [item["probability"] for item in prediction["ranking"]]
        assert sorted(item["class"] for item in prediction["ranking"]) == sorted(p.name for p in data.iterdir())
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert main(["predict", "--data", str(support), "--query", queries[0], "--checkpoint", str(run_dir), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert queries[0] in text and " 2. " in text and " 3. " not in text


def test_predict_bad_inputs(run_dir, data, tmp_path, capsys):
    support = tmp_path / "support"
    support.mkdir()
    for name in ("class00", "class01"):
        (support / name).symlink_to(data / name, target_is_directory=True)
    (support / "empty_action").mkdir()
    query = str(data / "class00" / "clip0")
    assert main(["predict", "--data", str(support), "--query", query, "--checkpoint", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "empty_action" in err and "no readable clip" in err
    (support / "empty_action").rmdir()
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    assert main(["predict", "--data", str(support), "--query", str(not_video), "--checkpoint", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "notes.mp4" in err and "not a readable video" in err


def _split_dir(data, tmp_path):
    classes = sorted(p.name for p in data.iterdir())
    parts = {"train": classes[:3], "val": classes[3:6], "test": classes[6:]}
    directory = tmp_path / "splits"
    directory.mkdir()
    for split, names in parts.items():
        lines = [f"{name}/{clip.name}" for name in names for clip in sorted((data / name).iterdir())]
        (directory / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return directory, parts


def test_validation_never_touches_the_test_split(data, tmp_path, monkeypatch):
    directory, parts = _split_dir(data, tmp_path)
    split_files, sampled = [], []
    real_from_split = Manifest.from_split_file.__func__
    real_episode = EpisodeSampler.episode

    def spy_from_split(cls, root, split_file, **kw):
        split_files.append(split_file.name)
        return real_from_split(cls, root, split_file, **kw)

    def spy_episode(self, index):
        episode = real_episode(self, index)
        sampled.extend(episode.class_names)
        return episode

    monkeypatch.setattr(Manifest, "from_split_file", classmethod(spy_from_split))
    monkeypatch.setattr(Manifest, "from_folder", classmethod(lambda *a, **k: pytest.fail("read the whole root")))
    monkeypatch.setattr(EpisodeSampler, "episode", spy_episode)
    code = main(["train", "--data", str(data), "--split-file-dir", str(directory), "--method", "ma-fsar", *FROZEN,
                 *SMALL, "--episodes", "4", "--tasks-per-step", "2", "--val-every", "1", "--val-episodes", "3",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    assert sorted(split_files) == ["train.txt", "val.txt"]
    assert set(sampled) <= set(parts["train"]) | set(parts["val"])
    assert set(parts["val"]) <= set(sampled)  # validation ran, on the val classes
    record = json.loads((tmp_path / "run" / "best.json").read_text())
    assert record["validation_classes"] == parts["val"]


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(data, tmp_path, capsys):
    def config(out):
        return resolve_config(TrainConfig, overrides=dict(
            data=str(data), method="ma-fsar", backbone="clip-vit-b32", weights="random",
            method_options={"finetune": "frozen", "encoder_options": dict(image_size=32, patch_size=16, width=32,
                            vision_layers=1, heads=2, text_width=32, text_layers=1, text_heads=2,
                            projection_dim=16, vocab_size=64)},
            way=3, shot=1, queries=1, episodes=8, tasks_per_step=2, lr=1e-3, val_every=0, checkpoint_every=1,
            out=str(out), progress=False, seed=4))

    full = run_training(config(tmp_path / "full"))

    class Crash(Exception):
        pass

    def crash(step, loss):
        if step == 2:
            raise Crash

    with pytest.raises(Crash):
        run_training(config(tmp_path / "cut"), hooks=TrainHooks(on_step_end=crash))
    # a second start without --resume is refused; --resume alone continues from last.json
    assert main(["train", "--data", str(data), "--method", "ma-fsar", "--out", str(tmp_path / "cut")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume", "--no-progress"]) == 0
    losses = [float(r["loss"]) for r in read_metrics(tmp_path / "cut" / "metrics.csv") if r["split"] == "train"]
    assert losses == pytest.approx(full.losses, abs=1e-5)
    # resuming with a different setting than the checkpoint's is refused
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume", "--lr", "0.5"]) == 2
    assert "lr" in capsys.readouterr().err


def test_validation_classes_fewer_than_the_way_need_val_way(data, tmp_path, capsys):
    """Two held-out classes cannot fill a 3-way validation episode: a one-line error, and with
    ``--val-way 2`` the run validates 2-way episodes of exactly those two classes."""
    args = ["train", "--data", str(data), "--val-classes", "2", "--method", "ma-fsar", *FROZEN, *SMALL,
            "--episodes", "4", "--tasks-per-step", "2", "--val-every", "1", "--val-episodes", "3"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "validation split:" in (err := capsys.readouterr().err) and "--val-way" in err and "2 of 2 classes" in err
    out = tmp_path / "two-way"
    assert main([*args, "--val-way", "2", "--validate-at-start", "--early-stop-patience", "5",
                 "--out", str(out)]) == 0
    record = json.loads((out / "last.json").read_text())
    assert record["config"]["way"] == 3 and record["config"]["val_way"] == 2
    assert record["config"]["validate_at_start"] is True and record["config"]["early_stop_patience"] == 5
    assert record["validation_classes"] == sorted(p.name for p in data.iterdir())[7:]
    val_rows = [r for r in read_metrics(out / "metrics.csv") if r["split"] == "val"]
    assert [int(r["step"]) for r in val_rows] == [0, 1, 2]


def test_zero_episodes_write_the_untrained_method_as_a_run(data, tmp_path, capsys):
    out = tmp_path / "start"
    assert main(["train", "--data", str(data), "--val-classes", "3", "--method", "ma-fsar", *FROZEN, *SMALL,
                 "--episodes", "0", "--val-episodes", "3", "--out", str(out)]) == 0
    assert "for 0 steps" in capsys.readouterr().out
    last, best = (json.loads((out / f"{n}.json").read_text()) for n in ("last", "best"))
    assert last["step"] == 0 and best["step"] == 0
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv") if r["split"] == "val"] == [0]
    assert main(["eval", "--data", str(data), "--checkpoint", str(out), *SMALL, "--episodes", "4"]) == 0
