"""Issue 11 figures for CLIP-SPM (prints markdown tables; every part is a flag).

``--accuracy``: 5-way accuracy ± 95% interval of ``clip-spm`` (transductive and inductive PADM)
beside ``ma-fsar``, ``clip-fsar``, ``lga`` and the training-free ``proto``/``otam``/``bimhm`` on the
synthetic set and ``../shared/data/ssv2-mini``, embedded pair ``effnet-lite0+minilm`` (frozen,
from the feature cache), every method on the **same** seeded test episodes. Trainable methods
meta-train ``--train-episodes`` episodes (8 tasks per Adam step, lr 1e-3 for every method, as in
``benchmarks/methods_eval.py``), validated on the validation classes where there are any.

``--hsmr-ablation``: ``clip-spm`` with the HSMR weight 0 (HSMR off) and 1 (default) on the
synthetic set, where appearance is drawn independently of the class and motion is the only cue;
same training episodes and test episodes, with the paired difference and its interval.

``--params``: parameters, total and trainable, of ``clip-spm`` on full-size CLIP ViT-B/16 (random
weights: counts do not depend on values) in each fine-tuning mode, beside the release's
configuration (visual encoder fully fine-tuned + the head at the release's widths; the release keeps
no text encoder in its model).

``--cost``: one training step (forward + backward + Adam) of ``clip-spm``, ``ma-fsar`` and
``clip-fsar`` on full-size CLIP ViT-B/32 with random weights on the CPU, one 5-way 1-shot task with
one query per class (10 clips x 8 frames x 224 px); each method in its own subprocess
(``benchmarks/methods_eval.py --cost-child``), peak RSS = VmHWM reset after the model is built.

Run: ``python benchmarks/clip_spm.py --accuracy --hsmr-ablation --params --cost``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from methods_eval import BACKBONE, SHARED, _split_files  # noqa: E402

#: (row label, method, method options). Labels name the PADM mode (transductive uses all queries).
VARIANTS = (
    ("clip-spm (padm=transductive)", "clip-spm", {"padm": "transductive"}),
    ("clip-spm (padm=inductive)", "clip-spm", {"padm": "inductive"}),
    ("ma-fsar", "ma-fsar", {"dataset_kind": "temporal"}),
    ("clip-fsar", "clip-fsar", {}),
    ("lga", "lga", {}),
    ("proto", "proto", None),
    ("otam", "otam", None),
    ("bimhm", "bimhm", None),
)


def _datasets(work: Path, names: list[str], seed: int) -> dict:
    from fsar.data.manifest import Manifest
    from fsar.data.synth import default_split, render_dataset

    sets = {}
    if "synthetic" in names:
        root = render_dataset(work / "synth", seed=seed, videos_per_class=10, frames=16, size=112, progress=False)
        manifest = Manifest.from_folder(root)
        train, val, test = default_split(manifest.classes)
        sets["synthetic"] = (root, _split_files(manifest, {"train": train, "val": val, "test": test}, work / "synth-splits"))
    if "ssv2-mini" in names:
        root = SHARED / "data" / "ssv2-mini"
        if not root.is_dir():
            print(f"skipping ssv2-mini: {root} not found", file=sys.stderr)
        else:
            manifest = Manifest.from_folder(root)
            classes = manifest.classes
            sets["ssv2-mini"] = (root, _split_files(manifest, {"train": classes[:5], "test": classes[5:]},
                                                    work / "ssv2-splits"))
    return sets


def _features(work: Path, name: str, root: Path, image_size: int) -> Path:
    from fsar.data.manifest import Manifest
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features
    from fsar.engine.sources import loader_for

    encoder = create_encoder(BACKBONE)
    features = work / f"features-{name}-{image_size}"
    extract_features(Manifest.from_folder(root), encoder, loader_for(encoder, num_frames=8, image_size=image_size),
                     features, backbone_options={"weights": None}, progress=False)
    return features


def _run(label: str, method: str, options: dict | None, *, data: str, root: Path, splits: Path, features: Path,
         work: Path, shot: int, seed: int, image_size: int, train_episodes: int, test_episodes: int):
    """Train (if trainable) and evaluate one variant -> (row dict, EvalResult or None)."""
    from fsar.engine.config import EvalConfig, TrainConfig, resolve_config
    from fsar.engine.run import run_evaluation, run_training

    common = dict(data=str(root), backbone=BACKBONE, way=5, shot=shot, seed=seed, image_size=image_size,
                  features=str(features), progress=False)
    row = {"data": data, "method": label, "shot": shot, "trained": options is not None}
    started = time.perf_counter()
    result = None
    try:
        if options is not None:
            slug = label.replace(" ", "").replace("(", "-").replace(")", "").replace("=", "-")
            run_dir = work / f"run-{data}-{slug}-{shot}shot"
            has_val = (splits / "val.txt").is_file()
            train_config = resolve_config(TrainConfig, overrides=dict(
                common, method=method, split_file_dir=str(splits), out=str(run_dir),
                queries=1 if data == "ssv2-mini" and shot == 5 else 2, episodes=train_episodes, tasks_per_step=8,
                lr=1e-3, val_every=10 if has_val else 0, val_episodes=100, checkpoint_every=10,
                method_options=options,
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
    return row, result


def _cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if "error" in row:
        return f"n/a ({row['error'][:60]})"
    return f"{100 * row['accuracy']:.1f} ± {100 * row['ci95']:.1f} ({row['episodes']})"


def accuracy(args) -> None:
    work = Path(args.work)
    rows = []
    for data, (root, splits) in _datasets(work, args.datasets, args.seed).items():
        features = _features(work, data, root, args.image_size)
        for shot in args.shots:
            for label, method, options in VARIANTS:
                row, _ = _run(label, method, options, data=data, root=root, splits=splits, features=features,
                              work=work, shot=shot, seed=args.seed, image_size=args.image_size,
                              train_episodes=args.train_episodes, test_episodes=args.test_episodes)
                rows.append(row)
    shots = list(args.shots)
    print("\n| data | method | trained | " + " | ".join(f"5-way {s}-shot" for s in shots) + " |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in shots) + " |")
    for data in dict.fromkeys(r["data"] for r in rows):
        for label, _, options in VARIANTS:
            cells = [_cell(next((r for r in rows if (r["data"], r["method"], r["shot"]) == (data, label, s)), None))
                     for s in shots]
            print(f"| {data} | {label} | {'yes' if options is not None else 'no'} | " + " | ".join(cells) + " |")


def hsmr_ablation(args) -> None:
    import torch

    work = Path(args.work)
    root, splits = _datasets(work, ["synthetic"], args.seed)["synthetic"]
    features = _features(work, "synthetic", root, args.image_size)
    results = {}
    for weight in (0.0, 1.0):
        # weight 1 is the default: the same run as the accuracy table's row (reused when it exists)
        label = "clip-spm (padm=transductive)" if weight == 1.0 else f"clip-spm (hsmr weight {weight:g})"
        options = {"padm": "transductive"} if weight == 1.0 else {"hsmr_weight_init": weight}
        _, results[weight] = _run(label, "clip-spm", options, data="synthetic", root=root,
                                  splits=splits, features=features, work=work, shot=1, seed=args.seed,
                                  image_size=args.image_size, train_episodes=args.train_episodes,
                                  test_episodes=args.test_episodes)
    print("\n| clip-spm on the synthetic set, 5-way 1-shot, padm=transductive | accuracy (%) |\n| --- | ---: |")
    for weight, result in results.items():
        print(f"| HSMR weight {weight:g} | {100 * result.accuracy:.1f} ± {100 * result.ci95:.1f} ({result.episodes}) |")
    difference = (torch.tensor(results[1.0].episode_accuracies, dtype=torch.float64)
                  - torch.tensor(results[0.0].episode_accuracies, dtype=torch.float64))
    half = 1.96 * difference.std(correction=0).item() / len(difference) ** 0.5
    print(f"| paired difference (weight 1 - weight 0), same episodes | {100 * difference.mean().item():+.1f} ± "
          f"{100 * half:.1f} |")


def _count(module) -> tuple[int, int]:
    return (sum(p.numel() for p in module.parameters()),
            sum(p.numel() for p in module.parameters() if p.requires_grad))


def params(args) -> None:
    import torch

    import fsar
    from fsar.methods.clip_spm import CLIPSPMHead

    print("\n| clip-spm on clip-vit-b16 (random weights) | total | trainable | of which the head |\n"
          "| --- | ---: | ---: | ---: |")
    for finetune in ("full", "frozen", "adapters"):
        torch.manual_seed(0)
        method = fsar.create_method("clip-spm", backbone="clip-vit-b16", weights="random", finetune=finetune)
        total, trainable = _count(method)
        head_total, _ = _count(method.head)
        visual = sum(p.numel() for n, p in method.encoder.clip.named_parameters()
                     if n.startswith(("vision_model.", "visual_projection.")))
        print(f"| fsar, finetune={finetune} | {total:,} | {trainable:,} | {head_total:,} |", flush=True)
        if finetune == "full":
            release_head = _count(CLIPSPMHead(512, heads=8, dim_head=256, mlp_dim=2048, prompt_hidden=2048,
                                              hsmr_weight="learnable"))[0] + 1  # + the unused `scale`
            release_visual = visual
        del method
    print(f"| release (`model_clipspm.CNN`: visual encoder fine-tuned + head, no text tower) | "
          f"{release_visual + release_head:,} | {release_visual + release_head:,} | {release_head:,} |")


def cost(args) -> None:
    names = ("clip-spm", "ma-fsar", "clip-fsar")
    results = []
    for _ in range(args.rounds):
        for name in names:
            output = subprocess.run(
                [sys.executable, str(HERE / "methods_eval.py"), "--cost-child", name, "--steps", str(args.steps)],
                check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            ).stdout.strip().splitlines()[-1]
            results.append(json.loads(output))
            print(output, flush=True)
    print("\n| method (clip-vit-b32, random weights, CPU) | trainable params | wall s / step | CPU s / step | "
          "peak RSS in steps (MiB) |\n| --- | ---: | ---: | ---: | ---: |")
    for name in names:
        mine = [r for r in results if r["method"] == name]
        wall = statistics.median(r["step_seconds"] for r in mine)
        cpu = statistics.median(r["step_cpu_seconds"] for r in mine)
        peak = statistics.median(r["peak_rss_mib"] for r in mine)
        print(f"| {name} | {mine[0]['trainable_params']:,} | {wall:.1f} | {cpu:.1f} | {peak:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--hsmr-ablation", action="store_true")
    parser.add_argument("--params", action="store_true")
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--work", default="bench-clip-spm", help="working folder (rendered data, caches, runs)")
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "ssv2-mini"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1])
    parser.add_argument("--train-episodes", type=int, default=160)
    parser.add_argument("--test-episodes", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.params:
        params(args)
    if args.accuracy:
        accuracy(args)
    if args.hsmr_ablation:
        hsmr_ablation(args)
    if args.cost:
        cost(args)
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
