"""Per-episode cost of the few-shot methods (training step = forward + backward + Adam).

Two tables:

1. Method heads on cached features (embedded pair, ``features=True``): what a method costs on
   top of its encoder (TPCM / modulation, text branch, metric, losses).
2. Encoder in the loop, full-size CLIP ViT-B/32 with random weights: MA-FSAR with FgMA
   adapters vs. CLIP-FSAR with full fine-tuning vs. MA-FSAR on a frozen CLIP (the paper's
   Table 8/15 comparison, here on CPU), with the trainable parameter counts.

Timings are medians of a few repeats on whatever machine runs this; compare ratios within one
run. Run: ``python benchmarks/methods.py [--skip-clip] [--repeats N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fsar
from fsar.encoders import create_encoder
from fsar.data.inputs import EpisodeInputs

CLASSES = [f"action number {i}" for i in range(64)]


def episode(*, way: int, shot: int, queries: int, frames: int, dim: int | None, size: int = 224, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (frames, dim) if dim is not None else (frames, 3, size, size)
    return EpisodeInputs(
        support=torch.randn(way * shot, *shape, generator=g),
        support_labels=torch.arange(way).repeat_interleave(shot),
        query=torch.randn(way * queries, *shape, generator=g),
        query_labels=torch.arange(way).repeat_interleave(queries),
        class_names=CLASSES[:way],
        features=dim is not None,
    )


def time_step(method, inputs, repeats: int) -> float:
    """Median seconds of one training step (or one eval forward for training-free methods)."""
    params = [p for p in method.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-4) if params else None
    times = []
    for index in range(repeats + 1):  # first run = warm-up (text bank fill, allocator)
        start = time.perf_counter()
        if optimiser is not None:
            method.train()
            out = method(inputs)
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            optimiser.step()
        else:
            method.eval()
            with torch.no_grad():
                method(inputs)
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def trainable(method) -> int:
    return sum(p.numel() for p in method.parameters() if p.requires_grad)


def heads_table(repeats: int) -> None:
    encoder = create_encoder("effnet-lite0+minilm", weights="random")
    inputs = episode(way=5, shot=1, queries=5, frames=8, dim=1280)
    print("\n## Heads on cached features (effnet-lite0+minilm, 5-way 1-shot, 5 queries/class, T=8)\n")
    print("| method | trainable params | ms / episode |")
    print("|---|---:|---:|")
    rows = [
        ("otam (training-free, eval)", "otam", {}),
        ("ma-fsar (TPCM + text branch + OTAM)", "ma-fsar", {}),
        ("clip-fsar (modulation + OTAM + classification)", "clip-fsar", {"training_classes": CLASSES}),
    ]
    for label, name, options in rows:
        torch.manual_seed(0)
        method = fsar.create_method(name, backbone=encoder, **options)
        print(f"| {label} | {trainable(method):,} | {1000 * time_step(method, inputs, repeats):.1f} |")


def clip_table(repeats: int) -> None:
    frames, way, queries = 8, 5, 1
    inputs = episode(way=way, shot=1, queries=queries, frames=frames, dim=None)
    print(
        f"\n## Encoder in the loop (CLIP ViT-B/32 random weights, {way}-way 1-shot, "
        f"{queries} query/class, T={frames}, 224 px)\n"
    )
    print("| method | finetune | trainable params | s / training step |")
    print("|---|---|---:|---:|")
    rows = [
        ("ma-fsar", "frozen", {}),
        ("ma-fsar", "adapters", {}),
        ("clip-fsar", "full", {"training_classes": CLASSES}),
    ]
    for name, finetune, options in rows:
        torch.manual_seed(0)
        method = fsar.create_method(name, backbone="clip-vit-b32", weights="random", finetune=finetune, **options)
        seconds = time_step(method, inputs, repeats)
        print(f"| {name} | {finetune} | {trainable(method):,} | {seconds:.2f} |")
        del method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-clip", action="store_true", help="only the cheap heads table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    heads_table(args.repeats)
    if not args.skip_clip:
        clip_table(args.repeats)


if __name__ == "__main__":
    main()
