import pytest

from fsar.engine.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    resolve_config,
)


def test_defaults_then_yaml_then_cli(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: /data/a\nway: 3\nlr: 1\nlr_milestones: [0.5]\nmethod_options: {alpha: 0.25}\nshot: 2\n")
    config = resolve_config(TrainConfig, yaml_path=path, overrides={"shot": 5, "seed": None, "out": "r"})
    assert config.data == "/data/a"
    assert config.way == 3  # from YAML
    assert config.shot == 5  # CLI beats YAML
    assert config.seed == 0  # None = not given: the default stays
    assert config.lr == 1.0 and isinstance(config.lr, float)  # int -> float is safe
    assert config.lr_milestones == [0.5]
    assert config.method_options == {"alpha": 0.25}
    assert config.tasks_per_step == TrainConfig().tasks_per_step


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: x\nwya: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'wya'"):
        resolve_config(TrainConfig, yaml_path=path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data": "x", "way": "five"}, "way: expected an integer"),
        ({"data": "x", "way": True}, "way: expected an integer"),
        ({"data": "x", "way": 1}, "way must be an integer >= 2, got 1"),
        ({"data": "x", "lr": float("nan")}, r"--lr must be a finite number > 0, got nan"),
        ({"data": "x", "lr": float("inf")}, r"--lr must be a finite number > 0, got inf"),
        ({"data": "x", "lr": -1e-3}, r"--lr must be a finite number > 0, got -0.001"),
        ({"data": "x", "lr": 0}, r"--lr must be a finite number > 0"),
        ({"data": "x", "weight_decay": -1}, r"--weight-decay must be a finite number >= 0, got -1"),
        ({"data": "x", "lr_gamma": -1}, r"--lr-gamma must be a number in \(0, 1\], got -1"),
        ({"data": "x", "lr_gamma": 0}, r"--lr-gamma must be a number in \(0, 1\]"),
        ({"data": "x", "lr_gamma": 1.5}, r"--lr-gamma must be a number in \(0, 1\]"),
        ({"data": "x", "image_size": 0}, r"--image-size must be an integer >= 1"),
        ({"data": "x", "color_jitter": -1}, r"--color-jitter must be a finite number >= 0, got -1"),
        ({"data": "x", "num_frames": 0}, r"--frames must be an integer >= 1, got 0"),
        ({"data": "x", "num_frames": -2}, r"--frames must be an integer >= 1, got -2"),
        ({"data": "x", "seed": -1}, r"--seed must be an integer in 0\.\.2\*\*63-1"),
        ({"data": "x", "device": "gpu"}, r"--device / `device:` must be auto, cpu, cuda"),
        ({"data": "x", "lr_milestones": [60]}, "fractions"),
        ({"data": "x", "amp": "fp8"}, "amp must be"),
        ({"data": "x", "val_way": 1}, r"--val-way must be an integer >= 2 \(or unset: --way\), got 1"),
        ({"data": "x", "split_file_dir": "s", "val_classes": 2}, "split-file-dir"),
        ({"way": 5}, "no data root"),
    ],
)
def test_bad_values_are_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(TrainConfig, overrides=overrides)


def test_range_errors_name_the_yaml_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: x\ncolor_jitter: -1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: color_jitter must be a finite number >= 0, got -1"):
        resolve_config(TrainConfig, yaml_path=path)
    # A flag given on top of the file is named as the flag.
    with pytest.raises(ConfigError, match=r"^--color-jitter must be"):
        resolve_config(TrainConfig, yaml_path=path, overrides={"color_jitter": -2.0})


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: x\nlr: 1e-4\nlr_gamma: 1\n")  # YAML 1.1 reads 1e-4 as a string
    config = resolve_config(TrainConfig, yaml_path=path)
    assert config.lr == 1e-4 and config.lr_gamma == 1.0


def test_yaml_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(EvalConfig, yaml_path=path)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_config(EvalConfig, yaml_path=tmp_path / "missing.yaml")


def test_round_trip_through_dict():
    config = resolve_config(EvalConfig, overrides={"data": "d", "method": "otam", "episodes": 7})
    saved = config_to_dict(config)
    assert saved["kind"] == "EvalConfig"
    assert config_from_dict(saved) == config
    train = resolve_config(TrainConfig, overrides={"data": "d"})
    assert config_from_dict(config_to_dict(train)) == train


def test_the_old_top_level_descriptions_key_becomes_a_method_arg(tmp_path, caplog):
    """fsar 0.1 configs (YAML files, saved checkpoints) held LGA's description cache as the
    top-level ``descriptions``; it is read into ``method_args``, and a YAML file says so."""
    path = tmp_path / "old.yaml"
    path.write_text("data: d\nmethod: lga\ndescriptions: cache.json\nmethod_args: {llm_timeout: 5}\n")
    with caplog.at_level("WARNING"):
        config = resolve_config(TrainConfig, yaml_path=path)
    assert config.method_args == {"descriptions": "cache.json", "llm_timeout": 5}
    assert "'descriptions' is deprecated" in caplog.text
    saved = config_to_dict(resolve_config(TrainConfig, overrides={"data": "d"}))
    saved.pop("method_args")
    saved["descriptions"] = None  # as a 0.1 checkpoint wrote it when no cache was given
    assert config_from_dict(saved).method_args == {}
    saved["descriptions"] = "x.json"
    assert config_from_dict(saved).method_args == {"descriptions": "x.json"}
