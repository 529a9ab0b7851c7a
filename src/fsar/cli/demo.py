"""``fsar demo``: the whole few-shot loop on the embedded default, on a laptop CPU.

1. renders the seeded synthetic action set (generator version 2: large objects, large motions,
   per-clip speed profiles) and writes its train/val/test class split files;
2. caches the per-frame features of the frozen grid backbone ``effnet-lite0-grid+minilm``
   (EfficientNet-Lite0 map pooled to 3x3 cells + MiniLM);
3. meta-trains MA-FSAR, LGA and CLIP-SPM on the training classes, each from its training-free
   core (untrained, each is its own temporal metric on the cached features), validating on the
   validation classes from step 0, keeping the best checkpoint and stopping when validation
   stops improving (``--trained`` chooses which);
4. evaluates them beside the training-free baselines (proto, OTAM, Bi-MHM on the same frozen
   features) on the held-out test classes, all on the same seeded 5-way 1-shot episodes;
5. prints the table (accuracy ± 95% interval, episode count, and the same on the episodes that
   contain a motion and its reverse) and saves it as JSON and PNG.

``--version 1`` reruns the first demo instead (generator 1, ``effnet-lite0+minilm``, MA-FSAR
alone from random-init projections, a fixed 300-step schedule), which reproduces its table.
Re-running with the same --out reuses the rendered set, the feature cache and a finished run.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from fsar.cli import CLIError
from fsar.cli._args import (
    add_device,
    add_json,
    add_method_option_flag,
    add_no_progress,
    add_threads,
    emit_json,
    method_options_per_label,
)

ORDER = 5

#: The methods the demo meta-trains (the baselines are training-free); the first is the one
#: ``fsar predict`` is pointed at afterwards, and keeps the first demo's folder names.
TRAINED = ("ma-fsar", "lga", "clip-spm")
BASELINES = ("proto", "otam", "bimhm")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and settings of one demo run (``--version`` x ``--quick``)."""

    data_version: int  # synthetic generator version
    backbone: str
    #: the trained methods, in table order
    trained: tuple[str, ...] = TRAINED
    #: options of each trained method (method name -> options)
    method_options: dict = field(default_factory=dict, hash=False, compare=False)
    videos_per_class: int = 10
    frames: int = 16
    size: int = 112
    image_size: int = 160
    train_episodes: int = 2400
    tasks_per_step: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_every: int = 50
    val_episodes: int = 300
    #: stop after this many validations without a new best (0: train all episodes)
    early_stop_patience: int = 0
    test_episodes: int = 1000


#: Every trained method starts from its training-free core on the embedded grid backbone; LGA
#: and CLIP-SPM take their defaults there (``start="auto"``), MA-FSAR is told SSv2-like data.
V2_OPTIONS = {"ma-fsar": {"dataset_kind": "temporal", "start": "training-free"}}

