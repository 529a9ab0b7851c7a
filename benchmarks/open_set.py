"""Open set ("none of these"): how often clips of actions outside the support set are rejected,
and how much accuracy on the known actions survives, as a curve over the threshold.

Data: the synthetic actions (``fsar.data.synth``) of the demo's held-out part (validation +
test classes: never used to train anything). Each episode draws ``--way`` known actions with
``--shot`` support clips each and ``--unknown`` other actions; the queries are ``--queries``
further clips of every known action and of every unknown one. The recogniser
(:class:`fsar.Recognizer`, the training-free ``--method`` on the embedded backbone) scores every
query; per threshold τ on the top calibrated probability:

* unknown rejected = share of the unknown-action queries whose top probability is below τ;
* known accuracy kept = share of the known-action queries that are accepted (≥ τ) *and* right
  (closed-set accuracy at τ = 0);
* known kept = share of known-action queries accepted.

The "auto" rule (leave-one-out on the support set, :class:`fsar.recognizer.Calibration`) is
applied per episode and reported separately. Writes ``open_set.png`` and ``open_set.json``
(``--out``) and prints the markdown table of ``benchmarks/README.md``.

    python benchmarks/open_set.py --episodes 100 --shot 1 --shot 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from pathlib import Path

import torch


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="otam")
    parser.add_argument("--backbone", default="effnet-lite0+minilm")
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--shot", type=int, action="append", help="support clips per action (repeatable; default 1 and 3)")
    parser.add_argument("--unknown", type=int, default=5, help="actions outside the support set per episode")
    parser.add_argument("--queries", type=int, default=2, help="query clips per action")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--videos", type=int, default=6, help="clips rendered per synthetic action")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=("synth", "colour"), default="synth",
                        help="synth: the synthetic actions (motion only); colour: a control set whose actions "
                             "differ in colour and motion, which the embedded features separate")
    parser.add_argument("--data", default="/tmp/fsar-open-set", help="where the synthetic clips and the clip cache go")
    parser.add_argument("--out", default=str(Path(__file__).with_name("open_set")), help="output stem (.png, .json)")
    return parser.parse_args()


def colour_set(root: Path, names, videos: int, *, seed: int) -> Path:
    """Control clips: action i = a background hue (i / N) and a bar moving at its own speed, each
    clip with its own brightness, bar start and pixel noise (16 frames, 112 px, mp4)."""
    import colorsys

    import av
    import numpy as np

    for i, name in enumerate(names):
        hue_rgb = np.array(colorsys.hsv_to_rgb(i / len(names), 0.7, 0.9)) * 255
        for j in range(videos):
            path = root / name / f"clip{j}.mp4"
            if path.exists():
                continue
            rng = np.random.default_rng([seed, i, j])
            path.parent.mkdir(parents=True, exist_ok=True)
            brightness, start = rng.uniform(0.75, 1.15), rng.integers(0, 112)
            tmp = path.with_name(f".{path.name}.tmp.mp4")
            with av.open(str(tmp), "w") as container:
                stream = container.add_stream("libx264", rate=8)
                stream.width = stream.height = 112
                stream.pix_fmt = "yuv420p"
                for k in range(16):
                    image = np.zeros((112, 112, 3)) + hue_rgb * brightness
                    x = int(start + (i % 5 + 1) * 4 * k) % 104
                    image[:, x : x + 8] = 255 - hue_rgb
                    image += rng.normal(0, 15, image.shape)
                    frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            os.replace(tmp, path)
    return root


def episode_scores(recognizer, clips, known, unknown, shot, queries, rng):
    """(scores and correctness of known queries, scores of unknown queries, auto threshold, temperature)."""
    for name in list(recognizer.actions):
        recognizer.remove(name)
    picks = {name: rng.sample(clips[name], shot + queries) for name in known}
    for name in known:
        recognizer.add(name, picks[name][:shot])
    known_queries = [(name, path) for name in known for path in picks[name][shot:]]
    unknown_queries = [path for name in unknown for path in rng.sample(clips[name], queries)]
    calibration = recognizer.calibration()
    recognizer.reject = "off"
    predictions = recognizer.predict([p for _, p in known_queries] + unknown_queries)
    known_part = [(p.score, p.best == name) for (name, _), p in zip(known_queries, predictions)]
    unknown_part = [p.score for p in predictions[len(known_queries):]]
    return known_part, unknown_part, calibration.threshold, calibration.temperature


def curve(known, unknown, thresholds):
    rows = []
    for t in thresholds:
        rows.append({
            "threshold": float(t),
            "unknown_rejected": sum(s < t for s in unknown) / len(unknown),
            "known_accuracy_kept": sum(s >= t and ok for s, ok in known) / len(known),
            "known_kept": sum(s >= t for s, _ in known) / len(known),
        })
    return rows


def auroc(known, unknown):
    """P(score of a known-action query > score of an unknown one), ties count half."""
    wins = 0.0
    for s, _ in known:
        for u in unknown:
            wins += 1.0 if s > u else (0.5 if s == u else 0.0)
    return wins / (len(known) * len(unknown))


def main():
    args = parse_args()
    shots = args.shot or [1, 3]
    from fsar import Recognizer
    from fsar.data.synth import default_split, render_dataset
    from fsar.engine.run import build_method

    _, val, test = default_split()
    held_out = val + test
    need = args.way + args.unknown
    if len(held_out) < need:
        raise SystemExit(f"{need} actions per episode, the held-out part has {len(held_out)}")
    if args.videos < max(shots) + args.queries:
        raise SystemExit(f"--videos {args.videos} < shot + queries")
    data = Path(args.data)
    started = time.perf_counter()
    if args.kind == "synth":
        root = render_dataset(data / "synth", classes=held_out, videos_per_class=args.videos, frames=16, size=112,
                              progress=False)
    else:
        held_out = [f"colour {i:02d}" for i in range(len(held_out))]
        root = colour_set(data / "colour", held_out, args.videos, seed=args.seed)
    clips = {name: sorted((root / name).glob("*.mp4")) for name in held_out}
    torch.manual_seed(args.seed)
    method = build_method(args.method, backbone=args.backbone)
    recognizer = Recognizer(method, num_frames=args.frames, cache_dir=data / "cache", device="cpu")
    # encode every clip once (the episodes then read the clip store)
    recognizer.encode_queries([p for name in held_out for p in clips[name]])
    encode_seconds = time.perf_counter() - started
    thresholds = [i / 100 for i in range(0, 101)]
    results = {}
    for shot in shots:
        rng = random.Random(args.seed * 1000 + shot)
        known_all, unknown_all, auto_rows, temperatures = [], [], [], []
        for _ in range(args.episodes):
            names = rng.sample(held_out, need)
            known, unknown = names[: args.way], names[args.way :]
            known_part, unknown_part, threshold, temperature = episode_scores(
                recognizer, clips, known, unknown, shot, args.queries, rng)
            known_all += known_part
            unknown_all += unknown_part
            temperatures.append(temperature)
            if threshold is not None:
                auto_rows.append(curve(known_part, unknown_part, [threshold])[0])
        auto = {key: sum(r[key] for r in auto_rows) / len(auto_rows) for key in auto_rows[0]} if auto_rows else None
        results[shot] = {
            "curve": curve(known_all, unknown_all, thresholds),
            "closed_set_accuracy": sum(ok for _, ok in known_all) / len(known_all),
            "auroc": auroc(known_all, unknown_all),
            "auto": auto,
            "auto_rule": recognizer.calibration().rule,
            "mean_temperature": sum(temperatures) / len(temperatures),
            "known_queries": len(known_all), "unknown_queries": len(unknown_all),
        }
    seconds = time.perf_counter() - started
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    load = os.getloadavg()[0]
    header = {"kind": args.kind, "method": args.method, "backbone": args.backbone, "way": args.way, "unknown": args.unknown,
              "queries": args.queries, "episodes": args.episodes, "frames": args.frames, "seed": args.seed,
              "held_out_classes": held_out, "commit": commit, "load_1min": round(load, 2),
              "seconds": round(seconds, 1), "encode_seconds": round(encode_seconds, 1)}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"header": header, "results": results}, indent=1))
    draw(results, header, out.with_suffix(".png"))
    print(f"open set ({args.kind}): {args.method} on {args.backbone}, {args.way} known + {args.unknown} unknown actions, "
          f"{args.queries} queries each, {args.episodes} episodes per shot; commit {commit}, load {load:.1f}, "
          f"{seconds:.0f} s")
    print()
    print("| shot | closed-set acc. | AUROC known vs unknown | auto: threshold rule | auto: unknown rejected | "
          "auto: known acc. kept | τ=0.3: rejected / kept | τ=0.5: rejected / kept |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for shot, r in results.items():
        at = {round(row["threshold"], 2): row for row in r["curve"]}
        auto = r["auto"]
        print(f"| {shot} | {100 * r['closed_set_accuracy']:.1f}% | {r['auroc']:.3f} | {r['auto_rule']} | "
              + (f"{100 * auto['unknown_rejected']:.1f}% | {100 * auto['known_accuracy_kept']:.1f}% | " if auto else "n/a | n/a | ")
              + f"{100 * at[0.3]['unknown_rejected']:.0f}% / {100 * at[0.3]['known_accuracy_kept']:.0f}% | "
              f"{100 * at[0.5]['unknown_rejected']:.0f}% / {100 * at[0.5]['known_accuracy_kept']:.0f}% |")


def draw(results, header, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4), squeeze=False)
    for axis, (shot, r) in zip(axes[0], results.items()):
        t = [row["threshold"] for row in r["curve"]]
        axis.plot(t, [100 * row["unknown_rejected"] for row in r["curve"]], label="unknown-action clips rejected")
        axis.plot(t, [100 * row["known_accuracy_kept"] for row in r["curve"]], label="known-action accuracy kept")
        axis.plot(t, [100 * row["known_kept"] for row in r["curve"]], ls=":", label="known-action clips accepted")
        axis.axhline(100 * r["closed_set_accuracy"], color="grey", lw=0.8, ls="--", label="closed-set accuracy")
        if r["auto"]:
            axis.scatter([r["auto"]["threshold"]], [100 * r["auto"]["unknown_rejected"]], color="tab:blue", zorder=5)
            axis.scatter([r["auto"]["threshold"]], [100 * r["auto"]["known_accuracy_kept"]], color="tab:orange",
                         zorder=5, label="auto rule (mean over episodes)")
        axis.set_xlabel("threshold on the top calibrated probability")
        axis.set_ylabel("%")
        axis.set_ylim(0, 101)
        axis.set_title(f"{header['way']}-way {shot}-shot + {header['unknown']} unknown actions "
                       f"(AUROC {r['auroc']:.2f})", fontsize=9)
        axis.legend(fontsize=7, loc="center right")
    data = "synthetic held-out actions" if header["kind"] == "synth" else "colour control set"
    fig.suptitle(f"open set: {header['method']} on {header['backbone']}, {data}, "
                 f"{header['episodes']} episodes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
