"""What `fsar demo` shows (issue 14): the gain of the trained method over the training-free
baselines, the demo's time and memory, 5-shot, ssv2-mini, and the segmentation ablation.

    python benchmarks/demo_gains.py [--work /tmp/fsar-demo-gains] [--parts quick full five-shot segmentation ssv2]

Parts:

* ``quick`` / ``full``: runs ``fsar demo [--quick]`` in a child process and reports its wall
  time and peak resident memory (``os.wait4``'s ``ru_maxrss`` of that child), then reads its
  ``results*.json``: the best trained row minus the best training-free row at 5-way 1-shot,
  whether the two 95% intervals overlap, and the order-sensitive-pair column.
* ``five-shot``: on the full demo's folder, the chosen ma-fsar checkpoint and the baselines at
  5-way 5-shot on the same seeded test episodes.
* ``centred-reference``: a training-free reference that is not a registered method: OTAM on the
  grid features minus each clip's temporal mean per cell, on the same test episodes (1- and
  5-shot), to show how much of the trained gain is static-appearance removal.
* ``segmentation``: on the full demo's synthetic set (generator 2), the share of sampled
  frames that CLUSTER-Segment (L = 3) and uniform segmentation put in their true stage
  (``synth.json`` phases mapped onto the loader's frame indices), on the cached features
  (per-frame mean over the grid cells). ``--v1-root`` adds the same on a generator-1 set.
* ``ssv2``: ``../shared/data/ssv2-mini`` (10 classes x 10 videos): the first 5 classes (sorted)
  meta-train, for a number of steps chosen by class-disjoint 5-fold cross-validation inside
  them (train 3-way on 3, validate 2-way on the other 2, from step 0; the median best step),
  the last 5 classes test; LGA's K-shot rule is chosen on the training classes. Every trained
  method of ``--ssv2-methods`` (default ma-fsar, clip-fsar, lga, clip-spm) on both embedded
  backbones from its training-free start beside proto / otam / bimhm on the same episodes and
  features, each 1-shot schedule evaluated at 1- and 5-shot, with its paired difference from
  the cell's best baseline. ``--ssv2-options METHOD:KEY=VALUE ... --ssv2-tag NAME`` trains a
  variant.

Every accuracy is mean ± 95% interval (1.96 · std / sqrt(n)) over n seeded episodes. The
results are printed as JSON lines and written to ``--work/demo_gains.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
BASELINES = ("proto", "otam", "bimhm")


def run_demo(work: Path, quick: bool, version: int) -> dict:
    """``fsar demo`` in a child process: wall seconds, peak RSS (MiB), and its results file."""
    out = work / "demo"
    command = [sys.executable, "-m", "fsar", "demo", "--out", str(out), "--no-progress", "--version", str(version)]
    if quick:
        command.append("--quick")
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"fsar demo failed:\n{output[-4000:]}")
    tag = ("" if version == 1 else "-v2") + ("-quick" if quick else "")
    results = json.loads((out / f"results{tag}.json").read_text())
    rows = results["rows"]
    trained = max((r for r in rows if r["trained"]), key=lambda r: r["accuracy"])
    free = max((r for r in rows if not r["trained"]), key=lambda r: r["accuracy"])
    table = [line for line in output.splitlines() if line.startswith("  ")]
    return {
        "part": "quick" if quick else "full", "demo_version": version, "wall_s": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "best_step": results.get("best_step"),
        "best_trained": trained["method"], "best_training_free": free["method"],
        "gain_points": round(100 * (trained["accuracy"] - free["accuracy"]), 2),
        "intervals_overlap": trained["accuracy"] - trained["ci95"] <= free["accuracy"] + free["ci95"],
        "rows": [{k: r[k] for k in ("method", "trained", "accuracy", "ci95", "episodes", "pairs_accuracy",
                                    "pairs_ci95", "pairs_episodes")} for r in rows],
        "printed": table,
    }


def five_shot(work: Path, episodes: int, seed: int) -> list[dict]:
    from fsar.engine.config import EvalConfig, resolve_config
    from fsar.engine.run import run_evaluation

    out = work / "demo"
    config = json.loads((out / "results-v2.json").read_text())["train_config"]
    common = dict(data=config["data"], backbone=config["backbone"], way=5, shot=5, seed=seed,
                  image_size=config["image_size"], features=config["features"], progress=False,
                  split_file=str(Path(config["split_file_dir"]) / "test.txt"), queries=1, episodes=episodes)
    rows = []
    for name, extra in [("ma-fsar", dict(checkpoint=config["out"]))] + [(b, dict(method=b)) for b in BASELINES]:
        result = run_evaluation(resolve_config(EvalConfig, overrides=dict(common, **extra))).result
        rows.append({"part": "five-shot", "method": name, "trained": name == "ma-fsar", "accuracy": result.accuracy,
                     "ci95": result.ci95, "episodes": result.episodes})
    return rows


def centred_reference(work: Path, episodes: int, seed: int, shots=(1, 5)) -> list[dict]:
    """Training-free reference outside the registry: OTAM on the grid features after removing each
    clip's temporal mean per cell (what the grid module's static-suppression gate can learn),
    on the demo's seeded test episodes."""
    import torch

    from fsar.data.episodes import EpisodeSampler
    from fsar.data.manifest import Manifest
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import FeatureCache
    from fsar.engine.sources import loader_for
    from fsar.metrics import OTAM

    config = json.loads((work / "demo" / "results-v2.json").read_text())["train_config"]
    root = Path(config["data"])
    manifest = Manifest.from_split_file(root, Path(config["split_file_dir"]) / "test.txt", progress=False)
    encoder = create_encoder(config["backbone"], weights="random")
    loader = loader_for(encoder, num_frames=8, image_size=config["image_size"])
    cache = FeatureCache(config["features"], root=root)
    cells = encoder.grid_cells
    rows = []
    for shot in shots:
        sampler = EpisodeSampler(manifest, way=5, shot=shot, queries=1, seed=seed)
        accuracies = []
        for index in range(episodes):
            inputs = cache.load_episode(sampler.episode(index), loader)

            def centred(x):
                tokens = x.reshape(*x.shape[:2], cells, -1)
                return (tokens - tokens.mean(1, keepdim=True)).flatten(2)

            logits = OTAM()(centred(inputs.support), inputs.support_labels, centred(inputs.query), inputs.way)
            accuracies.append((logits.argmax(-1) == inputs.query_labels).float().mean().item())
        t = torch.tensor(accuracies)
        rows.append({"part": "centred-reference", "shot": shot, "method": "otam on temporally centred grid",
                     "trained": False, "accuracy": t.mean().item(), "ci95": 1.96 * t.std(unbiased=False).item() / len(t) ** 0.5,
                     "episodes": len(t)})
    return rows