#: Version 2 (default): generator 2 (large objects, large motions, speed profiles), the grid
#: backbone, the trained methods started from their training-free cores, early stopping on
#: validation.
PLANS = {
    # Patience 1: in the full run every method's best step is the last validation before its
    # first without a new best (MA-FSAR and LGA 20, CLIP-SPM 30), so it picks the checkpoints of
    # patience 2 and 3, in ~40 s less than 2 (which saved ~105 s on 3).
    (2, False): DemoPlan(
        data_version=2, backbone="effnet-lite0-grid+minilm", method_options=V2_OPTIONS,
        train_episodes=2400, tasks_per_step=8, lr=1e-3, weight_decay=1e-4, val_every=10, val_episodes=200,
        early_stop_patience=1, test_episodes=1000,
    ),
    # --quick trains two of the three (CLIP-SPM is the slowest to train on the grid features and
    # would take the quick run past 2 minutes); ``--trained`` adds it back. Patience 1 for the
    # same reason (MA-FSAR's best step 0, LGA's 20).
    (2, True): DemoPlan(
        data_version=2, backbone="effnet-lite0-grid+minilm", method_options=V2_OPTIONS, trained=TRAINED[:2],
        videos_per_class=4, frames=8, size=64, image_size=128, train_episodes=480, tasks_per_step=8, lr=1e-3,
        weight_decay=1e-4, val_every=10, val_episodes=100, early_stop_patience=1, test_episodes=300,
    ),
    # Version 1: the first demo exactly (its table is in the README's history and benchmarks/README.md).
    (1, False): DemoPlan(
        data_version=1, backbone="effnet-lite0+minilm", trained=("ma-fsar",),
        method_options={"ma-fsar": {"dataset_kind": "temporal", "start": "standard"}},
        train_episodes=2400, tasks_per_step=8, val_every=50, val_episodes=300, test_episodes=1000,
    ),
    (1, True): DemoPlan(
        data_version=1, backbone="effnet-lite0+minilm", trained=("ma-fsar",),
        method_options={"ma-fsar": {"dataset_kind": "temporal", "start": "standard"}},
        videos_per_class=4, frames=8, size=64, image_size=128, train_episodes=320, tasks_per_step=8,
        val_every=10, val_episodes=100, test_episodes=300,
    ),
}
FULL, QUICK = PLANS[(2, False)], PLANS[(2, True)]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the embedded default end to end (synthetic actions, CPU, minutes)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "full: 36 actions x 10 clips, up to 2400 training episodes (early stop on validation), 1000 test\n"
            "episodes (< 6 min on 2 CPU cores); --quick: 36 actions x 4 short, small clips, 300 test episodes\n"
            "(< 2 min). --version 1 reruns the first demo (generator 1, effnet-lite0+minilm, random-init\n"
            "projections, fixed schedule) and reproduces its table.\n"
            "Afterwards: fsar predict --data DIR --query CLIP --checkpoint OUT/run"
        ),
    )
    parser.add_argument("--out", default="fsar-demo", metavar="DIR", help="working folder (default ./fsar-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, training and episodes (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run (fewer, shorter, smaller clips)")
    parser.add_argument("--version", type=int, choices=(1, 2), default=2,
                        help="2 (default): synthetic generator 2, grid backbone, MA-FSAR from its training-free "
                             "core; 1: the first demo, to reproduce its figures")
    parser.add_argument("--trained", nargs="+", metavar="METHOD", default=None,
                        help=f"the methods to meta-train (default: {' '.join(TRAINED)}; --quick: "
                             f"{' '.join(TRAINED[:2])}; version 1: ma-fsar)")
    add_device(parser)
    add_method_option_flag(parser)  # -O KEY=VALUE for every trained method, -O METHOD:KEY=VALUE for one
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


def order_sensitive_episodes(manifest, pairs: list[tuple[str, str]], *, way: int, shot: int, seed: int,
                             episodes: int) -> list[int]:
    """Indices of the seeded test episodes that contain a motion and its reverse (both classes)."""
    from fsar.data.episodes import EpisodeSampler

    sampler = EpisodeSampler(manifest, way=way, shot=shot, queries=1, seed=seed)
    chosen = []
    for index in range(episodes):
        names = set(sampler.episode(index).class_names)
        if any(a in names and b in names for a, b in pairs):
            chosen.append(index)
    return chosen


