"""Speed of the matching metrics (fsar.metrics) against the originals' loop structure.

Usage: ``python benchmarks/metrics.py [--threads 2] [--repeats 30] [--skip-scaling]``

1. Head to head, 5-way 5-shot, 50 queries, T=8, D=512: every reference head of
   ``../shared/reference`` against ``benchmarks/_metrics_peer.py`` (our re-implementation of
   the originals' loop structure: per-cell OTAM loop, support repeated per query for HyRSM,
   loop over classes for TRX). Outputs are compared first; then the two are timed in
   alternating blocks of consecutive calls (5 peer calls, 5 of ours, ...; the first of each
   block is a warm-up) so that both see the same machine load and both run warm, as in the
   reference README's method, without autograd (no_grad) and with autograd (inputs require grad; forward only, as the
   reference README's timings). The README's recorded times of the original code are printed
   beside them.
2. Episodes per second of every metric (our defaults included), forward and forward+backward.
3. How the time grows with T = 8, 16, 32 and with the number of queries.

Each figure is the median (or, with ``--stat min``, the minimum) over ``--repeats`` calls after
warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _metrics_peer as peer  # noqa: E402

import fsar.metrics as metrics  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
README_KEYS = {
    "otam_clipfsar": "otam_clipfsar (CNN_OTAM_CLIPFSAR metric, OTAM_cum_dist_v2 l=0.5, vs 5 prototypes)",
    "otam_plain": "otam_plain (fsar CNN_OTAM, OTAM_cum_dist l=0.1, vs 25 support videos)",
    "bimhm_hyrsm1shot": "bimhm_hyrsm1shot (vs 25 support videos)",
    "bimhm_hyrsm5shot": "bimhm_hyrsm5shot (vs 5 prototypes)",
    "trx (out 128)": "trx (temp_set [2,3], out_dim 128, eval)",
    "trx (out 1152)": "trx (temp_set [2,3], out_dim 1152 = peer default, eval)",
    "proto_tsn_cos": "proto_tsn_cos",
    "proto_tsn_sqeuclid": "proto_tsn_sqeuclid",
}
# the targets: >= 10x for the OTAM heads and the 1-shot Bi-MHM head, >= 1x otherwise
TARGETS = {"otam_plain": 10.0, "otam_clipfsar": 10.0, "bimhm_hyrsm1shot": 10.0}

Call = Callable[[], torch.Tensor]
STAT = "median"  # or "min" (--stat): the minimum estimates the uncontended cost on a shared machine


def episode(way=5, shot=5, n_query=50, frames=8, dim=512, seed=0, grad=False):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(way).repeat(shot)
    support = torch.randn(way * shot, frames, dim, generator=generator) + 0.2
    query = torch.randn(n_query, frames, dim, generator=generator) + 0.2
    if grad:
        support.requires_grad_(True)
        query.requires_grad_(True)
    return support, labels, query, way


def time_calls(calls: list[Call], repeats: int, warmup: int = 3, block: int = 5) -> list[float]:
    """Milliseconds of each call (``STAT`` over about ``repeats`` calls each).

    The calls take turns in blocks of ``block`` consecutive calls (peer x5, ours x5, peer x5,
    ...), so that both sides see the same machine load, while each call runs warm, as in the
    reference README's method (consecutive calls after warm-up). The first call of each block
    is its warm-up and is not counted.
    """
    for call in calls:
        for _ in range(warmup):
            call()
    samples: list[list[float]] = [[] for _ in calls]
    rounds = max(1, -(-repeats // (block - 1)))
    for _ in range(rounds):
        for index, call in enumerate(calls):
            for position in range(block):
                start = time.perf_counter()
                call()
                if position:
                    samples[index].append((time.perf_counter() - start) * 1e3)
    if STAT == "min":
        return [min(s) for s in samples]
    return [statistics.median(s) for s in samples]


def readme_times() -> dict[str, tuple[float, float]]:
    path = REFERENCE / "timings.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {
        name: (raw[key]["no_grad_median_of_3_runs_ms"], raw[key]["grad_fwd_median_of_3_runs_ms"])
        for name, key in README_KEYS.items()
        if key in raw
    }


def head_to_head(repeats: int, only: set[str] | None = None) -> list[dict]:
    recorded = readme_times()
    rows = []
    heads: list[tuple[str, Callable[[], tuple[Callable, Callable]]]] = []
    for name, function in peer.PEER_HEADS.items():
        heads.append((name, lambda name=name, function=function: (metrics.build(name), function)))
    for out_dim in (128, 1152):
        def make(out_dim=out_dim):
            torch.manual_seed(0)
            ours = metrics.build("trx", feature_dim=512, out_dim=out_dim, seq_len=8).eval()
            return ours, peer.PeerTRX(ours, seq_len=8).eval()
        heads.append((f"trx (out {out_dim})", make))
    for name, make in heads:
        if only and name not in only:
            continue
        ours, theirs = make()
        reps = repeats if not name.startswith("trx") else max(3, repeats // 6)
        support, labels, query, way = episode()
        with torch.no_grad():
            difference = float((ours(support, labels, query, way) - theirs(support, labels, query, way)).abs().max())
            no_grad = time_calls(
                [lambda: theirs(support, labels, query, way), lambda: ours(support, labels, query, way)], reps
            )
        gs, gl, gq, gw = episode(grad=True)
        with torch.enable_grad():
            grad = time_calls([lambda: theirs(gs, gl, gq, gw), lambda: ours(gs, gl, gq, gw)], reps)
        row = {
            "head": name,
            "max_abs_diff": difference,
            "peer_ms": no_grad[0],
            "ours_ms": no_grad[1],
            "ratio": no_grad[0] / no_grad[1],
            "peer_grad_ms": grad[0],
            "ours_grad_ms": grad[1],
            "ratio_grad": grad[0] / grad[1],
        }
        if name in recorded:
            row["readme_ms"], row["readme_grad_ms"] = recorded[name]
            row["ratio_readme"] = row["readme_ms"] / row["ours_ms"]
            row["ratio_readme_grad"] = row["readme_grad_ms"] / row["ours_grad_ms"]
        rows.append(row)
        print(
            f"{name:20s} |diff| {difference:.1e}  no_grad: peer {no_grad[0]:8.3f} ms  ours {no_grad[1]:7.3f} ms "
            f"x{row['ratio']:6.1f}   grad: peer {grad[0]:8.3f}  ours {grad[1]:7.3f} x{row['ratio_grad']:6.1f}"
            + (
                f"   README {row['readme_ms']:.2f}/{row['readme_grad_ms']:.2f} ms -> "
                f"x{row['ratio_readme']:.1f}/x{row['ratio_readme_grad']:.1f}"
                if "readme_ms" in row else ""
            ),
            flush=True,
        )
    return rows


OUR_METRICS: dict[str, dict] = {
    "proto": {},
    "proto_tsn_cos": {},
    "proto_tsn_sqeuclid": {},
    "otam": {},
    "otam (paper)": {"variant": "paper"},
    "otam_plain": {},
    "otam_clipfsar": {},
    "bimhm": {},
    "bimhm_hyrsm1shot": {},
    "bimhm_hyrsm5shot": {},
    "abmhm": {},
    "trx (out 128)": {"feature_dim": 512, "out_dim": 128, "seq_len": 16},
    "trx (out 1152)": {"feature_dim": 512, "out_dim": 1152, "seq_len": 16},
}
SCALING_SKIP = {"trx (out 1152)"}  # the out 128 row shows the trend at a bearable cost


def build(label: str) -> torch.nn.Module:
    name = label.split(" ")[0]
    torch.manual_seed(0)
    return metrics.build(name, **OUR_METRICS[label]).eval()


def measure(metric: torch.nn.Module, repeats: int, backward: bool, **shape) -> float:
    support, labels, query, way = episode(grad=backward, **shape)
    if not backward:
        with torch.no_grad():
            return time_calls([lambda: metric(support, labels, query, way)], repeats)[0]

    def step():
        logits = metric(support, labels, query, way)
        logits.sum().backward()
        return logits

    return time_calls([step], repeats)[0]


def throughput(repeats: int) -> list[dict]:
    rows = []
    for label in OUR_METRICS:
        metric = build(label)
        reps = repeats if not label.startswith("trx") else max(3, repeats // 6)
        forward = measure(metric, reps, backward=False)
        backward = measure(metric, reps, backward=True)
        rows.append({"metric": label, "forward_ms": forward, "train_step_ms": backward})
        print(
            f"{label:20s} forward {forward:8.3f} ms = {1e3 / forward:8.0f} episodes/s   "
            f"forward+backward {backward:8.3f} ms = {1e3 / backward:7.0f} episodes/s",
            flush=True,
        )
    return rows


def scaling(repeats: int) -> tuple[list[dict], list[dict]]:
    by_frames, by_queries = [], []
    reps = max(5, repeats // 3)
    for label in OUR_METRICS:
        if label in SCALING_SKIP:
            continue
        metric = build(label)
        times = {}
        for frames in (8, 16, 32):
            if label.startswith("trx") and frames > 16:
                times[frames] = None  # C(32, 3) = 4960 triples: 0.6 G attention scores per query
                continue
            times[frames] = measure(metric, max(3, reps // 3) if label.startswith("trx") else reps,
                                    backward=False, frames=frames)
        by_frames.append({"metric": label, **{f"T={k}": v for k, v in times.items()}})
        print(f"{label:20s} T=8/16/32: " + " / ".join("n/a" if v is None else f"{v:.2f}" for v in times.values()) + " ms", flush=True)
    for label in OUR_METRICS:
        if label in SCALING_SKIP:
            continue
        metric = build(label)
        times = {}
        for n_query in (10, 50, 100, 200):
            times[n_query] = measure(metric, max(3, reps // 3) if label.startswith("trx") else reps,
                                     backward=False, n_query=n_query)
        by_queries.append({"metric": label, **{f"q={k}": v for k, v in times.items()}})
        print(f"{label:20s} queries 10/50/100/200: " + " / ".join(f"{v:.2f}" for v in times.values()) + " ms", flush=True)
    return by_frames, by_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--only-scaling", action="store_true", help="run section 3 only")
    parser.add_argument(
        "--heads", default=None,
        help="comma-separated head names: run only section 1 for these (e.g. otam_plain,otam_clipfsar)",
    )
    parser.add_argument(
        "--stat", choices=("median", "min"), default="median",
        help="statistic over the timed calls; 'min' when the machine is shared (see benchmarks/README.md)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all figures to this file")
    args = parser.parse_args()
    global STAT
    STAT = args.stat
    torch.set_num_threads(args.threads)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeats {args.repeats}, "
          f"statistic {STAT}, load average {load}")
    heads: list[dict] = []
    results: dict = {}
    if not args.only_scaling:
        print(f"\n== head to head: 5-way 5-shot, 50 queries, T=8, D=512 (ms, {STAT}; xN = peer / ours) ==")
        heads = head_to_head(args.repeats, set(args.heads.split(",")) if args.heads else None)
    if not args.only_scaling and not args.heads:
        print(f"\n== our metrics: episodes per second (5-way 5-shot, 50 queries, T=8, D=512; {STAT}) ==")
        results = {"head_to_head": heads, "throughput": throughput(args.repeats)}
    if not args.skip_scaling and not args.heads:
        print("\n== scaling (forward, no_grad, ms) ==")
        results["by_frames"], results["by_queries"] = scaling(args.repeats)
    if heads:
        print("\n== targets ==")
    for row in heads:
        target = TARGETS.get(row["head"], 1.0)
        ok = row["ratio"] >= target and row["ratio_grad"] >= target
        print(f"{row['head']:20s} need x{target:.0f}: same run x{row['ratio']:.1f} / x{row['ratio_grad']:.1f} (grad)"
              f" {'MET' if ok else 'NOT MET'}")
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
          if Path("/proc/loadavg").exists() else "")
    if args.json:
        results["settings"] = {"threads": args.threads, "repeats": args.repeats, "stat": STAT}
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
