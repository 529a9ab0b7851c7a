"""``fsar demo``: the whole few-shot loop on the embedded default, on a laptop CPU.

1. renders the seeded synthetic action set and writes its train/val/test class split files;
2. caches the per-frame features of the embedded pair (EfficientNet-Lite0 + MiniLM, frozen);
3. meta-trains MA-FSAR on the training classes, choosing the checkpoint on the validation classes;
4. evaluates it beside the training-free baselines (proto, OTAM, Bi-MHM on the same frozen
   features) on the held-out test classes, all on the same seeded 5-way 1-shot episodes;
5. prints the table (accuracy ± 95% interval, episode count) and saves it as JSON and PNG.

Re-running with the same --out reuses the rendered set, the feature cache and a finished run.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

from fsar.cli import CLIError
from fsar.cli._args import (
    add_device,
    add_json,
    add_method_option_flag,
    add_no_progress,
    add_threads,
    emit_json,
    method_options_dict,
)

ORDER = 5

BACKBONE = "effnet-lite0+minilm"
#: The method the demo meta-trains (the baselines are training-free).
TRAINED = "ma-fsar"
BASELINES = ("proto", "otam", "bimhm")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (``--quick`` or full)."""

    videos_per_class: int
    frames: int
    size: int
    image_size: int
    train_episodes: int
    tasks_per_step: int
    val_every: int
    val_episodes: int
    test_episodes: int


FULL = DemoPlan(videos_per_class=10, frames=16, size=112, image_size=160, train_episodes=2400, tasks_per_step=8,
                val_every=50, val_episodes=300, test_episodes=1000)