def mean_and_interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95% interval 1.96·std/√n (population std, as the engine reports)."""
    import math

    n = len(values)
    if not n:
        return float("nan"), float("nan")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, 1.96 * std / math.sqrt(n)


def draw_table(rows: list[dict], png: Path, title: str) -> None:
    """Bars of test accuracy ± 95% interval per method: all test episodes, and beside them the
    episodes that contain an order-sensitive pair (a motion and its reverse)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fsar.engine.checkpoint import atomic_write_bytes

    fig, (axis, table_axis) = plt.subplots(2, 1, figsize=(8.0, 6.6), gridspec_kw={"height_ratios": [3, 1.5]})
    width = 0.4
    for x, row in enumerate(rows):
        colour = "tab:orange" if row["trained"] else "tab:blue"
        bars = [(x - width / 2, row["accuracy"], row["ci95"], 1.0)]
        if row.get("pairs_accuracy") is not None:
            bars.append((x + width / 2, row["pairs_accuracy"], row["pairs_ci95"], 0.45))
        for position, accuracy, interval, alpha in bars:
            axis.bar(position, 100 * accuracy, width=width, yerr=100 * interval, capsize=4, color=colour, alpha=alpha)
            axis.text(position, 100 * (accuracy + interval) + 1, f"{100 * accuracy:.1f}", ha="center", fontsize=8)
    # a method's inference tags ("[padm=transductive]") go on a second line under its bars
    axis.set_xticks(range(len(rows)), [r["method"].replace(" [", "\n[") for r in rows], fontsize=8)
    chance = axis.axhline(100 / rows[0]["way"], color="grey", ls=":", lw=1, label="chance")
    from matplotlib.patches import Patch

    handles = [chance, Patch(color="tab:orange", label="trained"), Patch(color="tab:blue", label="training-free"),
               Patch(color="grey", label="all test episodes"),
               Patch(color="grey", alpha=0.45, label="episodes with a motion and its reverse")]
    axis.set_ylim(0, 100)
    axis.set_ylabel("test accuracy (%) ± 95% CI")
    axis.set_title(title, fontsize=10)
    axis.legend(handles=handles, loc="upper right", fontsize=8)
    # the printed table under the bars: every method, all episodes and the order-sensitive ones
    table_axis.axis("off")
    cells = [[row["method"], "yes" if row["trained"] else "no",
              f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}", str(row["episodes"]),
              (f"{100 * row['pairs_accuracy']:.2f} ± {100 * row['pairs_ci95']:.2f}"
               if row.get("pairs_accuracy") is not None else "n/a"), str(row.get("pairs_episodes", 0))]
             for row in rows]
    table = table_axis.table(cellText=cells, loc="center", cellLoc="center",
                             colWidths=[0.3, 0.09, 0.17, 0.1, 0.19, 0.1],
                             colLabels=["method", "trained", "accuracy (%)", "episodes",
                                        "reverse pair (%)", "episodes"])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.25)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(png, buffer.getvalue())


def _check_trained(names: tuple[str, ...]) -> None:
    """``--trained``: registered methods that train, each once."""
    from fsar.methods import list_methods

    for name in names:
        if name not in list_methods():
            raise CLIError(f"--trained {name}: unknown method; trainable methods: {', '.join(_trainable())}")
        if name not in _trainable():
            raise CLIError(f"--trained {name}: a training-free method (the table has {', '.join(BASELINES)} "
                           f"anyway); trainable methods: {', '.join(_trainable())}")
    if len(set(names)) != len(names):
        raise CLIError(f"--trained {' '.join(names)}: a method is named twice")


