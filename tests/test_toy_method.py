"""A new method is one file: a toy method defined here (not under ``src/``) trains, evaluates,
checkpoints, resumes and predicts through the real engine and the real ``fsar`` commands,
its own command-line option included, and nothing in ``fsar.engine`` or ``fsar.cli`` names it.

What the toy does is deliberately small: a frozen (tiny, random) CLIP encoder, a learned
linear map of its per-frame features, mean over time, cosine to the class means, times a
temperature that is the toy's own option ``--toy-temperature``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine_standins import TINY_CLIP
from fsar.cli import main
from fsar.engine.logging import read_metrics
from fsar.methods import METHODS, MethodOption, MethodOutput
from fsar.methods.common import EncoderMethod, class_means, configure_method

NAME = "toy-one-file"


@dataclass
class ToyConfig:
    backbone: str
    weights: str | None = None
    finetune: str = "frozen"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    width: int = 8

    def validate(self) -> None:
        if self.width < 1:
            raise ValueError(f"{NAME}: width must be >= 1, got {self.width}")


class ToyMethod(EncoderMethod):
    """Frozen encoder -> Linear(width) -> time mean -> temperature x cosine to class means."""

    name = NAME
    #: Every load_resources call of any instance: (option values, class names).
    resources_seen: list[tuple[dict, list[str] | None]] = []

    def __init__(self, *, backbone, weights=None, finetune=None, **options) -> None:
        config, encoder = configure_method(
            ToyConfig, method=NAME, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune="frozen", options=options,
        )
        super().__init__(encoder)
        self.config = config
        self.project = nn.Linear(encoder.feature_dim, config.width)
        self.temperature = 10.0

    @classmethod
    def options(cls):
        return (MethodOption("toy_temperature", float, "scale of the toy's cosines", default=10.0),)

    def load_resources(self, values, *, class_names=None) -> None:
        type(self).resources_seen.append((dict(values), None if class_names is None else list(class_names)))
        self.temperature = float(values.get("toy_temperature", 10.0))

    def forward(self, inputs) -> MethodOutput:
        support, query = self.encode_episode(inputs)
        support, query = self.project(support).mean(1), self.project(query).mean(1)
        prototypes = class_means(support, inputs.support_labels.to(query.device), inputs.way)
        logits = self.temperature * F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).T
        loss = None
        if self.training and inputs.query_labels is not None:
            loss = F.cross_entropy(logits, inputs.query_labels.to(query.device))
        return MethodOutput(log_probs=F.log_softmax(logits, dim=-1), loss=loss)


@pytest.fixture(scope="module")
def toy_registered():
    METHODS.register(NAME)(ToyMethod)
    yield ToyMethod
    del METHODS._factories[NAME]  # noqa: SLF001 - the registration is this module's alone


SMALL = ["--way", "3", "--shot", "1", "--queries", "1", "--no-progress", "--frames", "4"]
BACKBONE = ["--backbone", "clip-vit-b32", "--weights", "random", "-O", TINY_CLIP]


@pytest.fixture(scope="module")
def toy_run(toy_registered, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    code = main(["train", "--data", str(tiny_dataset), "--val-classes", "3", "--method", NAME, *BACKBONE, *SMALL,
                 "--episodes", "4", "--tasks-per-step", "2", "--val-every", "1", "--val-episodes", "3",
                 "--checkpoint-every", "1", "--lr", "1e-2", "--toy-temperature", "7.5", "--out", str(out),
                 "--json", str(out.parent / "summary.json")])
    assert code == 0
    return out


def test_trains_from_the_feature_cache_and_checkpoints_its_config(toy_run, tiny_dataset):
    record = json.loads((toy_run / "last.json").read_text())
    assert record["method"] == NAME and record["step"] == 2
    summary = json.loads((toy_run.parent / "summary.json").read_text())  # fsar train --json PATH
    assert summary["steps"] == 2 and summary["run_dir"] == str(toy_run) and len(summary["losses"]) == 2
    assert summary["best_val_accuracy"] == record["best_val_accuracy"]
    assert record["method_config"] == {"backbone": "clip-vit-b32", "weights": "random", "finetune": "frozen",
                                       "encoder_options": record["method_config"]["encoder_options"], "width": 8}
    assert record["config"]["method_args"] == {"toy_temperature": 7.5}
    assert set(record["training_classes"]) | set(record["validation_classes"]) == {
        p.name for p in tiny_dataset.iterdir()}
    assert list((toy_run / "features" / "train").glob("*.safetensors"))  # frozen encoder: cached features
    seen = ToyMethod.resources_seen[0]
    assert seen[0] == {"toy_temperature": 7.5} and len(seen[1]) == 9  # train + validation classes


def test_evaluates_from_its_checkpoint_with_its_saved_option(toy_run, tiny_dataset, tmp_path):
    ToyMethod.resources_seen.clear()
    out = tmp_path / "eval.json"
    assert main(["eval", "--data", str(tiny_dataset), "--checkpoint", str(toy_run), *SMALL, "--episodes", "4",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == NAME and result["episodes"] == 4 and 0 <= result["accuracy"] <= 1
    assert ToyMethod.resources_seen[-1][0] == {"toy_temperature": 7.5}  # read back from the run's config
    # given again, the option wins over the saved value
    assert main(["eval", "--data", str(tiny_dataset), "--checkpoint", str(toy_run), *SMALL, "--episodes", "1",
                 "--toy-temperature", "2"]) == 0
    assert ToyMethod.resources_seen[-1][0] == {"toy_temperature": 2.0}


def test_predicts_with_its_checkpoint(toy_run, tiny_dataset, capsys):
    query = str(tiny_dataset / "class04" / "clip1")
    assert main(["predict", "--data", str(tiny_dataset), "--query", query, "--checkpoint", str(toy_run),
                 "--json", "-"]) == 0
    output = json.loads(capsys.readouterr().out)
    ranking = output["predictions"][0]["ranking"]
    assert output["method"] == NAME and len(ranking) == 9
    assert sum(item["probability"] for item in ranking) == pytest.approx(1.0, abs=1e-4)


def test_its_option_is_refused_for_other_methods(toy_registered, tiny_dataset, capsys):
    assert main(["eval", "--data", str(tiny_dataset), "--method", "proto", *BACKBONE, *SMALL, "--episodes", "1",
                 "--toy-temperature", "3"]) == 2
    assert f"--toy-temperature is an option of method '{NAME}', not of 'proto'" in capsys.readouterr().err


def test_resumes_where_it_stopped(toy_run, capsys):
    """(Last in this file: it continues the module's run in place.)"""
    resumed = toy_run
    # the toy's own option is part of what the run is: another value is refused, the same one is not
    assert main(["train", "--out", str(resumed), "--resume", "--episodes", "8", "--toy-temperature", "3"]) == 2
    assert "method_args" in capsys.readouterr().err
    assert main(["train", "--out", str(resumed), "--resume", "--episodes", "8", "--toy-temperature", "7.5",
                 "--no-progress"]) == 0
    record = json.loads((resumed / "last.json").read_text())
    assert record["step"] == 4 and record["config"]["method_args"] == {"toy_temperature": 7.5}
    train_steps = [int(r["step"]) for r in read_metrics(resumed / "metrics.csv") if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4]


def test_nothing_in_the_engine_or_the_cli_names_a_method():
    """The engine and the commands ask methods (hooks) instead of naming them."""
    import fsar

    source = Path(fsar.__file__).parent
    methods = fsar.list_methods()
    for folder in ("engine", "cli"):
        for path in (source / folder).glob("*.py"):
            text = path.read_text()
            assert "hasattr(" not in text or folder == "cli", path
            assert "import argparse" not in text or folder == "cli", path
            for name in methods:
                assert f'== "{name}"' not in text and f"== '{name}'" not in text, (path, name)
    assert NAME not in "".join(p.read_text() for p in source.rglob("*.py"))