QUICK = DemoPlan(videos_per_class=4, frames=8, size=64, image_size=128, train_episodes=320, tasks_per_step=8,
                 val_every=10, val_episodes=100, test_episodes=300)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the embedded default end to end (synthetic actions, CPU, minutes)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "full: 36 actions x 10 clips, 2400 training episodes, 1000 test episodes (< 10 min on 2 CPU cores);\n"
            "--quick: 36 actions x 4 clips, 320 training episodes, 300 test episodes (< 2 min).\n"
            "Afterwards: fsar predict --data DIR --query CLIP --checkpoint OUT/run"
        ),
    )
    parser.add_argument("--out", default="fsar-demo", metavar="DIR", help="working folder (default ./fsar-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, training and episodes (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run (fewer, shorter, smaller clips)")
    add_device(parser)
    add_method_option_flag(parser)
    add_json(parser, what="the results table")
    add_no_progress(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def write_split_files(manifest, parts: dict[str, list[str]], directory: Path) -> Path:
    """``directory/{train,val,test}.txt`` with one ``class/clip`` line per clip (the split-file format)."""
    from fsar.engine.checkpoint import atomic_write_bytes

    directory.mkdir(parents=True, exist_ok=True)
    for split, names in parts.items():
        lines = [f"{clip.class_name}/{clip.path.stem}" for name in names for clip in manifest.clips_of(name)]
        atomic_write_bytes(directory / f"{split}.txt", ("\n".join(lines) + "\n").encode())
    return directory


def draw_table(rows: list[dict], png: Path, title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fsar.engine.checkpoint import atomic_write_bytes

    fig, axis = plt.subplots(figsize=(6.5, 3.8))
    names = [r["method"] for r in rows]
    accuracy = [100 * r["accuracy"] for r in rows]
    interval = [100 * r["ci95"] for r in rows]
    colours = ["tab:orange" if r["trained"] else "tab:blue" for r in rows]
    axis.bar(names, accuracy, yerr=interval, capsize=6, color=colours)
    axis.axhline(100 / rows[0]["way"], color="grey", ls=":", lw=1, label="chance")
    for x, (a, c) in enumerate(zip(accuracy, interval)):
        axis.text(x, a + c + 1, f"{a:.1f}±{c:.1f}", ha="center", fontsize=9)
    axis.set_ylim(0, 100)
    axis.set_ylabel("test accuracy (%) ± 95% CI")
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(png, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from fsar.cli._engine_args import user_errors
    from fsar.data.manifest import Manifest
    from fsar.data.synth import default_split, render_dataset
    from fsar.engine.checkpoint import CheckpointError, atomic_write_json, read_checkpoint
    from fsar.engine.config import EvalConfig, TrainConfig, config_to_dict, resolve_config
    from fsar.engine.run import run_evaluation, run_training
    from fsar.engine.sources import loader_for
    from fsar.engine.train import total_steps

    started = time.perf_counter()
    plan = QUICK if args.quick else FULL
    out = Path(args.out)
    data_dir = out / ("synth-quick" if args.quick else "synth")
    run_dir = out / ("run-quick" if args.quick else "run")
    way, shot = 5, 1

    print(f"[1/5] rendering the synthetic action set into {data_dir} (seed {args.seed}) ...")
    try:
        render_dataset(data_dir, seed=args.seed, videos_per_class=plan.videos_per_class, frames=plan.frames,
                       size=plan.size, progress=args.progress)
    except ValueError as error:
        raise CLIError(f"{error} (choose another --out)") from None
    manifest = Manifest.from_folder(data_dir)
    train_names, val_names, test_names = default_split(manifest.classes)
    split_dir = write_split_files(manifest, {"train": train_names, "val": val_names, "test": test_names},
                                  out / ("splits-quick" if args.quick else "splits"))
    print(f"      {len(manifest.clips)} clips; classes: {len(train_names)} train, {len(val_names)} val, "
          f"{len(test_names)} test (split files in {split_dir})")

    print(f"[2/5] caching {BACKBONE} features of every clip ({plan.image_size} px frames) ...")
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features

    features = out / ("features-quick" if args.quick else "features")
    encoder = create_encoder(BACKBONE)
    loader = loader_for(encoder, num_frames=8, image_size=plan.image_size)
    extract_features(manifest, encoder, loader, features, backbone_options={"weights": None}, progress=args.progress)
    del encoder

    common = dict(data=str(data_dir), backbone=BACKBONE, way=way, shot=shot, seed=args.seed,
                  image_size=plan.image_size, features=str(features), progress=args.progress, device=args.device)
    train_config = resolve_config(TrainConfig, overrides=dict(
        common, method=TRAINED, split_file_dir=str(split_dir), out=str(run_dir), queries=2,
        episodes=plan.train_episodes, tasks_per_step=plan.tasks_per_step, lr=1e-3,
        val_every=plan.val_every, val_episodes=plan.val_episodes, checkpoint_every=plan.val_every,
        method_options={"dataset_kind": "temporal", **method_options_dict(args)},
    ))
    steps = total_steps(train_config)
    try:
        done = read_checkpoint(run_dir, prefer="last").step
    except CheckpointError:
        done = None
    print(f"[3/5] meta-training ma-fsar on {len(train_names)} classes: {plan.train_episodes} episodes, "
          f"{plan.tasks_per_step} per step, validating on {len(val_names)} classes ...")
    try:
        if done is None:
            run_training(train_config)
        elif done < steps:
            print(f"      resuming {run_dir} at step {done}")
            run_training(train_config, resume=True)
        else:
            print(f"      {run_dir} already finished ({done} steps); reusing it")
    except user_errors() as error:
        raise CLIError(f"{error} (delete {run_dir} to start over)") from None

    print(f"[4/5] evaluating on {len(test_names)} held-out classes: {plan.test_episodes} "
          f"{way}-way {shot}-shot episodes (seed {args.seed}), the same for every method ...")
    evaluations = [(TRAINED, dict(checkpoint=str(run_dir)))] + [(name, dict(method=name)) for name in BASELINES]
    rows = []
    for name, extra in evaluations:
        config = resolve_config(EvalConfig, overrides=dict(
            common, split_file=str(split_dir / "test.txt"), queries=1, episodes=plan.test_episodes,
            json=str(out / f"eval-{name}{'-quick' if args.quick else ''}.json"), **extra,
        ))
        try:
            outcome = run_evaluation(config)
        except user_errors() as error:
            raise CLIError(str(error)) from None
        result = outcome.result
        rows.append({"method": name, "trained": name == TRAINED, "accuracy": result.accuracy, "ci95": result.ci95,
                     "episodes": result.episodes, "way": way, "shot": shot, "json": config.json})

    print("[5/5] results (test classes never seen in training):")
    print()
    print(f"  {'method':<10} {'trained':<8} {'accuracy (%)':>16}  episodes")
    for row in rows:
        print(f"  {row['method']:<10} {'yes' if row['trained'] else 'no':<8} "
              f"{100 * row['accuracy']:>8.2f} ± {100 * row['ci95']:<5.2f}  {row['episodes']}")
    print(f"  chance: {100 / way:.1f}%   (± = 95% interval, 1.96·std/√episodes)")
    suffix = "-quick" if args.quick else ""
    png = out / f"results{suffix}.png"
    draw_table(rows, png, f"fsar demo: synthetic actions, {way}-way {shot}-shot, {BACKBONE}\n"
                          f"{plan.test_episodes} test episodes on {len(test_names)} unseen classes")
    results = {
        "rows": rows, "train_config": config_to_dict(train_config), "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(out / f"results{suffix}.json", results)
    emit_json(args.json, results)
    print()
    print(f"table: {out / f'results{suffix}.json'}, chart: {png}, learning curve: {run_dir / 'learning_curve.png'}")
    # Quoted: synthetic class folders have spaces, and the line is meant to be copied into a shell.
    query = manifest.clips_of(test_names[0])[0].path
    print(f"try:   fsar predict --data {shlex.quote(str(data_dir))} --query {shlex.quote(str(query))} "
          f"--checkpoint {shlex.quote(str(run_dir))}")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
