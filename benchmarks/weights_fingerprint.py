"""Weights fingerprint cost: the old full-byte hash vs. the layout + sample (+ files) scheme.

    /work/venv/bin/python benchmarks/weights_fingerprint.py [--params 128e6] [--tensors 700] [--repeats 3]

Prints (see benchmarks/README.md, "Weights fingerprint"):
1. ``legacy_weights_fingerprint`` vs ``weights_fingerprint`` on one bf16 module of ``--params``
   parameters in 64 equal tensors (the old scheme reads every byte, the new one 256 elements each).
2. ``weights_fingerprint`` on a module with the tensor count of a 7B video MLLM (``--tensors``,
   Video-LLaVA-7B has about 700 counting its vision tower), tensors small: its cost is per tensor.
3. ``weight_file_digest`` on a sparse file of 4 GB and of 16 GB (a shard of a 7B checkpoint):
   its cost does not grow with the file size.
The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from fsar.encoders.fingerprint import legacy_weights_fingerprint, weight_file_digest, weights_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_cache import _best  # noqa: E402  (best-of-n wall time, shared with the cache benchmark)


def _module(total: int, tensors: int) -> nn.Module:
    per = max(total // tensors, 1)
    module = nn.Module()
    for i in range(tensors):
        module.register_buffer(f"w{i:04d}", torch.randn(per).to(torch.bfloat16))
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, default=128e6)
    parser.add_argument("--tensors", type=int, default=700)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), torch threads {torch.get_num_threads()}")

    big = _module(int(args.params), 64)
    legacy = _best(lambda: legacy_weights_fingerprint(big), args.repeats)
    new = _best(lambda: weights_fingerprint(big), args.repeats)
    gb = args.params * 2 / 1e9
    print("\n| module | legacy (every byte) | new (layout + sample) | ratio | legacy extrapolated to 7B |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| {args.params / 1e6:.0f}M params bf16 ({gb:.2f} GB), 64 tensors | {legacy * 1e3:.0f} ms | "
          f"{new * 1e3:.2f} ms | {legacy / new:.0f}x | {legacy * 7e9 / args.params:.0f} s |")
    del big

    many = _module(args.tensors * 4096, args.tensors)
    per_tensor = _best(lambda: weights_fingerprint(many), args.repeats)
    print(f"\n| {args.tensors} tensors (a 7B MLLM's count), new scheme | {per_tensor * 1e3:.1f} ms |")
    print("| --- | ---: |")

    with tempfile.TemporaryDirectory() as tmp:
        print("\n| sparse weight file | weight_file_digest |")
        print("| --- | ---: |")
        for size_gb in (4, 16):
            path = Path(tmp) / f"model-{size_gb}.safetensors"
            with open(path, "wb") as handle:
                handle.truncate(size_gb << 30)
            seconds = _best(lambda: weight_file_digest(path), args.repeats)
            print(f"| {size_gb} GB | {seconds * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
