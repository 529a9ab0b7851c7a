"""From a resolved config to a finished run: what ``fsar train`` and ``fsar eval`` call.

This is the glue between the data layer, the method registry, the feature cache and the
loops of :mod:`fsar.engine.train` / :mod:`fsar.engine.evaluate`:

* which clips train and which validate (split files, ``--val-data`` or held-out classes;
  the test split is never opened during training),
* building the method (from the config, or from a checkpoint's saved config),
* frames or cached features (:mod:`fsar.engine.sources`),
* ``torchrun`` set-up and seeding.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fsar.data.episodes import EpisodeError
from fsar.data.manifest import Manifest
from fsar.engine.checkpoint import Checkpoint, CheckpointError, load_method_tensors, read_checkpoint
from fsar.engine.config import ConfigError, EvalConfig, TrainConfig, config_from_dict, config_to_dict
from fsar.engine.distributed import DistInfo, derive_seed, init_distributed, shutdown_distributed
from fsar.engine.evaluate import EvalResult, evaluate, save_result
from fsar.engine.sources import episode_source
from fsar.engine.train import TrainHooks, TrainSummary, train
from fsar.errors import FsarError, ModelError
from fsar.methods.base import FewShotMethod

__all__ = [
    "EvalOutcome",
    "build_method",
    "inference_tags",
    "method_from_checkpoint",
    "run_evaluation",
    "run_training",
    "training_manifests",
]

log = logging.getLogger(__name__)

#: Settings that may change when a run is resumed (the rest must match the checkpoint).
RESUME_MUTABLE = {"episodes", "progress", "device", "val_every", "checkpoint_every", "val_episodes", "features"}


def build_method(
    method: str,
    *,
    backbone: str,
    weights: str | None = None,
    method_options: dict[str, Any] | None = None,
    method_args: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
) -> FewShotMethod:
    """``fsar.create_method`` with the options of a config (errors name the method), then the
    method's own resources (:meth:`FewShotMethod.load_resources` with ``method_args``, for
    ``class_names``: every class the run will show it)."""
    from fsar.methods import create_method, list_methods

    if method not in list_methods():
        raise ConfigError(f"unknown method {method!r}; available: {', '.join(list_methods())}")
    method_args = _checked_method_args(method, method_args)
    built = create_method(method, backbone=backbone, weights=weights, **(method_options or {}))
    try:
        built.load_resources(method_args, class_names=class_names)
    except FsarError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise ModelError(f"{method}: cannot load its resources ({error})") from error
    return built


def _checked_method_args(method: str, values: dict[str, Any] | None) -> dict[str, Any]:
    from fsar.methods import check_method_options

    values = {k: v for k, v in (values or {}).items() if v is not None}
    try:
        check_method_options(method, values)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return values


def training_manifests(config: TrainConfig) -> tuple[Manifest, Manifest | None]:
    """(training manifest, validation manifest or None) for a training config.

    ``split_file_dir``: ``train.txt`` and ``val.txt`` of that directory (``test.txt`` is never
    read). Otherwise every class of ``data`` trains, and validation comes from ``val_data`` or
    from the last ``val_classes`` classes of ``data`` (held out of training).
    """
    progress = config.progress
    if config.split_file_dir:
        from fsar.data.splits import SplitError, resolve_training_splits

        try:  # a shipped split's name (--splits ssv2-small) or a folder with train.txt [+ val.txt]
            pair = resolve_training_splits(config.split_file_dir)
        except SplitError as error:
            raise ConfigError(str(error)) from None
        train_manifest = Manifest.from_split_file(config.data, pair.train.path, classnames_file=pair.train.classnames_file,
                                                  progress=progress)
        if pair.val is not None:
            val_manifest = Manifest.from_split_file(config.data, pair.val.path, classnames_file=pair.val.classnames_file,
                                                    progress=progress)
        else:
            log.warning("%s has no val.txt: no validation, the last checkpoint is kept", config.split_file_dir)
            val_manifest = None
        return train_manifest, val_manifest
    everything = Manifest.from_folder(config.data, progress=progress)
    if config.val_data:
        return everything, Manifest.from_folder(config.val_data, progress=progress)
    if config.val_classes:
        if config.val_classes >= len(everything.classes):
            raise ConfigError(
                f"--val-classes {config.val_classes} leaves no training class ({config.data} has "
                f"{len(everything.classes)} classes)"
            )
        names = everything.classes
        cut = len(names) - config.val_classes
        return everything.subset(names[:cut]), everything.subset(names[cut:])
    return everything, None


def _check_resume(config: TrainConfig) -> TrainConfig:
    """Refuse resuming with settings that change what the run is."""
    checkpoint = read_checkpoint(config.out, prefer="last")
    saved = config_from_dict(checkpoint.config, source=str(checkpoint.path))
    different = [
        f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(config, f.name)!r}"
        for f in dataclasses.fields(config)
        if f.name not in RESUME_MUTABLE and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if different:
        raise ConfigError(
            f"--resume of {config.out} with different settings than the checkpoint: {'; '.join(different)}"
        )
    return config


def run_training(
    config: TrainConfig,
    *,
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainSummary:
    """Train ``config.method`` as configured (single process, or one rank under ``torchrun``)."""
    if resume:
        _check_resume(config)
    dist = init_distributed(config.device)
    try:
        return _run_training(config, dist, resume=resume, hooks=hooks)
    finally:
        shutdown_distributed(dist)


def _run_training(config, dist: DistInfo, *, resume, hooks) -> TrainSummary:
    train_manifest, val_manifest = training_manifests(config)
    torch.manual_seed(config.seed)  # every rank builds identical initial weights
    method = build_method(
        config.method, backbone=config.backbone, weights=config.weights, method_options=config.method_options,
        method_args=config.method_args,
        class_names=train_manifest.classes + (val_manifest.classes if val_manifest else []),
    )
    method.set_training_classes(list(train_manifest.classes))
    method.to(dist.device)
    features_root = Path(config.features) if config.features else None
    barrier = None
    if dist.enabled:
        from torch import distributed as torch_distributed

        barrier = torch_distributed.barrier

    def source(manifest: Manifest, role: str, *, seed: int, queries: int, way: int):
        return episode_source(
            method, manifest, way=way, shot=config.shot, queries=queries, seed=seed,
            num_frames=config.num_frames, image_size=config.image_size, hflip=config.hflip,
            color_jitter=config.color_jitter, use_feature_cache=config.use_feature_cache, features=features_root, extract_to=Path(config.out) / "features" / role, weights=config.weights,
            progress=config.progress and dist.is_main, may_extract=dist.is_main, before_open=barrier,
        )

    train_source = source(train_manifest, "train", seed=derive_seed(config.seed, dist.rank), queries=config.queries,
                          way=config.way)
    val_source = None
    if val_manifest is not None:
        val_way = config.val_way or config.way
        try:
            val_source = source(val_manifest, "val", seed=derive_seed(config.seed, 7919), queries=config.val_queries,
                                way=val_way)
        except EpisodeError as error:  # say which split, and the flag that fits it to few classes
            raise EpisodeError(f"validation split: {error} (--val-way N validates on N-way episodes; "
                               f"now {val_way})") from None
    record = {
        "training_classes": list(train_manifest.classes),
        "validation_classes": list(val_manifest.classes) if val_manifest is not None else [],
        # The method's resolved config: method_from_checkpoint rebuilds the method from it.
        "method_config": method.config_dict(),
    }
    return train(config, method=method, train_source=train_source, val_source=val_source, dist=dist,
                 resume=resume, hooks=hooks, extra_record=record)


def method_from_checkpoint(
    checkpoint: Checkpoint,
    *,
    method: str | None = None,
    backbone: str | None = None,
    class_names: list[str] | None = None,
    method_args: dict[str, Any] | None = None,
) -> tuple[FewShotMethod, TrainConfig]:
    """Rebuild the trained method exactly as configured in the checkpoint, and load its tensors.

    The method is rebuilt from the resolved config saved beside the tensors (the record's
    ``method_config``, via :meth:`FewShotMethod.from_config`); a record without one (written
    by code that did not save it) falls back to the run's ``method_options``. Its own
    options are the run's ``method_args`` updated by ``method_args`` given now.
    ``method`` / ``backbone``, when given, must match the checkpoint's (a clear error otherwise).
    """
    from fsar.methods import create_method, list_methods, method_from_config

    checkpoint.check_compatible(method=method, backbone=backbone)
    saved = config_from_dict(checkpoint.config, source=str(checkpoint.path))
    if not isinstance(saved, TrainConfig):
        raise ConfigError(f"{checkpoint.path}: holds no training config")
    if saved.method not in list_methods():
        raise CheckpointError(
            f"{checkpoint.path}: trained with method {saved.method!r}, which this fsar does not have "
            f"(available: {', '.join(list_methods())})"
        )
    values = _checked_method_args(saved.method, {**saved.method_args, **(method_args or {})})
    method_config = checkpoint.record.get("method_config")
    if isinstance(method_config, dict):
        try:
            built = method_from_config(saved.method, method_config)
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"{checkpoint.path}: cannot rebuild {saved.method!r} from its saved method_config ({error}); "
                "was it written by another fsar version? Use that version, or train again (records are "
                "digest-protected: an edited record is refused)"
            ) from None
    else:
        built = create_method(saved.method, backbone=saved.backbone, weights=saved.weights, **saved.method_options)
    built.load_resources(values, class_names=class_names)
    training_classes = checkpoint.record.get("training_classes")
    if training_classes:
        built.set_training_classes(list(training_classes))
    load_method_tensors(built, checkpoint)
    return built, saved


def inference_tags(method) -> dict[str, str]:
    """What every printed result of ``method`` must name besides its name (e.g. a transductive
    option: clip-spm's ``{"padm": "transductive"}``): the method's ``inference_tags()`` hook."""
    return {str(k): str(v) for k, v in method.inference_tags().items()}


def tags_label(tags: dict[str, str]) -> str:
    """``" [padm=transductive]"`` for printing after a method name ("" without tags)."""
    return " [" + ", ".join(f"{k}={v}" for k, v in tags.items()) + "]" if tags else ""


@dataclass
class EvalOutcome:
    result: EvalResult
    record: dict[str, Any]
    config: EvalConfig


def eval_split(config: EvalConfig):
    """The evaluation split (a :class:`fsar.data.splits.SplitRef`; a shipped name or a file), or None."""
    if not config.split_file:
        return None
    from fsar.data.splits import SplitError, resolve_split

    try:
        return resolve_split(config.split_file, classnames_file=config.classnames_file)
    except SplitError as error:
        raise ConfigError(str(error)) from None


def eval_manifest(config: EvalConfig) -> Manifest:
    split = eval_split(config)
    if split is not None:
        return Manifest.from_split_file(config.data, split.path, classnames_file=split.classnames_file,
                                        progress=config.progress)
    return Manifest.from_folder(config.data, progress=config.progress)


def run_evaluation(config: EvalConfig, *, method: FewShotMethod | None = None) -> EvalOutcome:
    """Evaluate a method (trained from ``config.checkpoint``, or training-free) on ``config.episodes``
    seeded episodes of ``config.data``; writes ``config.json`` / ``config.png`` when set."""
    import tempfile

    manifest = eval_manifest(config)
    checkpoint_info: dict[str, Any] | None = None
    if method is None:
        if config.checkpoint:
            checkpoint = read_checkpoint(config.checkpoint)
            method, saved = method_from_checkpoint(
                checkpoint, method=config.method, backbone=config.backbone, class_names=manifest.classes,
                method_args=config.method_args,
            )
            config = dataclasses.replace(
                config, method=saved.method, backbone=saved.backbone, weights=saved.weights,
                num_frames=config.num_frames or saved.num_frames, image_size=config.image_size or saved.image_size,
            )
            checkpoint_info = {"path": str(checkpoint.path), "step": checkpoint.step,
                               "best_val_accuracy": checkpoint.record.get("best_val_accuracy")}
        else:
            if not config.method:
                raise ConfigError("give --method (or --checkpoint RUN_DIR)")
            if not config.backbone:
                config = dataclasses.replace(config, backbone="effnet-lite0+minilm")
            torch.manual_seed(config.seed)
            method = build_method(
                config.method, backbone=config.backbone, weights=config.weights,
                method_options=config.method_options, method_args=config.method_args,
                class_names=manifest.classes,
            )
            if method.is_trainable():
                log.warning("evaluating %s without --checkpoint: its trainable parts are untrained (random)",
                            config.method)
    if config.num_frames is None:
        config = dataclasses.replace(config, num_frames=8)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if config.device == "auto" else config.device))
    method.to(device)
    with tempfile.TemporaryDirectory(prefix="fsar-features-") as scratch:
        extract_to = Path(config.checkpoint) / "features" / "eval" if config.checkpoint and Path(config.checkpoint).is_dir() else Path(scratch)
        source = episode_source(
            method, manifest, way=config.way, shot=config.shot, queries=config.queries, seed=config.seed,
            num_frames=config.num_frames, image_size=config.image_size,
            use_feature_cache=config.use_feature_cache, features=config.features, extract_to=extract_to, weights=config.weights, progress=config.progress,
        )
        result = evaluate(method, source, episodes=config.episodes, device=device, progress=config.progress,
                          desc=f"eval {config.method}")
    from fsar.engine.sources import left_out_clip

    left_out = [left_out_clip(s, s.reason, "listing") for s in manifest.skipped] + list(getattr(source, "left_out", []))
    header = {
        "method": config.method,
        # settings a reader must know to compare the figure (clip-spm: {"padm": "transductive"})
        "inference": inference_tags(method),
        "backbone": config.backbone,
        "way": config.way,
        "shot": config.shot,
        "queries": config.queries,
        "episodes": config.episodes,
        "seed": config.seed,
        "data": str(config.data),
        "split_file": config.split_file,
        "split": (lambda ref: ref.provenance() if ref is not None else None)(eval_split(config)),
        # Every clip left out, at any stage (listing, extraction, episodes), with the reason.
        "skipped_clips": len(left_out),
        "skipped": left_out,
        "checkpoint": checkpoint_info,
        "config": config_to_dict(config),
    }
    record = save_result(result, config.json, header=header, png_path=config.png)
    return EvalOutcome(result, record, config)
