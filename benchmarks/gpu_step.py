"""One training step on an accelerator: time and peak memory per method, full precision and AMP.

The figure the MA-FSAR paper reports in its Table 15 (CLIP ViT-B/32, one GPU): MA-FSAR 1.11 s/it
and 11.9 GB against CLIP-FSAR's 1.34 s/it and 13.2 GB. Here: one 5-way K-shot task per step
(``--queries`` per class, ``--frames`` frames of ``--image-size`` px), forward + backward +
Adam, random weights of the full-size backbone (cost does not depend on values). Each
(method, precision) runs in a fresh subprocess, so its peak memory is its own:
``torch.cuda.max_memory_allocated`` after the model is built and moved (reset there) on CUDA,
the process's peak RSS (VmHWM, reset there) on CPU. Time: median of ``--steps`` timed steps
after ``--warmup`` steps, with ``torch.cuda.synchronize`` around each on CUDA.

    python benchmarks/gpu_step.py --device cuda                       # fp32 and bf16, ma-fsar vs clip-fsar
    python benchmarks/gpu_step.py --device cpu --tiny --steps 1       # the same code path, test-sized

``--tiny`` swaps in a CLIP of a few thousand parameters (same classes): a smoke run of this
script, not a figure. ``benchmarks/gpu_check.sh`` runs the whole device check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from methods_eval import _peak_rss_reset, _status_kib  # this folder: the CPU cost benchmark's /proc readers

TINY_CLIP = {"image_size": 32, "patch_size": 16, "width": 32, "vision_layers": 1, "heads": 2, "text_width": 32,
             "text_layers": 1, "text_heads": 2, "projection_dim": 16, "vocab_size": 64}
PAPER = {"ma-fsar": (1.11, 11.9), "clip-fsar": (1.34, 13.2)}  # Table 15: s/it, GB (ViT-B/32)


def one_run(args: argparse.Namespace) -> dict:
    """Inside a fresh subprocess: build, reset the peak, warm up, time ``args.steps`` steps."""
    import torch

    import fsar
    from fsar.data.inputs import EpisodeInputs

    device = torch.device(args.device)
    torch.manual_seed(0)
    options = {"encoder_options": dict(TINY_CLIP)} if args.tiny else {}
    method = fsar.create_method(args.child, backbone=args.backbone, weights="random", **options).to(device)
    classes = [f"action number {i}" for i in range(64)]
    method.set_training_classes(classes)
    method.train()
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-5)
    size = TINY_CLIP["image_size"] if args.tiny else args.image_size
    g = torch.Generator().manual_seed(0)
    n_support, n_query = args.way * args.shot, args.way * args.queries
    inputs = EpisodeInputs(
        support=torch.randn(n_support, args.frames, 3, size, size, generator=g).to(device),
        support_labels=torch.arange(args.way).repeat_interleave(args.shot).to(device),
        query=torch.randn(n_query, args.frames, 3, size, size, generator=g).to(device),
        query_labels=torch.arange(args.way).repeat_interleave(args.queries).to(device),
        class_names=classes[: args.way],
    )
    if args.amp == "off":
        autocast, scaler = contextlib.nullcontext, None
    else:
        dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
        autocast = lambda: torch.autocast(device_type=device.type, dtype=dtype)  # noqa: E731
        scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        _peak_rss_reset()
        before = _status_kib("VmRSS") * 1024
    times = []
    for step in range(args.warmup + args.steps):
        sync()
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = method(inputs).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        sync()
        if step >= args.warmup:  # the first steps allocate Adam's state and pick kernels
            times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) if cuda else _status_kib("VmHWM") * 1024
    return {
        "method": args.child, "device": str(device), "amp": args.amp, "backbone": args.backbone, "tiny": args.tiny,
        "trainable_params": sum(p.numel() for p in trainable), "loss": float(loss.detach().float()),
        "step_seconds": statistics.median(times), "step_seconds_all": times,
        "peak_gib": peak / 2**30, "before_steps_gib": before / 2**30,
        "gpu": torch.cuda.get_device_name(device) if cuda else None, "torch": torch.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--methods", nargs="+", default=["ma-fsar", "clip-fsar"])
    parser.add_argument("--amp", nargs="+", default=["off", "bf16"], choices=["off", "bf16", "fp16"])
    parser.add_argument("--backbone", default="clip-vit-b32")
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--queries", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="test-sized CLIP: a smoke run, not a figure")
    parser.add_argument("--json", type=Path, help="write every run's record here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.amp = args.amp[0]
        print(json.dumps(one_run(args)), flush=True)
        return 0

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_step: --device cuda, but torch sees no CUDA device (use --device cpu)", file=sys.stderr)
        return 2
    records = []
    for amp in args.amp:
        for name in args.methods:
            command = [sys.executable, __file__, "--child", name, "--amp", amp, "--device", args.device,
                       "--backbone", args.backbone, "--way", str(args.way), "--shot", str(args.shot),
                       "--queries", str(args.queries), "--frames", str(args.frames),
                       "--image-size", str(args.image_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       *(["--tiny"] if args.tiny else [])]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode != 0:
                print(f"gpu_step: {name} amp={amp} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                return 1
            record = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(record), flush=True)
            records.append(record)
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")

    memory = "peak CUDA memory allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"\n{args.backbone}{' (TINY: smoke run, not a figure)' if args.tiny else ''}, {args.way}-way "
          f"{args.shot}-shot, {args.queries} query/class, {args.frames} x {TINY_CLIP['image_size'] if args.tiny else args.image_size} px, "
          f"median of {args.steps} steps after {args.warmup}; device {records[0]['gpu'] or args.device}\n")
    print(f"| method | precision | trainable params | s / step | {memory} (GiB) | paper (Table 15) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for r in records:
        paper = PAPER.get(r["method"])
        cite = f"{paper[0]} s/it, {paper[1]} GB (precision not stated)" if paper and r["backbone"] == "clip-vit-b32" else ""
        print(f"| {r['method']} | {r['amp']} | {r['trainable_params']:,} | {r['step_seconds']:.3f} | "
              f"{r['peak_gib']:.2f} | {cite} |")
    by = {(r["method"], r["amp"]): r for r in records}
    for amp in args.amp:
        a, b = by.get(("ma-fsar", amp)), by.get(("clip-fsar", amp))
        if a and b:
            print(f"\nma-fsar / clip-fsar ({amp}): time {a['step_seconds'] / b['step_seconds']:.2f}x, "
                  f"memory {a['peak_gib'] / b['peak_gib']:.2f}x (paper: 0.83x, 0.90x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
