import json

import pytest
import torch
from engine_standins import TensorEpisodes, TinyMethod

from fsar.engine.checkpoint import read_checkpoint
from fsar.engine.config import TrainConfig, resolve_config
from fsar.engine.logging import read_metrics
from fsar.engine.train import TrainError, TrainHooks, milestone_steps, train

CLASSES = [f"class{i}" for i in range(6)]


def _config(out, **overrides):
    values = dict(data="unused", out=str(out), way=3, shot=1, queries=2, episodes=12, tasks_per_step=2,
                  lr=0.05, lr_milestones=[0.5], val_every=2, val_episodes=8, checkpoint_every=1, seed=3,
                  progress=False)
    values.update(overrides)
    return resolve_config(TrainConfig, overrides=values)


def _run(config, *, resume=False, hooks=None, val=True):
    torch.manual_seed(config.seed)
    method = TinyMethod()
    summary = train(
        config,
        method=method,
        train_source=TensorEpisodes(CLASSES[:4], seed=config.seed),
        val_source=TensorEpisodes(CLASSES[4:] + CLASSES[:1], seed=99) if val else None,
        resume=resume,
        hooks=hooks,
    )
    return method, summary


class Interrupt(Exception):
    pass


def test_resume_continues_exactly(tmp_path):
    full_method, full = _run(_config(tmp_path / "full"))
    assert len(full.losses) == 6

    def stop_after_3(step, loss):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        _run(_config(tmp_path / "cut"), hooks=TrainHooks(on_step_end=stop_after_3))
    assert read_checkpoint(tmp_path / "cut", prefer="last").step == 3
    resumed_method, resumed = _run(_config(tmp_path / "cut"), resume=True)
    assert resumed.start_step == 3
    assert resumed.losses[0] == pytest.approx(full.losses[3], abs=1e-6)  # same next loss
    assert resumed.losses == pytest.approx(full.losses[3:], abs=1e-6)
    for a, b in zip(full_method.parameters(), resumed_method.parameters()):
        torch.testing.assert_close(a, b)
    # the CSV of the resumed run has each step once
    steps = [int(r["step"]) for r in read_metrics(tmp_path / "cut" / "metrics.csv") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_training_lowers_loss_and_keeps_best_by_validation(tmp_path):
    config = _config(tmp_path, episodes=40, val_every=4)
    _, summary = _run(config)
    assert sum(summary.losses[-3:]) < sum(summary.losses[:3])
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["split"] == "val"]
    assert [int(r["step"]) for r in rows] == [4, 8, 12, 16, 20]
    accuracies = [float(r["accuracy"]) for r in rows]
    best = read_checkpoint(tmp_path)  # prefers best.json
    assert best.record["name"] == "best"
    assert best.step == int(rows[accuracies.index(max(accuracies))]["step"])
    assert best.record["best_val_accuracy"] == pytest.approx(max(accuracies), abs=1e-6)
    assert "optimizer_file" not in best.record
    assert read_checkpoint(tmp_path, prefer="last").step == 20
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["kind"] == "TrainConfig" and saved["episodes"] == 40


def test_multistep_schedule_and_accumulation(tmp_path):
    config = _config(tmp_path, episodes=7, tasks_per_step=2, lr_milestones=[0.5, 0.75], lr_gamma=0.1)
    assert milestone_steps(config) == [2, 3]
    _run(config, val=False)
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["split"] == "train"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert [int(r["tasks"]) for r in rows] == [2, 2, 2, 1]  # 7 tasks: the last step is partial
    assert not (tmp_path / "best.json").exists()  # no validation: the last checkpoint is kept


def test_no_validation_touches_only_train_source(tmp_path):
    train_source = TensorEpisodes(CLASSES[:4])
    val_source = TensorEpisodes(CLASSES[3:])
    train(_config(tmp_path, episodes=4, val_every=1, val_episodes=3), method=TinyMethod(),
          train_source=train_source, val_source=val_source)
    assert all(train for _, train, _ in train_source.served)
    assert not any(train for _, train, _ in val_source.served)
    assert {i for i, _, _ in val_source.served} == {0, 1, 2}  # the same val episodes every time


def test_training_free_method_is_refused(tmp_path):
    method = TinyMethod()
    method.requires_grad_(False)
    with pytest.raises(TrainError, match="nothing to train"):
        train(_config(tmp_path), method=method, train_source=TensorEpisodes(CLASSES))


def test_early_stop_ends_the_run_after_patience_validations_without_a_new_best(tmp_path):
    # lr ~0: validation never improves after the first score, so the run stops early
    config = _config(tmp_path, episodes=40, val_every=1, lr=1e-12, early_stop_patience=2, validate_at_start=True)
    _, summary = _run(config)
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["split"] == "val"]
    assert [int(r["step"]) for r in rows] == [0, 1, 2]  # the start, then two without a new best
    assert summary.stopped_early and summary.steps == 2 and len(summary.losses) == 2
    assert read_checkpoint(tmp_path).step == 0  # the untrained start stays the best
    last = read_checkpoint(tmp_path, prefer="last")
    assert last.step == 2 and last.record["stopped_early"]
    # resuming a run that stopped early trains no further
    _, again = _run(config, resume=True)
    assert again.losses == [] and again.stopped_early


def test_without_patience_every_episode_trains(tmp_path):
    _, summary = _run(_config(tmp_path, episodes=12, val_every=1, lr=1e-12))
    assert not summary.stopped_early and len(summary.losses) == 6


def test_learning_curve_of_a_perfect_run_draws_without_a_degenerate_axis(tmp_path):
    import csv
    import warnings

    from fsar.engine.logging import CSV_COLUMNS, draw_learning_curve

    csv_path = tmp_path / "metrics.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for step in (0, 10, 20):
            writer.writerow({c: "" for c in CSV_COLUMNS} | {"step": step, "split": "train", "loss": 0.5})
            writer.writerow({c: "" for c in CSV_COLUMNS} | {"step": step, "split": "val", "accuracy": 1.0, "ci95": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "identical low and high ylims" on a zero-height band
        png = draw_learning_curve(csv_path, tmp_path / "curve.png")
    assert png.stat().st_size > 1000
