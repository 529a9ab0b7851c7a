"""Issue 5 figures through the engine: accuracy of every method, and training cost MA-FSAR vs CLIP-FSAR.

Part 1 (``--accuracy``): on the synthetic action set and on ``/work/shared/data/ssv2-mini``, every
method with the embedded pair (``effnet-lite0+minilm``), 5-way 1-shot and 5-shot, accuracy ± 95%
interval on the same seeded test episodes. Trainable methods are meta-trained first with
``fsar.engine`` (from the feature cache) on the training classes, validated on the validation
classes where there are any; training-free ones are evaluated directly. Classes never overlap:
synthetic: the default 20/6/10 split; ssv2-mini: 5 training and 5 test classes.

Part 2 (``--cost``): one training step (forward + backward + Adam) of ``ma-fsar`` (FgMA adapters,
CLIP frozen) and ``clip-fsar`` (full fine-tuning of the visual encoder) with full-size CLIP
ViT-B/32 (random weights: cost does not depend on values), one 5-way 1-shot task with one query
per class per step (10 clips x 8 frames x 224 px). Each method runs in its own subprocess, so the
peak resident memory (VmHWM, reset after the model is built) is that method's alone; time is the
median of the timed steps after one warm-up step. The two methods alternate, ``--rounds`` times.

Run: ``python benchmarks/methods_eval.py --accuracy --cost`` (prints markdown tables).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BACKBONE = "effnet-lite0+minilm"
TRAINED = ("ma-fsar", "clip-fsar", "lga")
TRAINING_FREE = ("proto", "otam", "bimhm", "zero-shot")


# ------------------------------------------------------------------------------------- part 1


def _split_files(manifest, parts, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, names in parts.items():
        lines = [f"{c.class_name}/{c.path.stem if c.path.is_file() else c.path.name}"
                 for n in names for c in manifest.clips_of(n)]
        (directory / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return directory


def accuracy_table(work: Path, *, train_episodes: int, test_episodes: int, image_size: int, seed: int,
                   shots: tuple[int, ...], datasets: list[str]) -> list[dict]:
    from fsar.data.manifest import Manifest
    from fsar.data.synth import default_split, render_dataset
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features
    from fsar.engine.config import EvalConfig, TrainConfig, resolve_config
    from fsar.engine.run import run_evaluation, run_training
    from fsar.engine.sources import loader_for
    from fsar.methods import list_methods

    available = set(list_methods())
    sets = {}
    if "synthetic" in datasets:
        root = render_dataset(work / "synth", seed=seed, videos_per_class=10, frames=16, size=112, progress=False)
        manifest = Manifest.from_folder(root)
        train, val, test = default_split(manifest.classes)
        sets["synthetic"] = (root, _split_files(manifest, {"train": train, "val": val, "test": test}, work / "synth-splits"),
                             dict(dataset_kind="temporal"))
    if "ssv2-mini" in datasets:
        root = SHARED / "data" / "ssv2-mini"
        if not root.is_dir():
            print(f"skipping ssv2-mini: {root} not found", file=sys.stderr)
        else:
            manifest = Manifest.from_folder(root)
            names = manifest.classes
            sets["ssv2-mini"] = (root, _split_files(manifest, {"train": names[:5], "test": names[5:]}, work / "ssv2-splits"),
                                 dict(dataset_kind="temporal"))
    rows = []
    encoder = create_encoder(BACKBONE)
    loader = loader_for(encoder, num_frames=8, image_size=image_size)
    for name, (root, splits, options) in sets.items():
        features = work / f"features-{name}"
        extract_features(Manifest.from_folder(root), encoder, loader, features, backbone_options={"weights": None},
                         progress=True)
        for shot in shots:
            common = dict(data=str(root), backbone=BACKBONE, way=5, shot=shot, seed=seed, image_size=image_size,
                          features=str(features), progress=False)
            for method in TRAINED + TRAINING_FREE:
                if method not in available:
                    continue
                row = {"data": name, "method": method, "shot": shot, "trained": method in TRAINED}
                started = time.perf_counter()
                try:
                    extra = {}
                    if method in TRAINED:
                        run_dir = work / f"run-{name}-{method}-{shot}shot"
                        has_val = (splits / "val.txt").is_file()
                        train_config = resolve_config(TrainConfig, overrides=dict(
                            common, method=method, split_file_dir=str(splits), out=str(run_dir),
                            queries=1 if name == "ssv2-mini" and shot == 5 else 2,
                            episodes=train_episodes, tasks_per_step=8, lr=1e-3, val_every=10 if has_val else 0,
                            val_episodes=100, checkpoint_every=10,
                            method_options=options if method == "ma-fsar" else {},
                        ))
                        if not (run_dir / "last.json").exists():
                            run_training(train_config)
                        extra = dict(checkpoint=str(run_dir))
                    else:
                        extra = dict(method=method)
                    config = resolve_config(EvalConfig, overrides=dict(
                        common, split_file=str(splits / "test.txt"), queries=1, episodes=test_episodes, **extra))
                    result = run_evaluation(config).result
                    row.update(accuracy=result.accuracy, ci95=result.ci95, episodes=result.episodes)
                except (ValueError, RuntimeError) as error:
                    row.update(error=str(error).split("\n")[0][:160])
                row["seconds"] = round(time.perf_counter() - started, 1)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


# ------------------------------------------------------------------------------------- part 2


def _peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def one_method_cost(method_name: str, steps: int) -> dict:
    """Runs inside a fresh subprocess: build, reset peak RSS, 1 warm-up + ``steps`` timed steps."""
    import torch

    import fsar
    from fsar.data.inputs import EpisodeInputs

    torch.manual_seed(0)
    method = fsar.create_method(method_name, backbone="clip-vit-b32", weights="random")
    classes = [f"action number {i}" for i in range(64)]
    if hasattr(method, "set_training_classes"):
        method.set_training_classes(classes)
    method.train()
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    inputs = EpisodeInputs(
        support=torch.randn(5, 8, 3, 224, 224, generator=g), support_labels=torch.arange(5),
        query=torch.randn(5, 8, 3, 224, 224, generator=g), query_labels=torch.arange(5),
        class_names=classes[:5],
    )
    method.text_bank.template_features(classes[:5])  # the frozen text side is cached, as in training
    baseline_kib = _status_kib("VmRSS")
    _peak_rss_reset()
    times, cpu_times = [], []
    for step in range(steps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        method(inputs).loss.backward()
        optimizer.step()
        if step:  # step 0 is the warm-up (allocates Adam's state)
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    return {
        "method": method_name,
        "trainable_params": sum(p.numel() for p in trainable),
        "step_seconds": statistics.median(times),
        "step_seconds_all": times,
        "step_cpu_seconds": statistics.median(cpu_times),
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "rss_before_steps_mib": baseline_kib / 1024,
        "threads": torch.get_num_threads(),
    }


def cost_table(rounds: int, steps: int) -> list[dict]:
    results = []
    for _ in range(rounds):
        for name in ("ma-fsar", "clip-fsar"):
            output = subprocess.run(
                [sys.executable, __file__, "--cost-child", name, "--steps", str(steps)],
                check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            ).stdout.strip().splitlines()[-1]
            result = json.loads(output)
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


# ------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--work", default="bench-methods", help="working folder (rendered data, caches, runs)")
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "ssv2-mini"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--train-episodes", type=int, default=480)
    parser.add_argument("--test-episodes", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cost-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cost_child:
        print(json.dumps(one_method_cost(args.cost_child, args.steps)))
        return
    if args.accuracy:
        rows = accuracy_table(Path(args.work), train_episodes=args.train_episodes, test_episodes=args.test_episodes,
                              image_size=args.image_size, seed=args.seed, shots=tuple(args.shots),
                              datasets=args.datasets)
        print("\n| data | method | trained | 5-way 1-shot | 5-way 5-shot |\n| --- | --- | --- | ---: | ---: |")
        keys = sorted({(r["data"], r["method"], r["trained"]) for r in rows}, key=lambda k: (k[0], not k[2], k[1]))
        for data, method, trained in keys:
            cells = []
            for shot in (1, 5):
                match = [r for r in rows if (r["data"], r["method"], r["shot"]) == (data, method, shot)]
                if not match:
                    cells.append("–")
                elif "error" in match[0]:
                    cells.append(f"n/a ({match[0]['error'][:60]})")
                else:
                    r = match[0]
                    cells.append(f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f} ({r['episodes']})")
            print(f"| {data} | {method} | {'yes' if trained else 'no'} | {cells[0]} | {cells[1]} |")
    if args.cost:
        results = cost_table(args.rounds, args.steps)
        by = {name: [r for r in results if r["method"] == name] for name in ("ma-fsar", "clip-fsar")}
        time_ma = statistics.median(r["step_seconds"] for r in by["ma-fsar"])
        time_clip = statistics.median(r["step_seconds"] for r in by["clip-fsar"])
        mem_ma = statistics.median(r["peak_rss_mib"] for r in by["ma-fsar"])
        mem_clip = statistics.median(r["peak_rss_mib"] for r in by["clip-fsar"])
        cpu_ma = statistics.median(r.get("step_cpu_seconds", float("nan")) for r in by["ma-fsar"])
        cpu_clip = statistics.median(r.get("step_cpu_seconds", float("nan")) for r in by["clip-fsar"])
        print("\n| method | trainable params | wall s / step | CPU s / step | peak RSS in steps (MiB) |\n"
              "| --- | ---: | ---: | ---: | ---: |")
        for name, t, c, m in (("ma-fsar", time_ma, cpu_ma, mem_ma), ("clip-fsar", time_clip, cpu_clip, mem_clip)):
            print(f"| {name} | {by[name][0]['trainable_params']:,} | {t:.2f} | {c:.2f} | {m:.0f} |")
        print(f"\nMA-FSAR / CLIP-FSAR: wall time {time_ma / time_clip:.2f}x, CPU time {cpu_ma / cpu_clip:.2f}x, "
              f"peak memory {mem_ma / mem_clip:.2f}x")


if __name__ == "__main__":
    main()