def segmentation(root: Path, features: Path, backbone: str, image_size: int, label: str) -> list[dict]:
    """Share of frames in their true stage: CLUSTER-Segment vs uniform (L = 3)."""
    import torch

    from fsar.data.manifest import Manifest
    from fsar.data.synth import load_metadata, phase_of_frames
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import FeatureCache
    from fsar.engine.sources import loader_for
    from fsar.lga.segment import segment

    meta = load_metadata(root)
    boundaries = {c["path"]: c["boundaries"] for c in meta["clips"]}
    manifest = Manifest.from_folder(root, progress=False)
    encoder = create_encoder(backbone, weights="random")  # only its name, sizes and normalisation
    loader = loader_for(encoder, num_frames=8, image_size=image_size)
    cache = FeatureCache(features, root=root)
    cells = int(getattr(encoder, "grid_cells", 1) or 1)
    feats, truth = [], []
    for clip in manifest.clips:
        x = cache.clip_features(clip, loader)  # (T, cells * D)
        feats.append(x.reshape(x.shape[0], cells, -1).mean(1))
        rel = clip.path.relative_to(root).as_posix()
        truth.append(phase_of_frames(loader.indices(clip, train=False), boundaries[rel]))
    x, truth = torch.stack(feats).float(), torch.tensor(truth)
    rows = []
    frames = torch.arange(x.shape[1])
    for method in ("cluster", "uniform"):
        bounds = segment(x, 3, method)
        predicted = (frames >= bounds[:, 1:2]).long() + (frames >= bounds[:, 2:3]).long()
        rows.append({"part": "segmentation", "set": label, "segmentation": method, "clips": len(x),
                     "frame_accuracy": round((predicted == truth).float().mean().item(), 4)})
    return rows


