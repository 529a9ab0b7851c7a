"""``fsar train``: episodic meta-training with validation, checkpoints, logs and a learning curve.

    fsar train --data ROOT [--split-file-dir DIR] --method M --backbone B [--weights W]
               --way 5 --shot 1 --episodes N --out RUN_DIR [--resume]
    torchrun --nproc_per_node 2 -m fsar train ...      # DistributedDataParallel
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import add_command, add_json, emit_json
from fsar.cli._engine_args import add_common, resolve, user_errors

ORDER = 10

EPILOG = """\
data and validation:
  With --split-file-dir DIR (train.txt, val.txt, test.txt: one label/video_id per line) the
  train split trains and the val split validates; test.txt is never opened. Without split
  files every class of ROOT trains; validation then comes from --val-data ROOT2, or from the
  last --val-classes N classes of ROOT (held out of training). With neither, no validation
  runs and the last checkpoint is the one kept. The best checkpoint is picked by validation
  accuracy, never by the test split.

what RUN_DIR holds:
  config.json            the resolved config (defaults < --config F.yaml < flags)
  last.json, best.json   checkpoint records (method, backbone, step, config, fsar version)
                         naming *-model-step*.safetensors (trainable tensors only) and, for
                         last, optimizer-step*.safetensors; written atomically
  metrics.csv, tb/       training loss / lr and validation accuracy ±95% CI (TensorBoard)
  learning_curve.png     drawn at the end
  features/              cached features of a frozen encoder (extracted on first use)

schedule:
  --episodes N tasks per process, --tasks-per-step K of them per Adam step (gradient
  accumulation); the lr is multiplied by --lr-gamma at each fraction in --lr-milestones of
  the steps. Under torchrun each rank draws its own tasks: a step sees K x world size tasks.
  --episodes 0 takes no step: the run's checkpoint is the method's prepared training-free start
  (base-feature centring estimated from the training classes), validated when there is a split.
  --resume continues RUN_DIR from last.json exactly (same next loss as without the
  interruption); only --episodes, --val-every, --val-episodes, --checkpoint-every,
  --device, --features and progress may change.

examples:
  fsar train --data synth/ --val-classes 5 --method ma-fsar --backbone effnet-lite0+minilm \\
      --way 5 --shot 1 --episodes 2000 --out runs/ma
  fsar train --recipe ma-fsar/ssv2-small-1shot --data /data/ssv2          # the paper's settings
  fsar train --data ssv2/ --splits ssv2-small --method ma-fsar \\
      --backbone clip-vit-b32 --weights openai/clip-vit-base-patch32 -O dataset_kind=temporal \\
      --episodes 100000 --out runs/ssv2-ma
