"""Typed run configurations: the single source of truth for ``fsar train`` and ``fsar eval``.

Values come from three layers, later ones winning: the dataclass defaults, a YAML file
(``--config F.yaml``) and explicit command-line flags. :func:`resolve_config` merges
them and checks every key and type, so a typo in a YAML file is an error that names
the file and the key instead of a silently ignored setting. The resolved config is
written beside every checkpoint and result (:func:`config_to_dict`).
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "EvalConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_yaml",
    "resolve_config",
]


log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value or key that cannot be used (message names the source and key)."""


@dataclass
class TrainConfig:
    """Everything that decides an episodic training run.

    Data: ``data`` is a dataset root (``class/clip`` folders). With ``split_file_dir``
    (holding ``train.txt`` and ``val.txt``, optionally ``classnames_train.txt`` /
    ``classnames_val.txt``) training uses the train split and validation the val split;
    the test split is never opened. Without split files all classes of ``data`` train,
    and validation comes from ``val_data`` or from ``val_classes`` classes held out of
    ``data`` (the last ones in sorted order); with neither, no validation runs and the
    last checkpoint is the one kept.

    Schedule: ``episodes`` training tasks per process, ``tasks_per_step`` of them
    accumulated into each Adam step (so ``steps = ceil(episodes / tasks_per_step)``);
    under ``torchrun`` every rank draws its own tasks, so one step sees
    ``tasks_per_step * world_size`` tasks. The learning rate is multiplied by
    ``lr_gamma`` at each fraction of the steps in ``lr_milestones``.
    """

    data: str = ""
    method: str = "ma-fsar"
    backbone: str = "effnet-lite0+minilm"
    weights: str | None = None
    #: Extra keyword options for ``fsar.create_method`` (JSON-able values; ``-O key=value``).
    method_options: dict[str, Any] = field(default_factory=dict)
    #: Values of the method's own command-line options (:meth:`FewShotMethod.options`, e.g.
    #: LGA's ``descriptions`` cache file), handed to :meth:`FewShotMethod.load_resources`.
    method_args: dict[str, Any] = field(default_factory=dict)
    split_file_dir: str | None = None
    val_data: str | None = None
    val_classes: int = 0
    out: str = "runs/fsar"
    way: int = 5
    shot: int = 1
    queries: int = 5
    episodes: int = 10_000
    tasks_per_step: int = 16
    #: Adam's learning rate and weight decay; None: the method's ``optimizer_defaults()``
    #: (clip-spm: the release's 1e-5 / 5e-5), else 1e-4 and 0 (:func:`fsar.engine.train.optimizer_settings`).
    lr: float | None = None
    weight_decay: float | None = None
    lr_milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])
    lr_gamma: float = 0.1
    seed: int = 0
    num_frames: int = 8
    #: Side of the square frames fed to the encoder (None: the encoder's own, 224 for CLIP and the
    #: embedded pair). A convolutional encoder accepts smaller frames: cheaper on CPU.
    image_size: int | None = None
    #: Training augmentation on the frames path (the feature cache sees the evaluation view).
    hflip: bool = False
    color_jitter: float = 0.0
    #: Validate (and write the best checkpoint) every this many steps; 0 = only at the end.
    val_every: int = 100
    val_episodes: int = 500
    val_queries: int = 1
    #: Stop when this many validations in a row bring no new best (0 = train every episode).
    early_stop_patience: int = 0
    #: Validate the untrained method before the first step, so the start (e.g. a method's
    #: training-free core) is a candidate ``best`` checkpoint: training is kept only if it helps.
    validate_at_start: bool = False
    #: Write the resumable ``last`` checkpoint every this many steps (and at the end).
    checkpoint_every: int = 50
    #: "auto": bfloat16/float16 autocast on CUDA, full precision on CPU; "off"; "bf16"; "fp16".
    amp: str = "auto"
    device: str = "auto"
    #: Feature cache directory for frozen-encoder methods (default: ``out/features``).
    features: str | None = None
    #: Frozen-encoder methods train from cached features (no augmentation) when True.
    use_feature_cache: bool = True
    progress: bool = True


@dataclass
class EvalConfig:
    """Everything that decides an evaluation: the same ``(seed, episode)`` pairs give the
    same episodes for every method, so methods are compared on identical tasks."""

    data: str = ""
    method: str | None = None
    backbone: str | None = None
    weights: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    #: A split file (``label/video_id`` per line) selecting the evaluation clips of ``data``.
    split_file: str | None = None
    classnames_file: str | None = None
    #: A run directory of ``fsar train`` (or one of its ``best.json`` / ``last.json``).
    checkpoint: str | None = None
    way: int = 5
    shot: int = 1
    queries: int = 1
    episodes: int = 10_000
    seed: int = 0
    #: Frames per clip and frame side; None: the checkpoint's (else 8 and the encoder's).
    num_frames: int | None = None
    image_size: int | None = None
    json: str | None = None
    png: str | None = None
    device: str = "auto"
    features: str | None = None
    use_feature_cache: bool = True
    progress: bool = True


