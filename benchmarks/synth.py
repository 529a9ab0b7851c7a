"""Speed of the synthetic action renderer (fsar.data.synth): clips per second.

Prints, for clips of 16 frames at 112x112 (the defaults):
  * render only (numpy drawing, no file),
  * encode only (PyAV, MPEG-4 part 2 as written by render_dataset, and libx264 for comparison),
  * render_dataset end to end (render + encode + atomic write + synth.json) into a temp folder.
Both wall-clock and process CPU time are shown: the machine is shared, so CPU time is the
steadier figure; compare ratios within one run.

With --probe it also prints a sanity probe of what the set rewards: nearest-neighbour 5-way
1-shot accuracy with (a) an appearance-only feature (colour histogram of the first frame),
(b) an order-free motion feature (mean of pooled frame-difference maps), (c) the same maps kept
in time order; and 2-way accuracy on the reverse pairs alone. Expected: (a) at chance (appearance
carries no class signal), (b) at chance on reverse pairs (a clip and its reverse have the same
bag of frames).

    /work/venv/bin/python benchmarks/synth.py [--videos-per-class 3] [--probe]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import av
import numpy as np

from fsar.data import synth as S


def _timed(fn, n: int) -> tuple[float, float]:
    """(clips/s wall, clips/s CPU) for n calls of fn(i)."""
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    w, c = time.perf_counter() - w0, time.process_time() - c0
    return n / w, n / c


def _encode_x264(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=S.FPS, options={"preset": "ultrafast", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(p)
        for p in stream.encode():
            container.mux(p)
    return buf.getvalue()


def _probe_features(clip: np.ndarray) -> dict[str, np.ndarray]:
    grey = clip.astype(np.float32).mean(-1)  # (T, H, W)
    diff = np.abs(np.diff(grey, axis=0))  # (T-1, H, W)
    T1, H, W = diff.shape
    pooled = diff.reshape(T1, 8, H // 8, 8, W // 8).mean((2, 4))  # (T-1, 8, 8)
    steps = np.linspace(0, T1 - 1, 8).round().astype(int)
    hist = np.concatenate([np.histogram(clip[0][..., k], bins=8, range=(0, 256))[0] for k in range(3)])
    return {"appearance": hist.astype(np.float32), "bag of motion": pooled.mean(0).ravel(), "ordered motion": pooled[steps].ravel()}


def probe(videos: int = 8, episodes: int = 2000) -> None:
    names = S.class_names()
    feats = {
        n: [_probe_features(S.render_clip(S.draw_clip_params(n, seed=0, clip_index=c * 10_000 + v))[0]) for v in range(videos)]
        for c, n in enumerate(names)
    }
    rng = np.random.default_rng(0)

    def accuracy(kind: str, way: int, pool: list[str], n_episodes: int) -> float:
        correct = 0
        for _ in range(n_episodes):
            classes = rng.choice(len(pool), way, replace=False)
            support, query = [], []
            for c in classes:
                i, j = rng.choice(videos, 2, replace=False)
                support.append(feats[pool[c]][i][kind])
                query.append(feats[pool[c]][j][kind])
            support = np.stack(support)
            correct += sum(int(((support - q) ** 2).sum(1).argmin() == y) for y, q in enumerate(query))
        return correct / (n_episodes * way)

    pairs = S.reverse_pairs()
    print(f"\nprobe: nearest neighbour, 1-shot, {videos} clips per class, {episodes} episodes (5-way), 300 per pair (2-way)")
    print("| feature | 5-way, all 36 classes | 2-way, reverse pairs only |")
    print("| --- | ---: | ---: |")
    for kind in ("appearance", "bag of motion", "ordered motion"):
        five = accuracy(kind, 5, names, episodes)
        two = float(np.mean([accuracy(kind, 2, list(p), 300) for p in pairs]))
        print(f"| {kind} | {five:.3f} | {two:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--probe", action="store_true", help="also run the nearest-neighbour sanity probe")
    args = parser.parse_args()

    names = S.class_names()
    n = len(names) * args.videos_per_class
    params = [
        S.draw_clip_params(names[i % len(names)], seed=0, clip_index=i, frames=args.frames, size=args.size) for i in range(n)
    ]
    clips = [S.render_clip(p)[0] for p in params[: len(names)]]  # warm-up + encode inputs

    rows = []
    rows.append(("render only (numpy)", *_timed(lambda i: S.render_clip(params[i]), n)))
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("encode only, mpeg4 (used)", *_timed(lambda i: S.encode_mp4(f"{tmp}/x.mp4", clips[i % len(clips)]), n)))
        rows.append(("encode only, libx264 ultrafast", *_timed(lambda i: _encode_x264(clips[i % len(clips)]), n)))
        w0, c0 = time.perf_counter(), time.process_time()
        S.render_dataset(f"{tmp}/ds", videos_per_class=args.videos_per_class, frames=args.frames, size=args.size, progress=False)
        rows.append(("render_dataset end to end", n / (time.perf_counter() - w0), n / (time.process_time() - c0)))

    print(f"synthetic clips: {args.frames} frames x {args.size}x{args.size}, {n} clips ({len(names)} classes x {args.videos_per_class})")
    print("| step | clips/s (wall) | clips/s (CPU time) |")
    print("| --- | ---: | ---: |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.0f} | {cpu:.0f} |")
    if args.probe:
        probe()


if __name__ == "__main__":
    main()
