"""LGA benchmark: few-shot accuracy beside MA-FSAR and the training-free baselines, and the
segmentation ablation (CLUSTER-Segment vs uniform HARD vs TW-FINCH) where stage changes are known.

    python benchmarks/lga.py [--work /tmp/lga-bench] [--episodes 300] [--train-steps 150]

What it does (CPU, frozen embedded encoder ``effnet-lite0+minilm`` so features are computed once):

1. Renders the synthetic action set (``fsar.data.synth``, seed 0, 36 actions x 10 clips, 16
   frames of 112 px) unless present, and extracts 8 uniformly sampled frames' features for
   every clip (synthetic clips fed at their native 112 px, ssv2-mini at the encoder's 224 px).
2. Segmentation ablation on the synthetic clips: ``synth.json`` records where onset,
   progression and completion start; mapped onto the 8 sampled frames this gives the true stage
   of every frame. Reported per strategy: frame-level stage accuracy, mean absolute border
   error (frames) and exact recovery rate, on the encoder features and on raw pixels.
3. Few-shot, 5-way 1-shot, the *same* test episodes for every method (seeded sampler):
   training-free ``proto``/``otam``/``bimhm``; ``ma-fsar`` and ``lga`` (several settings)
   trained on training-class episodes with the same steps, optimiser and learning rate.
   Synthetic set: default split (train 20 / test 10 classes); descriptions from synth.json.
   ``../shared/data/ssv2-mini``: 10 classes, the first 5 (sorted) train, the last 5 test;
   descriptions from ``benchmarks/lga_ssv2_mini_descriptions.json`` (hand-written, no LLM) or
   the template fallback.

Every accuracy is mean ± 95% interval (1.96 · std / sqrt(n), population std) over n episodes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


# ----------------------------------------------------------------------------- features


def extract(manifest, encoder, *, num_frames: int, image_size: int, out: Path) -> dict[str, torch.Tensor]:
    """path -> (T, D) features of the eval view (uniform sampling), cached in ``out``."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from fsar.data import ClipLoader, TransformConfig

    if out.exists():
        return load_file(out)
    loader = ClipLoader(num_frames=num_frames, sampling="uniform", transform=TransformConfig.for_encoder(encoder, image_size=image_size))
    features = {}
    with torch.no_grad():
        for clip in tqdm(manifest.clips, desc=f"features {out.stem}", unit="clip"):
            frames = loader.load(clip, train=False)[None]
            features[str(clip.path)] = encoder.encode_frames(frames)[0].contiguous()
    save_file(features, str(out))
    return features


def sampled_indices(manifest, *, num_frames: int) -> dict[str, list[int]]:
    from fsar.data import ClipLoader

    loader = ClipLoader(num_frames=num_frames, sampling="uniform")
    return {str(c.path): loader.indices(c, train=False) for c in manifest.clips}


def pixel_features(manifest, *, num_frames: int, side: int = 16) -> dict[str, torch.Tensor]:
    """Raw pixels, downsampled to side x side: a feature-free view of the segmentation problem."""
    from fsar.data import ClipLoader

    loader = ClipLoader(num_frames=num_frames, sampling="uniform")
    out = {}
    for clip in manifest.clips:
        frames = loader.load_uint8(clip, train=False).float() / 255.0  # (T, C, H, W)
        out[str(clip.path)] = F.adaptive_avg_pool2d(frames, side).flatten(1)
    return out


# ----------------------------------------------------------------------------- segmentation ablation


def segmentation_ablation(synth_root: Path, features: dict[str, torch.Tensor], num_frames: int) -> list[dict]:
    from fsar.lga.segment import segment

    meta = json.loads((synth_root / "synth.json").read_text())
    keys, truth = [], []
    for clip in meta["clips"]:
        path = str(synth_root / clip["path"])
        if path not in features:
            continue
        a, b = clip["boundaries"]
        idx = torch.tensor(_indices_cache[path])
        keys.append(path)
        truth.append((idx >= a).long() + (idx >= b).long())  # true stage of each sampled frame
    truth = torch.stack(truth)  # (n, T)
    x = torch.stack([features[k].float() for k in keys])  # (n, T, D)
    rows = []
    true_borders = torch.stack([(truth < 1).sum(1), (truth < 2).sum(1)], 1)  # (n, 2)
    for method in ("cluster", "uniform", "tw-finch"):
        start = time.perf_counter()
        bounds = segment(x, 3, method)
        seconds = time.perf_counter() - start
        frames = torch.arange(num_frames)
        predicted = (frames >= bounds[:, 1:2]).long() + (frames >= bounds[:, 2:3]).long()
        rows.append({
            "segmentation": method,
            "frame_accuracy": (predicted == truth).float().mean().item(),
            "border_error": (bounds[:, 1:3] - true_borders).abs().float().mean().item(),
            "exact": (bounds[:, 1:3] == true_borders).all(1).float().mean().item(),
            "ms_per_clip": 1000 * seconds / len(keys),
            "clips": len(keys),
        })
    return rows