def _trainable() -> list[str]:
    from fsar.methods import list_methods, method_class

    return [name for name in list_methods() if method_class(name).trainable]


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from fsar.cli._engine_args import user_errors
    from fsar.data.manifest import Manifest
    from fsar.data.synth import default_split, render_dataset, reverse_pairs
    from fsar.engine.checkpoint import CheckpointError, atomic_write_json, read_checkpoint
    from fsar.engine.config import EvalConfig, TrainConfig, config_to_dict, resolve_config
    from fsar.engine.run import eval_manifest, run_evaluation, run_training, tags_label
    from fsar.engine.sources import loader_for
    from fsar.engine.train import total_steps

    started = time.perf_counter()
    plan = PLANS[(args.version, bool(args.quick))]
    trained = tuple(args.trained or plan.trained)
    _check_trained(trained)
    user_options = method_options_per_label(args.method_options or [], list(trained))
    out = Path(args.out)
    # Version 1 keeps the first demo's folder names, so an old --out is reused as it was.
    tag = ("" if args.version == 1 else "-v2") + ("-quick" if args.quick else "")
    data_dir = out / f"synth{tag}"
    backbone = plan.backbone
    way, shot = 5, 1

    print(f"[1/5] rendering the synthetic action set (generator version {plan.data_version}) into {data_dir} "
          f"(seed {args.seed}) ...")
    try:
        render_dataset(data_dir, seed=args.seed, videos_per_class=plan.videos_per_class, frames=plan.frames,
                       size=plan.size, progress=args.progress, version=plan.data_version)
    except ValueError as error:
        raise CLIError(f"{error} (choose another --out)") from None
    manifest = Manifest.from_folder(data_dir)
    train_names, val_names, test_names = default_split(manifest.classes)
    split_dir = write_split_files(manifest, {"train": train_names, "val": val_names, "test": test_names},
                                  out / f"splits{tag}")
    print(f"      {len(manifest.clips)} clips; classes: {len(train_names)} train, {len(val_names)} val, "
          f"{len(test_names)} test (split files in {split_dir})")

    print(f"[2/5] caching {backbone} features of every clip ({plan.image_size} px frames) ...")
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features

    features = out / f"features{tag}"
    encoder = create_encoder(backbone)
    loader = loader_for(encoder, num_frames=8, image_size=plan.image_size)
    extract_features(manifest, encoder, loader, features, backbone_options={"weights": None}, progress=args.progress)
    del encoder

    common = dict(data=str(data_dir), backbone=backbone, way=way, shot=shot, seed=args.seed,
                  image_size=plan.image_size, features=str(features), progress=args.progress, device=args.device)
    schedule = dict(episodes=plan.train_episodes, tasks_per_step=plan.tasks_per_step, lr=plan.lr,
                    val_every=plan.val_every, val_episodes=plan.val_episodes, checkpoint_every=plan.val_every)
    if plan.weight_decay:
        schedule["weight_decay"] = plan.weight_decay
    if plan.early_stop_patience:
        # the untrained start (the training-free core) is a candidate too: validate at step 0
        schedule.update(early_stop_patience=plan.early_stop_patience, validate_at_start=True)
    patience = plan.early_stop_patience
    stop_note = ("" if not patience else ", stopping at the first validation without a new best" if patience == 1
                 else f", stopping after {patience} validations without a new best")
    print(f"[3/5] meta-training {', '.join(trained)} on {len(train_names)} classes: up to {plan.train_episodes} "
          f"episodes each, {plan.tasks_per_step} per step, validating on {len(val_names)} classes every "
          f"{plan.val_every} steps{stop_note} ...")
    run_dirs, best_steps, train_configs = {}, {}, {}
    for name in trained:
        # the plan's first method (ma-fsar) keeps the first demo's folder names (run, run-v2, ...),
        # so an old --out is reused; the others get run-v2-<method>
        run_dir = out / (f"run{tag}" if name == plan.trained[0] else f"run{tag}-{name}")
        train_config = resolve_config(TrainConfig, overrides=dict(
            common, method=name, split_file_dir=str(split_dir), out=str(run_dir), queries=2,
            method_options={**plan.method_options.get(name, {}), **user_options.get(name, {})}, **schedule,
        ))
        steps = total_steps(train_config)
        try:
            last = read_checkpoint(run_dir, prefer="last")
            done, stopped = last.step, bool(last.record.get("stopped_early"))
        except CheckpointError:
            done, stopped = None, False
        print(f"      {name}:")
        try:
            if done is None:
                run_training(train_config)
            elif done < steps and not stopped:
                print(f"      resuming {run_dir} at step {done}")
                run_training(train_config, resume=True)
            else:
                print(f"      {run_dir} already finished ({done} steps); reusing it")
        except user_errors() as error:
            raise CLIError(f"{name}: {error} (delete {run_dir} to start over)") from None
        best = read_checkpoint(run_dir, prefer="best")
        print(f"      {name}: checkpoint chosen on the validation classes: step {best.step} "
              f"(validation accuracy {100 * (best.record.get('best_val_accuracy') or float('nan')):.1f}%)")
        run_dirs[name], best_steps[name], train_configs[name] = run_dir, best.step, train_config

    print(f"[4/5] evaluating on {len(test_names)} held-out classes: {plan.test_episodes} "
          f"{way}-way {shot}-shot episodes (seed {args.seed}), the same for every method ...")
    evaluations = [(name, dict(checkpoint=str(run_dirs[name]))) for name in trained]
    evaluations += [(name, dict(method=name)) for name in BASELINES]
    rows = []
    pair_episodes: list[int] | None = None
    pairs = reverse_pairs(test_names)
    for name, extra in evaluations:
        config = resolve_config(EvalConfig, overrides=dict(
            common, split_file=str(split_dir / "test.txt"), queries=1, episodes=plan.test_episodes,
            json=str(out / f"eval-{name}{tag}.json"), **extra,
        ))
        try:
            outcome = run_evaluation(config)
            if pair_episodes is None:
                pair_episodes = order_sensitive_episodes(eval_manifest(config), pairs, way=way, shot=shot,
                                                         seed=args.seed, episodes=plan.test_episodes)
        except user_errors() as error:
            raise CLIError(str(error)) from None
        result = outcome.result
        pairs_accuracy, pairs_ci95 = mean_and_interval([result.episode_accuracies[i] for i in pair_episodes])
        # a transductive choice (clip-spm's PADM uses every query of the episode) is named in the row
        label = name + tags_label(outcome.record.get("inference") or {})
        rows.append({"method": label, "trained": name in trained, "accuracy": result.accuracy, "ci95": result.ci95,
                     "episodes": result.episodes, "way": way, "shot": shot, "json": config.json,
                     "pairs_accuracy": pairs_accuracy if pair_episodes else None,
                     "pairs_ci95": pairs_ci95 if pair_episodes else None, "pairs_episodes": len(pair_episodes)})

    print("[5/5] results (test classes never seen in training):")
    print()
    width = max(10, *(len(row["method"]) for row in rows))
    print(f"  {'method':<{width}} {'trained':<8} {'accuracy (%)':>16}  episodes   {'with a reverse pair (%)':>24}  episodes")
    for row in rows:
        pairs_text = (f"{100 * row['pairs_accuracy']:>14.2f} ± {100 * row['pairs_ci95']:<5.2f}"
                      if row["pairs_accuracy"] is not None else f"{'n/a':>22}")
        print(f"  {row['method']:<{width}} {'yes' if row['trained'] else 'no':<8} "
              f"{100 * row['accuracy']:>8.2f} ± {100 * row['ci95']:<5.2f}  {row['episodes']:<8}   "
              f"{pairs_text}   {row['pairs_episodes']}")
    print(f"  chance: {100 / way:.1f}%   (± = 95% interval, 1.96·std/√episodes; the last columns: the episodes "
          f"that hold both classes of an order-sensitive pair: {', '.join(f'{a} / {b}' for a, b in pairs) or 'none'})")
    png = out / f"results{tag}.png"
    draw_table(rows, png, f"fsar demo v{args.version}: synthetic actions (generator {plan.data_version}), "
                          f"{way}-way {shot}-shot, {backbone}\n"
                          f"{plan.test_episodes} test episodes on {len(test_names)} unseen classes")
    results = {
        "rows": rows, "train_config": config_to_dict(train_configs[trained[0]]), "best_step": best_steps[trained[0]],
        "train_configs": {name: config_to_dict(c) for name, c in train_configs.items()}, "best_steps": best_steps,
        "seconds": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads(),
        "demo_version": args.version,
    }
    atomic_write_json(out / f"results{tag}.json", results)
    emit_json(args.json, results)
    print()
    curves = ", ".join(str(run_dirs[name] / "learning_curve.png") for name in trained)
    print(f"table: {out / f'results{tag}.json'}, chart: {png}, learning curves: {curves}")
    # Quoted: synthetic class folders have spaces, and the line is meant to be copied into a shell.
    query = manifest.clips_of(test_names[0])[0].path
    print(f"try:   fsar predict --data {shlex.quote(str(data_dir))} --query {shlex.quote(str(query))} "
          f"--checkpoint {shlex.quote(str(run_dirs[trained[0]]))}")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
