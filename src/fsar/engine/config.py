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

from fsar.errors import ConfigError  # the one hierarchy (fsar.errors); re-exported here

__all__ = [
    "ConfigError",
    "EvalConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_yaml",
    "resolve_config",
    "validate_config",
]


log = logging.getLogger(__name__)


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
    #: Classes per validation episode (None: ``way``). A validation split of held-out *classes*
    #: may have fewer classes than the training way (ssv2-mini has 2 to spare).
    val_way: int | None = None
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
        if isinstance(value, str):
            # YAML 1.1 reads `lr: 1e-4` (no dot) as the string "1e-4"; it is a number to the user.
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {annotation!r}")  # pragma: no cover


coerce_value = _coerce
"""Check ``value`` against a type annotation (``int``, ``float | None``, ``list[float]`` ...),
converting the safe cases; a :class:`ConfigError` naming ``where`` otherwise."""


#: Keys of earlier fsar versions -> the config field that holds them now (a method option).
#: fsar 0.1 kept LGA's description cache as the top-level key ``descriptions``; it is read
#: into ``method_args`` so that its run directories, checkpoints and YAML files keep working.
LEGACY_METHOD_ARGS = ("descriptions",)


def _apply(config: C, values: dict[str, Any], source: str, sources: dict[str, str] | None = None) -> C:
    """``config`` with ``values`` (from ``source``) applied; ``sources`` records key -> source."""
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
        if sources is not None:
            sources[key] = source
    return dataclasses.replace(config, **updates)


#: Allowed ranges, checked by :func:`validate_config` (the message quotes them).
#: ``lr_gamma`` is in (0, 1]: the rate drops (or, at 1, stays) at each milestone; a factor above 1
#: would raise it and one <= 0 would stop or reverse training, neither a schedule anyone means.
RANGES: dict[str, str] = {
    "way": "an integer >= 2",
    "shot": "an integer >= 1",
    "queries": "an integer >= 1",
    "episodes": "an integer >= 1",
    "num_frames": "an integer >= 1",
    "image_size": "an integer >= 1 (or unset: the encoder's own size)",
    "seed": "an integer in 0..2**63-1",
    "tasks_per_step": "an integer >= 1",
    "val_episodes": "an integer >= 1",
    "val_queries": "an integer >= 1",
    "val_way": "an integer >= 2 (or unset: --way)",
    "checkpoint_every": "an integer >= 1",
    "val_every": "an integer >= 0 (0: validate only at the end)",
    "val_classes": "an integer >= 0",
    "early_stop_patience": "an integer >= 0 (0: no early stopping)",
    "lr": "a finite number > 0",  # or unset: the method's own default
    "weight_decay": "a finite number >= 0",
    "lr_gamma": "a number in (0, 1]",
    "lr_milestones": "fractions of the training steps, each in (0, 1)",
    "color_jitter": "a finite number >= 0",
    "amp": "one of auto, off, bf16, fp16",
}

_MIN_INT = {
    "way": 2, "shot": 1, "queries": 1, "episodes": 1, "num_frames": 1, "image_size": 1, "seed": 0,
    "tasks_per_step": 1, "val_episodes": 1, "val_queries": 1, "val_way": 2, "checkpoint_every": 1,
    "val_every": 0, "val_classes": 0, "early_stop_patience": 0,
}


def _flag(key: str) -> str:
    return "--frames" if key == "num_frames" else "--" + key.replace("_", "-")


#: Training's side of a shared key whose range differs from evaluation's: 0 training episodes
#: is a run of the method's preparation alone (its training-free start).
TRAIN_RANGES: dict[str, str] = {
    **RANGES,
    "episodes": "an integer >= 0 (0: no training step, only the method's preparation, e.g. base-feature centring)",
}
_TRAIN_MIN_INT = {**_MIN_INT, "episodes": 0}