_indices_cache: dict[str, list[int]] = {}


# ----------------------------------------------------------------------------- episodes


@dataclass
class Episodes:
    manifest: object
    features: dict[str, torch.Tensor]
    way: int
    shot: int
    queries: int
    seed: int

    def __post_init__(self) -> None:
        from fsar.data import EpisodeSampler

        self.sampler = EpisodeSampler(self.manifest, way=self.way, shot=self.shot, queries=self.queries, seed=self.seed)

    def inputs(self, index: int):
        from fsar.data.inputs import EpisodeInputs

        ep = self.sampler.episode(index)
        stack = lambda clips: torch.stack([self.features[str(c.path)] for c in clips]).float()  # noqa: E731
        return EpisodeInputs(
            support=stack(ep.support),
            support_labels=torch.tensor(ep.support_labels),
            query=stack(ep.query),
            query_labels=torch.tensor(ep.query_labels),
            class_names=list(ep.class_names),
            features=True,
        )


def evaluate(method, episodes: Episodes, n: int) -> tuple[float, float, float]:
    """Mean accuracy (%), 95% interval, ms per episode; query labels hidden from the method."""
    import dataclasses

    method.eval()
    accuracies = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            inputs = episodes.inputs(i)
            labels = inputs.query_labels
            out = method(dataclasses.replace(inputs, query_labels=None))
            accuracies.append((out.log_probs.argmax(-1) == labels).float().mean().item())
    ms = 1000 * (time.perf_counter() - start) / n
    acc = torch.tensor(accuracies)
    return 100 * acc.mean().item(), 100 * 1.96 * acc.std(unbiased=False).item() / math.sqrt(n), ms