C = TypeVar("C", TrainConfig, EvalConfig)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an unreadable file or a non-mapping is a :class:`ConfigError`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys to values")
    return loaded


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation, converting the safe cases (int -> float,
    tuple -> list). Anything else is an error naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if annotation is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation) or (Any,)
        return [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {annotation!r}")  # pragma: no cover


#: Keys of earlier fsar versions -> the config field that holds them now (a method option).
#: fsar 0.1 kept LGA's description cache as the top-level key ``descriptions``; it is read
#: into ``method_args`` so that its run directories, checkpoints and YAML files keep working.
LEGACY_METHOD_ARGS = ("descriptions",)


def _apply(config: C, values: dict[str, Any], source: str) -> C:
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    updates: dict[str, Any] = {}
    values = dict(values)
    for key in LEGACY_METHOD_ARGS:
        if key in values:
            legacy = values.pop(key)
            if legacy is not None:
                merged = dict(values.get("method_args") or dict(config.method_args))
                merged.setdefault(key, legacy)
                values["method_args"] = merged
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key {key!r} for {type(config).__name__}; "
                f"known keys: {', '.join(sorted(names))}"
            )
        updates[key] = _coerce(value, hints[key], f"{source}: {key}")
    return dataclasses.replace(config, **updates)


def _validate(config: TrainConfig | EvalConfig) -> None:
    if not config.data:
        raise ConfigError("no data root given (--data ROOT or `data:` in the config file)")
    positive = ["way", "shot", "queries", "episodes", "num_frames"]
    if isinstance(config, TrainConfig):
        positive += ["tasks_per_step", "val_episodes", "val_queries", "checkpoint_every"]
        if config.val_every < 0 or config.val_classes < 0 or config.early_stop_patience < 0:
            raise ConfigError("val_every, val_classes and early_stop_patience must be >= 0")
        if config.lr is not None and config.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {config.lr}")
        if any(not 0 < m < 1 for m in config.lr_milestones):
            raise ConfigError(
                f"lr_milestones are fractions of the training steps in (0, 1), got {config.lr_milestones}"
            )
        if config.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"amp must be one of auto, off, bf16, fp16; got {config.amp!r}")
        if config.split_file_dir and (config.val_data or config.val_classes):
            raise ConfigError("--split-file-dir provides the validation split; drop --val-data/--val-classes")
        if config.val_data and config.val_classes:
            raise ConfigError("give either --val-data or --val-classes, not both")
    if config.way < 2:
        raise ConfigError(f"way must be >= 2, got {config.way}")
    for name in positive:
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")


def resolve_config(
    cls: type[C],
    *,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    validate: bool = True,
    recipe: tuple[str, dict[str, Any]] | None = None,
) -> C:
    """Defaults, then a recipe's values, then the YAML file, then ``overrides`` (``None`` values
    mean "not given"). A method option given in ``overrides`` replaces that one recipe option.

    >>> resolve_config(TrainConfig, overrides={"data": "d", "way": 3}).way
    3
    """
    config = cls()
    if recipe is not None:  # a shipped recipe (fsar.recipes): (its name, its values for this config)
        name, values = recipe
        config = _apply(config, values, f"recipe {name}")
    if yaml_path is not None:
        values = load_yaml(yaml_path)
        for key in LEGACY_METHOD_ARGS:
            if key in values:
                log.warning("%s: the top-level key %r is deprecated and will be removed in the next release; "
                            "write it under method_args: {%s: ...}", yaml_path, key, key)
        config = _apply(config, values, str(yaml_path))
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        if recipe is not None and "method_options" in given:  # -O KEY=VALUE replaces one recipe option, not all
            given["method_options"] = {**config.method_options, **dict(given["method_options"])}
        config = _apply(config, given, "command line")
    if validate:
        _validate(config)
    return config


def config_to_dict(config: TrainConfig | EvalConfig) -> dict[str, Any]:
    """JSON-able form, with the config's kind so a sidecar can be read back unambiguously."""
    return {"kind": type(config).__name__, **dataclasses.asdict(config)}


def config_from_dict(values: dict[str, Any], *, source: str = "saved config") -> TrainConfig | EvalConfig:
    """Inverse of :func:`config_to_dict` (checks keys and types, no validation of ranges)."""
    values = dict(values)
    kind = values.pop("kind", "TrainConfig")
    classes = {"TrainConfig": TrainConfig, "EvalConfig": EvalConfig}
    if kind not in classes:
        raise ConfigError(f"{source}: unknown config kind {kind!r}")
    return _apply(classes[kind](), values, source)