"""


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "train",
        help="meta-train a method on episodes (validation, checkpoints, resume, DDP)",
        description="Meta-train a few-shot method on M-way K-shot episodes of a data set.",
        epilog=EPILOG,
    )
    add_common(parser, what="training")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (checkpoints, logs, config)")
    parser.add_argument(
        "--splits", "--split-file-dir", dest="split_file_dir", metavar="NAME|DIR",
        help="training splits: a shipped benchmark (fsar data splits: its train + val parts) or a directory with "
             "train.txt and val.txt (test.txt is never read)",
    )
    parser.add_argument("--val-data", metavar="ROOT2", help="validation data root (when ROOT has no split files)")
    parser.add_argument("--val-classes", type=int, metavar="N", help="hold the last N classes of ROOT out for validation")
    parser.add_argument("--tasks-per-step", type=int, metavar="K", help="episodes accumulated per Adam step (default 16)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the method's, else 1e-4; clip-spm 1e-5)")
    parser.add_argument("--weight-decay", type=float,
                        help="Adam weight decay (default: the method's, else 0; clip-spm 5e-5)")
    parser.add_argument("--lr-milestones", type=float, nargs="+", metavar="F",
                        help="fractions of the steps where the lr drops (default 0.6 0.8)")
    parser.add_argument("--lr-gamma", type=float, help="lr factor at each milestone (default 0.1)")
    parser.add_argument("--val-every", type=int, metavar="STEPS", help="validate every this many steps (default 100)")
    parser.add_argument("--val-episodes", type=int, help="episodes per validation (default 500)")
    parser.add_argument("--val-queries", type=int, help="query clips per class in validation episodes (default 1)")
    parser.add_argument("--val-way", type=int, metavar="N",
                        help="classes per validation episode (default --way; fewer when the validation classes are few)")
    parser.add_argument("--early-stop-patience", type=int, metavar="N",
                        help="stop after N validations in a row without a new best (default 0: never)")
    parser.add_argument("--validate-at-start", action="store_const", const=True,
                        help="validate before step 1, so the untrained method can be the best checkpoint")
    parser.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="write last.json every this many steps (default 50)")
    parser.add_argument("--hflip", action="store_const", const=True,
                        help="random horizontal flips in training (off: they swap SSv2's left/right classes)")
    parser.add_argument("--no-hflip", dest="hflip", action="store_const", const=False,
                        help="no horizontal flips (overrides a recipe or --config that turns them on)")
    parser.add_argument("--color-jitter", type=float, metavar="S", help="colour jitter strength in training (default 0)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), help="mixed precision (auto: on CUDA only)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last checkpoint")
    add_json(parser, what="the run's summary (steps, best validation accuracy, run directory)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from fsar.engine.config import TrainConfig
    from fsar.engine.run import run_training

    if args.resume:
        config = _resumed_config(args)
    else:
        config = resolve(args, TrainConfig)
        if (Path(config.out) / "last.json").exists():
            raise CLIError(f"{config.out} already holds a run; add --resume to continue it, or pick another --out")
    try:
        summary = run_training(config, resume=args.resume)
    except user_errors() as error:
        raise CLIError(str(error)) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    record = {
        "method": config.method, "backbone": config.backbone, "run_dir": str(summary.run_dir),
        "steps": summary.steps, "start_step": summary.start_step,
        "tasks_per_step_effective": summary.tasks_per_step_effective, "seconds": round(summary.seconds, 1),
        "best_val_accuracy": summary.best_val_accuracy, "best_val_ci95": summary.best_val_ci95,
        "best_step": summary.best_step, "losses": summary.losses,
    }
    if emit_json(args.json, record):
        return 0
    print(
        f"trained {config.method} ({config.backbone}) for {summary.steps} steps, "
        f"{summary.tasks_per_step_effective} tasks per step, in {summary.seconds:.0f} s"
    )
    if summary.best_val_accuracy is not None:
        print(
            f"best validation accuracy {100 * summary.best_val_accuracy:.2f} ± {100 * summary.best_val_ci95:.2f}% "
            f"(95% CI, {config.val_episodes} episodes) at step {summary.best_step}"
        )
    print(f"run directory: {summary.run_dir} (best.json/last.json, metrics.csv, learning_curve.png)")
    return 0


def _resumed_config(args: argparse.Namespace):
    """The checkpoint's config is the base, so `fsar train --out RUN_DIR --resume` alone continues
    the run; flags given on top are checked against it (only a few may change)."""
    from fsar.cli._engine_args import overrides_from_args
    from fsar.engine.checkpoint import CheckpointError, read_checkpoint
    from fsar.engine.config import ConfigError, TrainConfig, config_from_dict, config_to_dict, resolve_config

    if not args.out:
        raise CLIError("--resume needs --out RUN_DIR")
    try:
        saved = config_to_dict(config_from_dict(read_checkpoint(args.out, prefer="last").config))
        saved.pop("kind")
        given = overrides_from_args(args, TrainConfig)
        if "method_args" in given:  # the method's own options given now add to the run's
            given["method_args"] = {**saved.get("method_args", {}), **given["method_args"]}
        saved.update(given)
        return resolve_config(TrainConfig, yaml_path=args.config, overrides=saved)
    except (CheckpointError, ConfigError) as error:
        raise CLIError(f"cannot resume {args.out}: {error}") from None