def train(method, episodes: Episodes, steps: int, lr: float) -> float:
    """Plain episodic training (AdamW, one episode per step); returns seconds."""
    if hasattr(method, "set_training_classes"):
        method.set_training_classes(list(episodes.manifest.classes))
    params = [p for p in method.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    method.train()
    start = time.perf_counter()
    for step in range(steps):
        out = method(episodes.inputs(step))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- runs


def few_shot(name: str, train_eps: Episodes, test_eps: Episodes, descriptions, args) -> list[dict]:
    """Every setting on the same test episodes. α only acts at inference (training predicts with
    V-V alone), so one trained LGA is also evaluated with α = 1 (V-V only) and α = 0 (V-T only)."""
    import fsar

    backbone = args.encoder
    settings = [
        ("proto", "proto", {}, [None]),
        ("otam", "otam", {}, [None]),
        ("bimhm", "bimhm", {}, [None]),
        ("ma-fsar", "ma-fsar", {}, [None]),
        ("lga", "lga", {"descriptions": descriptions}, [0.5, 1.0, 0.0]),
        ("lga, uniform (HARD) segments", "lga", {"descriptions": descriptions, "segmentation": "uniform"}, [0.5]),
        ("lga, template descriptions", "lga", {}, [0.5]),
        ("lga, visual residual in fusion", "lga", {"descriptions": descriptions, "fusion_residual": "visual"}, [0.5]),
    ]
    rows = []
    for label, method_name, options, alphas in settings:
        if args.only and args.only not in label:
            continue
        torch.manual_seed(args.seed)
        method = fsar.create_method(method_name, backbone=backbone, **options)
        seconds = 0.0
        if method.trainable:
            seconds = train(method, train_eps, args.train_steps, args.lr)
        for alpha in alphas:
            shown = label
            if alpha is not None:
                method.config.alpha = alpha
                shown = f"{label} (α = {alpha:g})"
            acc, ci, ms = evaluate(method, test_eps, args.episodes)
            rows.append({"data": name, "method": shown, "acc": acc, "ci95": ci, "episodes": args.episodes,
                         "train_steps": args.train_steps if method.trainable else 0, "train_s": seconds,
                         "eval_ms": ms})
            print(f"  {name:10s} {shown:40s} {acc:5.1f} ± {ci:4.1f}  (train {seconds:5.0f} s, "
                  f"{ms:5.1f} ms/episode)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lga-bench"))
    parser.add_argument("--episodes", type=int, default=300, help="test episodes per method")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--videos-per-class", type=int, default=10)
    parser.add_argument("--skip-ssv2", action="store_true")
    parser.add_argument("--skip-synth", action="store_true")
    parser.add_argument("--only", help="run only the settings whose label contains this text")
    parser.add_argument("--results", default="lga-results.json", help="file name of the JSON results in --work")
    parser.add_argument("--skip-segmentation", action="store_true")
    args = parser.parse_args()
    args.encoder = None
    torch.set_num_threads(args.threads)

    from fsar.data import Manifest
    from fsar.data.synth import SynthDatasetError, default_split, render_dataset
    from fsar.encoders import create_encoder
    from fsar.lga.describe import DescriptionCache

    args.work.mkdir(parents=True, exist_ok=True)
    encoder = create_encoder("effnet-lite0+minilm")
    encoder.eval()
    args.encoder = encoder  # one frozen encoder object shared by every method
    num_frames = 8
    results: dict[str, list] = {"segmentation": [], "few_shot": []}

    if not args.skip_synth:
        synth_root = args.work / "synth"
        synth_features = args.work / "synth-effnet.safetensors"
        try:
            render_dataset(synth_root, videos_per_class=args.videos_per_class, seed=0, frames=16, size=112)
        except SynthDatasetError:  # an older render in the work folder: redo it, drop its features
            render_dataset(synth_root, videos_per_class=args.videos_per_class, seed=0, frames=16, size=112,
                           overwrite=True)
            synth_features.unlink(missing_ok=True)
        manifest = Manifest.from_folder(synth_root)
        # The clips are rendered at 112 px: fed at 112 (no upsampling to the encoder's 224), 4x cheaper.
        features = extract(manifest, encoder, num_frames=num_frames, image_size=112,
                           out=synth_features)
        _indices_cache.update(sampled_indices(manifest, num_frames=num_frames))
        views = [] if args.skip_segmentation else [("effnet features", features)]
        if views:
            print("segmentation ablation, synthetic set (3 stages, 8 uniformly sampled frames)")
            views.append(("raw pixels 16x16", pixel_features(manifest, num_frames=num_frames)))
        for view, feats in views:
            for row in segmentation_ablation(synth_root, feats, num_frames):
                row["view"] = view
                results["segmentation"].append(row)
                print(f"  {view:17s} {row['segmentation']:9s} frame acc {100 * row['frame_accuracy']:5.1f}%  "
                      f"border error {row['border_error']:.2f} frames  exact {100 * row['exact']:5.1f}%  "
                      f"({row['ms_per_clip']:.3f} ms/clip, {row['clips']} clips)", flush=True)
        meta = json.loads((synth_root / "synth.json").read_text())
        descriptions = {k: list(v) for k, v in meta["descriptions"].items()}
        train_names, _, test_names = default_split(manifest.classes)
        train_eps = Episodes(manifest.subset(train_names), features, 5, 1, 3, args.seed + 1)
        test_eps = Episodes(manifest.subset(test_names), features, 5, 1, 1, args.seed)
        print(f"few-shot, synthetic set, 5-way 1-shot, {args.episodes} test episodes")
        results["few_shot"] += few_shot("synthetic", train_eps, test_eps, descriptions, args)

    ssv2 = SHARED / "data" / "ssv2-mini"
    if not args.skip_ssv2 and ssv2.is_dir():
        manifest = Manifest.from_folder(ssv2)
        features = extract(manifest, encoder, num_frames=num_frames, image_size=224,
                           out=args.work / "ssv2-mini-effnet.safetensors")
        cache = DescriptionCache(HERE / "lga_ssv2_mini_descriptions.json")
        descriptions = {n: e[3].stages for n, e in cache.entries.items()}
        names = sorted(manifest.classes)
        train_eps = Episodes(manifest.subset(names[:5]), features, 5, 1, 3, args.seed + 1)
        test_eps = Episodes(manifest.subset(names[5:]), features, 5, 1, 3, args.seed)
        print(f"few-shot, ssv2-mini (train: 5 classes, test: 5 classes), 5-way 1-shot, {args.episodes} test episodes")
        results["few_shot"] += few_shot("ssv2-mini", train_eps, test_eps, descriptions, args)

    (args.work / args.results).write_text(json.dumps(results, indent=2))
    print(f"results: {args.work / args.results}")


if __name__ == "__main__":
    main()