def _bad(key: str, value: Any, sources: dict[str, str], *, training: bool = False) -> ConfigError:
    source = sources.get(key)
    if source is None or source == "command line":
        where = f"{_flag(key)} / `{key}:`" if source is None else _flag(key)
    else:
        where = f"{source}: {key}"
    return ConfigError(f"{where} must be {(TRAIN_RANGES if training else RANGES)[key]}, got {value!r}")


def validate_config(config: TrainConfig | EvalConfig, sources: dict[str, str] | None = None) -> None:
    """Check every value against its allowed range (:data:`RANGES`); the error names the flag or
    the YAML file and key, the range and the value. ``sources`` maps keys to where they came from."""
    import math

    sources = sources or {}
    fields = {f.name for f in dataclasses.fields(config)}
    if not config.data:
        raise ConfigError("no data root given (--data ROOT or `data:` in the config file)")
    training = isinstance(config, TrainConfig)
    for key, minimum in (_TRAIN_MIN_INT if training else _MIN_INT).items():
        if key not in fields:
            continue
        value = getattr(config, key)
        if value is None and key in ("image_size", "num_frames", "val_way"):
            continue
        if value < minimum or (key == "seed" and value >= 2**63):
            raise _bad(key, value, sources, training=training)
    if isinstance(config, TrainConfig):
        if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
            raise _bad("lr", config.lr, sources)
        if config.weight_decay is not None and not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
            raise _bad("weight_decay", config.weight_decay, sources)
        if not (0 < config.lr_gamma <= 1):  # also refuses nan
            raise _bad("lr_gamma", config.lr_gamma, sources)
        if any(not 0 < m < 1 for m in config.lr_milestones):
            raise _bad("lr_milestones", config.lr_milestones, sources)
        if not (math.isfinite(config.color_jitter) and config.color_jitter >= 0):
            raise _bad("color_jitter", config.color_jitter, sources)
        if config.amp not in ("auto", "off", "bf16", "fp16"):
            raise _bad("amp", config.amp, sources)
        if config.split_file_dir and (config.val_data or config.val_classes):
            raise ConfigError("--split-file-dir provides the validation split; drop --val-data/--val-classes")
        if config.val_data and config.val_classes:
            raise ConfigError("give either --val-data or --val-classes, not both")
    _check_output_paths(config)
    if config.device != "auto":
        import torch

        try:
            torch.device(config.device)
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"--device / `device:` must be auto, cpu, cuda, cuda:N (or another torch device), got {config.device!r}"
            ) from None


def _check_output_paths(config: TrainConfig | EvalConfig) -> None:
    """Outputs that could never be written are refused before any work: a run directory that is a
    file, a result file that is a folder, a parent that is a file."""
    outputs = [("out", "folder")] if isinstance(config, TrainConfig) else [("json", "file"), ("png", "file")]
    for key, kind in outputs:
        value = getattr(config, key, None)
        if not value:
            continue
        path = Path(value)
        if kind == "folder" and path.exists() and not path.is_dir():
            raise ConfigError(f"{_flag(key)} {value}: is a file, not a run folder")
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{_flag(key)} {value}: is a folder; give a file name")
        parent = path if kind == "folder" else path.parent
        for ancestor in (parent, *parent.parents):
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise ConfigError(f"{_flag(key)} {value}: {ancestor} is a file, not a folder")
                break


_validate = validate_config  # the older private name


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
    sources: dict[str, str] = {}
    if recipe is not None:  # a shipped recipe (fsar.recipes): (its name, its values for this config)
        name, values = recipe
        config = _apply(config, values, f"recipe {name}", sources)
    if yaml_path is not None:
        values = load_yaml(yaml_path)
        for key in LEGACY_METHOD_ARGS:
            if key in values:
                log.warning("%s: the top-level key %r is deprecated and will be removed in the next release; "
                            "write it under method_args: {%s: ...}", yaml_path, key, key)
        config = _apply(config, values, str(yaml_path), sources)
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        if recipe is not None and "method_options" in given:  # -O KEY=VALUE replaces one recipe option, not all
            given["method_options"] = {**config.method_options, **dict(given["method_options"])}
        config = _apply(config, given, "command line", sources)
    if validate:
        validate_config(config, sources)
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
