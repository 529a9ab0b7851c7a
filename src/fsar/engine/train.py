"""Episodic training: Adam, a multi-step schedule, gradient accumulation over tasks, AMP, DDP.

One optimiser step accumulates the gradients of ``tasks_per_step`` episodes (tasks); each
task's loss is divided by the number of tasks in the step, so the step's gradient is the
mean over its tasks whatever their number. Under ``torchrun`` each rank draws its own tasks
and DistributedDataParallel averages the gradients, so one step sees
``tasks_per_step * world_size`` tasks.

Reproducibility and ``--resume``: every random draw of a task (which episode, which frames,
which augmentation, dropout, which prompt template) is seeded from ``(seed, rank, task
index)`` alone. Restoring the trainable tensors, Adam's moments and the schedule position
from the ``last`` checkpoint therefore continues the run exactly: the next loss equals the
one the uninterrupted run computed.

Validation uses the validation source only (never the test split) and picks the ``best``
checkpoint by validation accuracy; without a validation source the ``last`` checkpoint is
the one kept. Before step 1 of a fresh run the method may estimate fixed statistics from the
run's first training episodes (:func:`prepare_from_training_episodes`: base-feature centring's
frame mean); on resume they come back from the checkpoint. ``validate_at_start`` also scores the untrained method (step 0), so a run whose
training never beats its start keeps the start. ``early_stop_patience`` ends the run once that
many validations in a row bring no new best (the ``last`` record then says ``stopped_early``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fsar.engine.checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_method_tensors,
    read_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from fsar.engine.config import TrainConfig, config_to_dict
from fsar.engine.distributed import DistInfo, all_reduce_mean, all_reduce_sum, derive_seed
from fsar.engine.evaluate import EpisodeSource, evaluate
from fsar.engine.logging import RunLogger, draw_learning_curve
from fsar.errors import ConfigError
from fsar.methods.base import FewShotMethod

__all__ = [
    "TrainError", "TrainHooks", "TrainSummary", "milestone_steps", "optimizer_settings",
    "prepare_from_training_episodes", "total_steps", "train",
]

log = logging.getLogger(__name__)


class TrainError(ConfigError):
    """A run that cannot train as configured (message says why)."""


@dataclass
class TrainHooks:
    """Callbacks for tests and tools. ``on_step_end(step, loss)`` runs after the step's
    checkpoint is written; an exception raised there stops the run like a crash would."""

    on_step_end: Callable[[int, float], None] | None = None


@dataclass
class TrainSummary:
    run_dir: Path
    steps: int
    start_step: int
    tasks_per_step_effective: int
    losses: list[float] = field(default_factory=list)
    best_val_accuracy: float | None = None
    best_val_ci95: float | None = None
    best_step: int | None = None
    validations_since_best: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def total_steps(config: TrainConfig) -> int:
    """Optimiser steps of a run: ``ceil(episodes / tasks_per_step)`` (the last may be partial)."""
    return math.ceil(config.episodes / config.tasks_per_step)


def milestone_steps(config: TrainConfig) -> list[int]:
    """The ``lr_milestones`` fractions as step numbers (where the lr is multiplied by lr_gamma)."""
    steps = total_steps(config)
    return sorted({max(1, round(fraction * steps)) for fraction in config.lr_milestones})


#: Adam settings when neither the config nor the method gives one.
DEFAULT_OPTIMIZER = {"lr": 1e-4, "weight_decay": 0.0, "betas": (0.9, 0.999)}


def optimizer_settings(config: TrainConfig, method: torch.nn.Module) -> dict:
    """Adam's ``lr``, ``weight_decay`` and ``betas`` for a run: the config's values where given
    (``--lr``, ``--weight-decay``), else the method's ``optimizer_defaults()`` (e.g. clip-spm's
    release settings, betas (0.5, 0.999)), else :data:`DEFAULT_OPTIMIZER`."""
    settings = {**DEFAULT_OPTIMIZER, **method.optimizer_defaults()}
    if config.lr is not None:
        settings["lr"] = config.lr
    if config.weight_decay is not None:
        settings["weight_decay"] = config.weight_decay
    settings["betas"] = tuple(float(b) for b in settings["betas"])
    return settings


def tasks_in_step(config: TrainConfig, step: int) -> range:
    """Task indices (per rank) accumulated into 1-based optimiser ``step``."""
    first = (step - 1) * config.tasks_per_step
    return range(first, min(first + config.tasks_per_step, config.episodes))


def _amp(config: TrainConfig, device: torch.device):
    """(autocast context factory, GradScaler or None) for the configured precision."""
    mode = config.amp
    if mode == "auto":
        if device.type != "cuda":
            mode = "off"
        else:
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "off":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype)), scaler


def prepare_from_training_episodes(
    method: FewShotMethod, config: TrainConfig, train_source: EpisodeSource, dist: DistInfo
) -> dict:
    """Before step 1 of a fresh run: :meth:`FewShotMethod.prepare_training` on the run's own
    first training episodes (task indices 0, 1, ..., each drawn under the seed that task gets
    in training; the method stops the iteration), in training mode without gradients; sums
    over ranks when distributed."""
    device = dist.device

    def episodes():
        # As many as the method asks for, even past a short run's last task (or in a run of 0
        # episodes), so a run's length does not change its start.
        for task_index in itertools.count():
            torch.manual_seed(derive_seed(config.seed, dist.rank, task_index))
            yield train_source.sample(task_index, train=True).to(device)

    method.train()
    with torch.no_grad():
        prepared = method.prepare_training(
            episodes(), reduce_sum=(lambda tensor: all_reduce_sum(tensor, dist)) if dist.enabled else None
        )
    if prepared:
        log.info("prepared from training episodes: %s", prepared)
    return prepared


def train(
    config: TrainConfig,
    *,
    method: FewShotMethod,
    train_source: EpisodeSource,
    val_source: EpisodeSource | None = None,
    dist: DistInfo | None = None,
    resume: bool = False,
    hooks: TrainHooks | None = None,
    extra_record: dict | None = None,
) -> TrainSummary:
    """Meta-train ``method`` on episodes of ``train_source``; checkpoints go to ``config.out``.

    ``train_source`` must already be this rank's source (its own episode seed).
    ``extra_record`` is stored in every checkpoint record (e.g. training class names).
    """
    from tqdm import tqdm

    dist = dist or DistInfo()
    hooks = hooks or TrainHooks()
    device = dist.device
    run_dir = Path(config.out)
    method_name = method.name or config.method
    backbone = method.backbone_name or config.backbone
    named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    if not method.is_trainable():
        raise TrainError(
            f"method {method_name!r} has nothing to train (training-free); evaluate it with `fsar eval`"
        )
    param_names = [n for n, _ in named]
    method.to(device)
    adam = optimizer_settings(config, method)
    optimizer = torch.optim.Adam([p for _, p in named], **adam)
    steps = total_steps(config)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestone_steps(config), gamma=config.lr_gamma)
    resolved = config_to_dict(config)
    summary = TrainSummary(run_dir, steps, 0, config.tasks_per_step * dist.world_size)

    if resume:
        try:
            checkpoint = read_checkpoint(run_dir, prefer="last")
        except CheckpointError as error:
            raise TrainError(f"cannot resume: {error}") from None
        checkpoint.check_compatible(method=method_name, backbone=backbone)
        load_method_tensors(method, checkpoint)
        checkpoint.load_optimizer(optimizer, param_names)
        summary.start_step = checkpoint.step
        scheduler.last_epoch = checkpoint.step
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # noqa: SLF001
        summary.best_val_accuracy = checkpoint.record.get("best_val_accuracy")
        summary.best_val_ci95 = checkpoint.record.get("best_val_ci95")
        summary.best_step = checkpoint.record.get("best_step")
        summary.validations_since_best = int(checkpoint.record.get("validations_since_best") or 0)
        summary.stopped_early = bool(checkpoint.record.get("stopped_early"))
        if checkpoint.step >= steps:
            log.info("%s: already trained for %d steps", run_dir, checkpoint.step)

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # what a run killed mid-write left (a live writer's files stay)
        atomic_write_json(run_dir / "config.json", resolved)
    model: torch.nn.Module = method
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        import inspect

        # Buffers are not synchronised in forward: every rank builds identical ones from the seed,
        # and a frozen encoder's never change. (Newer torch renamed the switch.)
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        model = DistributedDataParallel(
            method,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
            **no_buffer_sync,
        )
    autocast, scaler = _amp(config, device)
    logger = RunLogger(run_dir, enabled=dist.is_main, resume_step=summary.start_step if resume else None)
    started = time.perf_counter()

    def record(step: int) -> dict:
        return {
            **(extra_record or {}),
            "total_steps": steps,
            "world_size": dist.world_size,
            "tasks_per_step_effective": summary.tasks_per_step_effective,
            "best_val_accuracy": summary.best_val_accuracy,
            "best_val_ci95": summary.best_val_ci95,
            "best_step": summary.best_step,
            "validations_since_best": summary.validations_since_best,
            "stopped_early": summary.stopped_early,
            "optimizer": {"name": "Adam", **adam, "betas": list(adam["betas"])},
        }

    def save(name: str, step: int, with_optimizer: bool) -> None:
        save_checkpoint(
            run_dir, name, method=method, method_name=method_name, backbone=backbone, config=resolved,
            step=step, optimizer=optimizer if with_optimizer else None, param_names=param_names,
            extra=record(step),
        )

    def run_validation(step: int) -> None:
        result = evaluate(method, val_source, episodes=config.val_episodes, device=device,
                          progress=config.progress, desc=f"val @{step}")
        logger.log_val(step, accuracy=result.accuracy, ci95=result.ci95, episodes=result.episodes,
                       elapsed_s=time.perf_counter() - started)
        log.info("step %d: val accuracy %.2f ± %.2f%%", step, 100 * result.accuracy, 100 * result.ci95)
        if summary.best_val_accuracy is None or result.accuracy > summary.best_val_accuracy:
            summary.best_val_accuracy, summary.best_val_ci95 = result.accuracy, result.ci95
            summary.best_step = step
            summary.validations_since_best = 0
            save("best", step, with_optimizer=False)
        else:
            summary.validations_since_best += 1

    if summary.start_step == 0:
        prepare_from_training_episodes(method, config, train_source, dist)
    if ((config.validate_at_start or steps == 0) and val_source is not None and dist.is_main
            and summary.start_step == 0 and summary.best_step is None):
        run_validation(0)
    if steps == 0 and dist.is_main:  # --episodes 0: the prepared start is the run's checkpoint
        save("last", 0, with_optimizer=True)
    first_step = steps + 1 if summary.stopped_early else summary.start_step + 1
    bar = tqdm(range(first_step, steps + 1), desc=f"train {method_name}", disable=not (config.progress and dist.is_main),
               unit="step", initial=summary.start_step, total=steps)
    try:
        for step in bar:
            method.train()  # a frozen encoder stays in eval mode (FewShotMethod.train)
            optimizer.zero_grad(set_to_none=True)
            tasks = tasks_in_step(config, step)
            step_loss = 0.0
            for position, task_index in enumerate(tasks):
                torch.manual_seed(derive_seed(config.seed, dist.rank, task_index))
                inputs = train_source.sample(task_index, train=True).to(device)
                if inputs.query_labels is None:
                    raise TrainError(f"training episode {task_index} has no query labels")
                last_task = position == len(tasks) - 1
                sync = contextlib.nullcontext() if (last_task or not dist.enabled) else model.no_sync()
                with sync:
                    with autocast():
                        output = model(inputs)
                    if output.loss is None:
                        raise TrainError(f"method {method_name!r} returned no loss in training mode")
                    loss = output.loss.float() / len(tasks)
                    if not torch.isfinite(loss):
                        raise TrainError(f"non-finite loss {loss.item()} at step {step}, task {task_index}")
                    (scaler.scale(loss) if scaler else loss).backward()
                step_loss += loss.item()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step_loss = all_reduce_mean(step_loss, dist)
            summary.losses.append(step_loss)
            logger.log_train(step, loss=step_loss, lr=lr, tasks=len(tasks) * dist.world_size,
                             elapsed_s=time.perf_counter() - started)
            bar.set_postfix(loss=f"{step_loss:.4f}")

            validate = val_source is not None and (
                step == steps or (config.val_every and step % config.val_every == 0)
            )
            if validate and dist.is_main:
                run_validation(step)
            stop = bool(validate and config.early_stop_patience
                        and summary.validations_since_best >= config.early_stop_patience)
            if dist.enabled and validate:  # every rank stops at the same step
                stop = all_reduce_mean(float(stop), dist) > 0
            if stop:
                summary.stopped_early = True
                log.info("step %d: %d validations without a new best (best at step %s); stopping early",
                         step, summary.validations_since_best, summary.best_step)
            if dist.is_main and (stop or step % config.checkpoint_every == 0 or step == steps):
                save("last", step, with_optimizer=True)
            if hooks.on_step_end is not None:
                hooks.on_step_end(step, step_loss)
            if stop:
                summary.steps = step
                break
    finally:
        bar.close()
        logger.close()
    summary.seconds = time.perf_counter() - started
    if dist.is_main:
        draw_learning_curve(logger.csv_path, run_dir / "learning_curve.png", title=f"{method_name} / {backbone}")
    return summary