#: ssv2-mini: the trained methods measured by default (each from its training-free start, the
#: default on the embedded pairs) and the options every run of one gets.
SSV2_METHODS = ("ma-fsar", "clip-fsar", "lga", "clip-spm")
SSV2_METHOD_OPTIONS = {"ma-fsar": {"dataset_kind": "temporal"}}
SSV2_TASKS_PER_STEP = 8
#: Training-free choices a method leaves open, settled on the 5 *training* classes (5-way 5-shot
#: with the prepared start, 0 steps): the spec leaves LGA's K-shot rule open ([proposed] the
#: union of the shots' stage frames; alternative: the mean of the per-shot AB-MHM distances).
SSV2_START_CHOICES = {"lga": ("shots", ("union", "distance"))}


def parse_method_options(items: list[str]) -> dict[str, dict]:
    """``METHOD:KEY=VALUE`` (VALUE read as JSON when it parses, else a string) -> options per method."""
    options: dict[str, dict] = {}
    for item in items:
        method, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not (sep and eq and method and key):
            raise SystemExit(f"--ssv2-options / --ssv2-train: expected [METHOD:]KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        options.setdefault(method, {})[key] = parsed
    return options


def ssv2_table(rows: list[dict]) -> str:
    """The ssv2 rows as one markdown table: per backbone and shot, each method's start and
    cross-validated run (paired differences from the best baseline and from the start), then
    the baselines."""
    def pct(row):
        return f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}"

    def diff(d):
        return f"{100 * d['difference']:+.2f} ± {100 * d['ci95']:.2f}"

    out = ["| backbone | shot | method | start | cross-validated (steps) | trained − best baseline (paired) "
           "| trained − start (paired) |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    cells = {}
    for row in rows:
        cells.setdefault((row["backbone"], row["shot"]), []).append(row)
    for (backbone, shot), cell in cells.items():
        starts = {r["method"]: r for r in cell if r.get("checkpoint") == "start"}
        for r in (r for r in cell if r.get("checkpoint") == "cross-validated"):
            out.append(f"| `{backbone}` | {shot} | {r['method']} | {pct(starts[r['method']])} | "
                       f"{pct(r)} ({r['steps']}) | {diff(r['versus_best_baseline'])} vs {r['versus']} | "
                       f"{diff(r['versus_start'])} |")
        free = [r for r in cell if "checkpoint" not in r]
        if free:
            out.append(f"| `{backbone}` | {shot} | baselines | " + ", ".join(f"{r['method']} {pct(r)}" for r in free)
                       + " | | | |")
    return "\n".join(out)


def choose_on_training_classes(method: str, start_run, base: dict, splits: Path) -> dict:
    """The value of ``SSV2_START_CHOICES[method]`` whose prepared start (``start_run(value)``, a
    0-episode run on the training split) scores best at 5-way 5-shot on 300 episodes of the
    training classes; ties keep the first (the spec's default). Only ``splits/train.txt`` is read."""
    from fsar.engine.config import EvalConfig, resolve_config
    from fsar.engine.run import run_evaluation

    key, values = SSV2_START_CHOICES[method]
    scores = {}
    for value in values:
        result = run_evaluation(resolve_config(EvalConfig, overrides=dict(
            base, way=5, shot=5, queries=1, episodes=300, split_file=str(splits / "train.txt"),
            checkpoint=str(start_run(value))))).result
        scores[value] = round(result.accuracy, 4)
    return {"key": key, "training_class_accuracy_5shot": scores, "chosen": max(values, key=lambda v: scores[v])}


def ssv2(work: Path, *, train_episodes: int, test_episodes: int, seed: int, image_size: int,
         shots: tuple[int, ...] = (1, 5), methods: tuple[str, ...] = SSV2_METHODS,
         options: dict[str, dict] | None = None, tag: str = "", train_overrides: dict | None = None,
         backbones: tuple[str, ...] = ("effnet-lite0+minilm", "effnet-lite0-grid+minilm"),
         baselines: bool = True) -> list[dict]:
    """ssv2-mini: the first 5 classes (sorted) meta-train, the last 5 test. How long to train is
    chosen by **class-disjoint cross-validation** inside the 5 training classes: fold k trains
    3-way on 3 of them and validates 2-way on the other 2 (classes k and k+1, cyclically), from
    step 0 (the training-free start is a candidate) with early stopping; the step count is the
    median of the 5 folds' best steps, and the final run trains on all 5 classes 5-way for that
    many steps (0: the prepared start). Held-out clips of the training classes would reward
    memorising them; only classes a run never saw measure transfer. One 1-shot schedule per
    method and backbone (run folders ``ssv2-run-METHOD-BACKBONE[-tag]`` and ``...-foldK``, reused
    when finished), evaluated at every shot in ``shots`` beside the training-free baselines on
    the same seeded test episodes; each trained row carries its paired difference from the
    cell's best baseline. ``options``: extra method options per method, ``train_overrides``:
    TrainConfig values (``tag`` names such a variant's run folders)."""
    from fsar.data.manifest import Manifest
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features
    from fsar.engine.checkpoint import read_checkpoint
    from fsar.engine.compare import compare_paired
    from fsar.engine.config import EvalConfig, TrainConfig, resolve_config
    from fsar.engine.run import run_evaluation, run_training
    from fsar.engine.sources import loader_for

    root = SHARED / "data" / "ssv2-mini"
    if not root.is_dir():
        print(f"skipping ssv2-mini: {root} not found", file=sys.stderr)
        return []
    manifest = Manifest.from_folder(root, progress=False)
    names = manifest.classes
    training, testing = names[:5], names[5:]

    def lines(part):
        return "\n".join(f"{c.class_name}/{c.path.name}" for n in part for c in manifest.clips_of(n)) + "\n"

    def split_dir(name: str, train: list[str], val: list[str] | None) -> Path:
        folder = work / "ssv2-splits" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.txt").write_text(lines(train))
        if val:
            (folder / "val.txt").write_text(lines(val))
        return folder

    final_splits = split_dir("final", training, None)
    (final_splits / "test.txt").write_text(lines(testing))
    folds = [[training[k], training[(k + 1) % 5]] for k in range(5)]
    fold_splits = [split_dir(f"fold{k}", [c for c in training if c not in held], held)
                   for k, held in enumerate(folds)]
    options = options or {}
    rows = []
    for backbone in backbones:
        encoder = create_encoder(backbone)
        features = work / f"ssv2-features-{backbone}"
        extract_features(manifest, encoder, loader_for(encoder, num_frames=8, image_size=image_size), features,
                         backbone_options={"weights": None}, progress=False)
        del encoder
        base = dict(data=str(root), backbone=backbone, seed=seed, image_size=image_size,
                    features=str(features), progress=False)
        runs = {}
        for method in methods:
            name = f"ssv2-run-{method}-{backbone}{'-' + tag if tag else ''}"
            method_options = {**SSV2_METHOD_OPTIONS.get(method, {}), **options.get(method, {})}
            schedule = dict(base, shot=1, method=method, queries=2, tasks_per_step=SSV2_TASKS_PER_STEP, lr=1e-3,
                            weight_decay=1e-4, method_options=method_options, **(train_overrides or {}))

            def start_run(value=None, *, name=name, schedule=schedule, method=method) -> Path:
                """The prepared training-free start on all 5 training classes (0 episodes)."""
                settings = dict(schedule)
                if value is not None:
                    settings["method_options"] = {**settings["method_options"],
                                                  "metric_options": {SSV2_START_CHOICES[method][0]: value}}
                run_dir = work / (f"{name}-start" + (f"-{value}" if value is not None else ""))
                if not (run_dir / "last.json").exists():
                    run_training(resolve_config(TrainConfig, overrides=dict(
                        settings, way=5, split_file_dir=str(final_splits), out=str(run_dir), episodes=0)))
                return run_dir

            choice, start_dir = None, None
            if method in SSV2_START_CHOICES and "metric_options" not in options.get(method, {}):
                choice = choose_on_training_classes(method, start_run, base, final_splits)
                method_options["metric_options"] = {SSV2_START_CHOICES[method][0]: choice["chosen"]}
                start_dir = start_run(choice["chosen"])
            else:
                start_dir = start_run()
            started = time.perf_counter()
            fold_steps = []
            for k, folder in enumerate(fold_splits):
                run_dir = work / f"{name}-fold{k}"
                if not (run_dir / "last.json").exists():
                    run_training(resolve_config(TrainConfig, overrides=dict(
                        schedule, way=3, val_way=2, split_file_dir=str(folder), out=str(run_dir),
                        episodes=train_episodes, val_every=2, val_episodes=300, val_queries=3,
                        checkpoint_every=2, early_stop_patience=3, validate_at_start=True)))
                fold_steps.append(read_checkpoint(run_dir, prefer="best").step)
            steps = sorted(fold_steps)[len(fold_steps) // 2]  # the median of 5
            run_dir = work / name if steps else start_dir  # 0 steps: the trained run is the start
            if not (run_dir / "last.json").exists():
                run_training(resolve_config(TrainConfig, overrides=dict(
                    schedule, way=5, split_file_dir=str(final_splits), out=str(run_dir),
                    episodes=steps * SSV2_TASKS_PER_STEP, checkpoint_every=max(steps, 1))))
            print(json.dumps({"trained": method, "backbone": backbone, "options": method_options,
                              "fold_best_steps": fold_steps, "steps": steps, "start_choice": choice,
                              "seconds": round(time.perf_counter() - started, 1)}), flush=True)
            runs[method] = (run_dir, steps, fold_steps, {**method_options, **(train_overrides or {})}, start_dir)
        for shot in shots:
            common = dict(base, way=5, shot=shot, split_file=str(final_splits / "test.txt"), queries=1,
                          episodes=test_episodes)
            results = {}

            def evaluated(key, **extra):
                if key not in results:
                    results[key] = run_evaluation(resolve_config(EvalConfig, overrides=dict(common, **extra))).result
                return results[key]

            def paired(a, b) -> dict:
                comparison = compare_paired(a.episode_accuracies, b.episode_accuracies, bootstrap=2000)
                return {"difference": round(comparison.difference, 4), "ci95": round(comparison.ci95, 4),
                        "p_bootstrap": comparison.p_bootstrap}

            cell = [{"method": b, "trained": False, "result": evaluated(b, method=b)}
                    for b in (BASELINES if baselines else ())]
            best_free = max(cell, key=lambda r: r["result"].accuracy)["method"] if cell else None
            for m in methods:
                run_dir, steps, fold_steps, settings, start_dir = runs[m]
                start = evaluated(str(start_dir), checkpoint=str(start_dir))
                trained = evaluated(str(run_dir), checkpoint=str(run_dir))
                common_row = {"method": m, "options": settings, "tag": tag, "fold_best_steps": fold_steps}
                cell.append({**common_row, "trained": False, "checkpoint": "start", "steps": 0, "result": start})
                cell.append({**common_row, "trained": True, "checkpoint": "cross-validated", "steps": steps,
                             "result": trained, "versus_start": paired(trained, start)})
            for row in cell:
                result = row.pop("result")
                row = {"part": "ssv2", "backbone": backbone, "shot": shot, **row,
                       "accuracy": result.accuracy, "ci95": result.ci95, "episodes": result.episodes}
                if "checkpoint" in row and best_free:  # paired against the cell's best baseline
                    row.update(versus=best_free, versus_best_baseline=paired(result, results[best_free]))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fsar-demo-gains"))
    parser.add_argument("--parts", nargs="+", default=["quick", "full", "five-shot", "segmentation", "ssv2"],
                        choices=["quick", "full", "five-shot", "centred-reference", "segmentation", "ssv2"])
    parser.add_argument("--version", type=int, default=2, choices=(1, 2), help="demo version for quick/full")
    parser.add_argument("--test-episodes", type=int, default=1000, help="five-shot test episodes")
    parser.add_argument("--ssv2-train-episodes", type=int, default=400)
    parser.add_argument("--ssv2-test-episodes", type=int, default=500)
    parser.add_argument("--ssv2-shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--ssv2-methods", nargs="+", default=list(SSV2_METHODS), help="trained methods on ssv2-mini")
    parser.add_argument("--ssv2-backbones", nargs="+", default=["effnet-lite0+minilm", "effnet-lite0-grid+minilm"])
    parser.add_argument("--ssv2-options", nargs="*", default=[], metavar="METHOD:KEY=VALUE",
                        help="extra method options for a variant (its run folders get --ssv2-tag)")
    parser.add_argument("--ssv2-train", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings of a variant (e.g. lr=1e-4; its run folders get --ssv2-tag)")
    parser.add_argument("--ssv2-tag", default="", help="suffix of the run folders of an --ssv2-options variant")
    parser.add_argument("--ssv2-no-baselines", action="store_true", help="only the trained methods")
    parser.add_argument("--v1-root", type=Path, help="a generator-1 demo folder (fsar demo --version 1 --out DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"load_average": os.getloadavg(), "cpus": os.cpu_count()}), flush=True)
    results = []
    for part in args.parts:
        if part in ("quick", "full"):
            rows = [run_demo(args.work, part == "quick", args.version)]
        elif part == "five-shot":
            rows = five_shot(args.work, args.test_episodes, args.seed)
        elif part == "centred-reference":
            rows = centred_reference(args.work, args.test_episodes, args.seed)
        elif part == "segmentation":
            demo = args.work / "demo"
            rows = segmentation(demo / "synth-v2", demo / "features-v2", "effnet-lite0-grid+minilm", 160, "generator 2")
            if args.v1_root:
                rows += segmentation(args.v1_root / "synth", args.v1_root / "features", "effnet-lite0+minilm", 160,
                                     "generator 1")
        else:
            options = parse_method_options(args.ssv2_options)
            overrides = parse_method_options([f"train:{item}" for item in args.ssv2_train]).get("train", {})
            if (options or overrides) and not args.ssv2_tag:
                raise SystemExit("--ssv2-options / --ssv2-train need --ssv2-tag (the variant's run folders)")
            rows = ssv2(args.work, train_episodes=args.ssv2_train_episodes, test_episodes=args.ssv2_test_episodes,
                        seed=args.seed, image_size=160, shots=tuple(args.ssv2_shots), methods=tuple(args.ssv2_methods),
                        options=options, train_overrides=overrides, tag=args.ssv2_tag, backbones=tuple(args.ssv2_backbones),
                        baselines=not args.ssv2_no_baselines)
            if rows:
                print(ssv2_table(rows), flush=True)
        if part != "ssv2":  # ssv2 prints its rows as they come
            for row in rows:
                print(json.dumps(row), flush=True)
        results += rows
    print(json.dumps({"load_average_end": os.getloadavg()}), flush=True)
    (args.work / "demo_gains.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
