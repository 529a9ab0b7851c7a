"""The most CLIP-SPM evaluation can reach on this machine (issue 16's >= 500 episodes/s target).

    python benchmarks/compute_bound.py [--threads N] [--shots 1 5]

CLIP-SPM's evaluation is compute-bound: its SPM prompt comes from the episode's token (the mean
of the episode's support class texts), and it is fused into every query clip's frames before a
transformer layer; PADM then runs a transformer layer across the episode's clips at every frame
index. Neither result can be reused across episodes. This script prints:

1. **GEMM rates** of this machine at the head's own shape (tokens x 512 @ 512 x 2048, the
   release's widths: 8 heads x 256, FFN 2048), float32 and bfloat16, for token counts from one
   episode's to many episodes' (what batching episodes would give), on ``--threads`` threads.
2. **FLOPs of one evaluation episode** of the head (``torch.utils.flop_counter``), 5-way,
   1 query per class, T = 8, D = 512, split into what a per-clip memory could skip (SF pass a:
   a support clip with its own class text; the support tokens' q/k/v projections in PADM,
   which depend on the clip alone) and what every episode must compute.
3. The **ceiling** = best GEMM rate / FLOPs that every episode must compute, in float32 and
   bfloat16: no implementation of the same maths runs faster on this machine.
4. The head's measured rate today (float32, and the same weights cast to bfloat16), for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fsar.methods.clip_spm import CLIPSPMHead  # noqa: E402

DIM, FRAMES, WAY = 512, 8, 5


def gemm_rate(tokens: int, dtype: torch.dtype, inner: int = 2048, seconds: float = 0.4) -> float:
    """GFLOP/s of ``Linear(DIM -> inner)`` on ``tokens`` rows, after a warm-up."""
    x = torch.randn(tokens, DIM).to(dtype)
    w = torch.randn(inner, DIM).to(dtype)
    for _ in range(3):
        F.linear(x, w)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        F.linear(x, w)
        calls += 1
    elapsed = time.perf_counter() - started
    return 2 * tokens * DIM * inner * calls / elapsed / 1e9


def episode(shot: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(shot)
    support = torch.randn(WAY * shot, FRAMES, DIM, generator=generator).to(dtype)
    query = torch.randn(WAY, FRAMES, DIM, generator=generator).to(dtype)
    labels = torch.arange(WAY).repeat_interleave(shot)
    text = torch.randn(WAY, DIM, generator=generator).to(dtype)
    return support, labels, query, text


def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def head_rate(head: CLIPSPMHead, shot: int, dtype: torch.dtype, seconds: float = 2.0) -> float:
    support, labels, query, text = episode(shot, dtype)
    with torch.no_grad():
        for _ in range(3):
            head(support, labels, query, WAY, text)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            head(support, labels, query, WAY, text)
            calls += 1
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report: dict = {"threads": args.threads, "torch": torch.__version__}

    rates: dict[str, dict[int, float]] = {}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        rates[name] = {tokens: gemm_rate(tokens, dtype) for tokens in (45, 218, 1024, 4096, 16384)}
        print(f"GEMM {name}: " + ", ".join(f"{t} tokens {r:.0f} GFLOP/s" for t, r in rates[name].items()), flush=True)
    report["gemm_gflops"] = rates

    head = CLIPSPMHead(DIM).eval()
    head_bf16 = CLIPSPMHead(DIM).eval()
    head_bf16.load_state_dict(head.state_dict())
    head_bf16 = head_bf16.to(torch.bfloat16)
    context = head.padm.context
    inner = context.heads * context.dim_head
    report["shots"] = {}
    for shot in args.shots:
        support, labels, query, text = episode(shot)
        total = flops(lambda: head(support, labels, query, WAY, text))
        pass_a = flops(lambda: head.sf(support, text[labels].unsqueeze(1)))
        padm_support_qkv = 2 * support.shape[0] * FRAMES * 3 * DIM * inner  # LN(x) @ W_q, W_k, W_v
        every_episode = total - pass_a - padm_support_qkv
        best = {name: max(r.values()) for name, r in rates.items()}
        row = {
            "gflop_total": total / 1e9, "gflop_pass_a": pass_a / 1e9, "gflop_padm_support_qkv": padm_support_qkv / 1e9,
            "gflop_every_episode": every_episode / 1e9,
            "ceiling_eps_float32": best["float32"] * 1e9 / every_episode,
            "ceiling_eps_bfloat16": best["bfloat16"] * 1e9 / every_episode,
            "measured_eps_float32": head_rate(head, shot, torch.float32),
            "measured_eps_bfloat16_weights": head_rate(head_bf16, shot, torch.bfloat16),
        }
        report["shots"][shot] = row
        print(
            f"{shot}-shot: {row['gflop_total']:.3f} GFLOP per episode, of which a per-clip memory could skip "
            f"{row['gflop_pass_a']:.3f} (SF pass a) + {row['gflop_padm_support_qkv']:.3f} (PADM support q/k/v); "
            f"every episode computes {row['gflop_every_episode']:.3f} GFLOP -> ceiling "
            f"{row['ceiling_eps_float32']:.0f} episodes/s in float32, {row['ceiling_eps_bfloat16']:.0f} in bfloat16 "
            f"(best GEMM rates above); the head today: {row['measured_eps_float32']:.1f} episodes/s float32, "
            f"{row['measured_eps_bfloat16_weights']:.1f} with bfloat16 weights", flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
