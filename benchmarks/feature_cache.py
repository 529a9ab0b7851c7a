"""Embedded encoder and feature cache speed on CPU: frame chunking, extraction prefetch, episodes from cache.

    /work/venv/bin/python benchmarks/feature_cache.py [--classes 5] [--videos 2] [--repeats 3]

Prints three tables (see benchmarks/README.md):
1. EfficientNet-Lite0 frames/s through ``EmbeddedEncoder.encode_frames``, NCHW vs channels_last,
   for two ``frame_chunk`` sizes (B*T = 32 frames at 224x224, inference mode).
2. ``extract_features`` clips/s on a rendered synthetic set, serial decoding vs background prefetch.
3. Time to build one 5-way 1-shot episode (5 support + 5 query clips) ready for a frozen-encoder
   method: decode + transform + encode from video, vs ``FeatureCache.load_episode``.
The machine is shared: compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from fsar.data import ClipLoader, EpisodeSampler, Manifest, TransformConfig, load_episode
    from fsar.data.synth import render_dataset
    from fsar.encoders.cache import FeatureCache, extract_features
    from fsar.encoders.embedded import EmbeddedEncoder

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    enc = EmbeddedEncoder()

    # 1. frame chunking and memory layout ---------------------------------------------
    plain = EmbeddedEncoder(channels_last=False)
    frames = torch.randn(4, 8, 3, 224, 224)
    print("\n| layout | frame_chunk | frames/s |\n| --- | ---: | ---: |")
    for chunk in (4, 8, 32):
        for layout, encoder in (("NCHW", plain), ("channels_last", enc)):
            encoder.frame_chunk = chunk
            with torch.inference_mode():
                encoder.encode_frames(frames[:1, :2])  # warm-up
                seconds = _best(lambda: encoder.encode_frames(frames), args.repeats)
            print(f"| {layout} | {chunk} | {frames.shape[0] * frames.shape[1] / seconds:.1f} |")
    enc.frame_chunk = None  # the default: 4 frames per pass on the CPU
    del plain

    with tempfile.TemporaryDirectory() as tmp:
        root = render_dataset(Path(tmp) / "synth", classes=args.classes, videos_per_class=args.videos,
                              frames=16, size=112, progress=False)
        manifest = Manifest.from_folder(root)
        loader = ClipLoader(num_frames=8, transform=TransformConfig.for_encoder(enc))

        # 2. extraction, serial vs prefetch --------------------------------------------
        print("\n| decoding | clips | seconds | clips/s |\n| --- | ---: | ---: | ---: |")
        results = {}
        for name, prefetch in (("serial", 0), ("prefetch 2 batches", 2)):
            out = Path(tmp) / f"cache-{prefetch}"
            summary = extract_features(manifest, enc, loader, out, batch_size=4, prefetch=prefetch, progress=False)
            results[name] = summary
            print(f"| {name} | {summary.encoded} | {summary.seconds:.1f} | {summary.clips_per_second:.2f} |")
        a, b = (FeatureCache(Path(tmp) / f"cache-{p}") for p in (0, 2))
        same = all(torch.equal(a._tensor(e["shard"], k), b._tensor(b.entries[k]["shard"], k)) for k, e in a.entries.items())
        print(f"(serial and prefetch caches identical: {same})")

        # 3. one episode: from video vs from cache --------------------------------------
        sampler = EpisodeSampler(manifest, way=min(5, args.classes), shot=1, queries=1, seed=0)
        episodes = sampler.take(args.repeats)

        def from_video():
            for episode in episodes:
                inputs = load_episode(episode, loader, train=False)
                with torch.inference_mode():
                    enc.encode_frames(inputs.support)
                    enc.encode_frames(inputs.query)

        def from_cache():
            for episode in episodes:
                cache.load_episode(episode, loader)

        cache = FeatureCache(Path(tmp) / "cache-2")
        video_s = _best(from_video, 1) / len(episodes)
        cache_s = statistics.median(_best(from_cache, 1) for _ in range(3)) / len(episodes)
        print("\n| episode input (5-way 1-shot, 1 query) | ms/episode |\n| --- | ---: |")
        print(f"| decode + transform + EfficientNet-Lite0 | {video_s * 1e3:.0f} |")
        print(f"| FeatureCache.load_episode | {cache_s * 1e3:.2f} |")
        print(f"speed-up from the cache: {video_s / cache_s:.0f}x")


if __name__ == "__main__":
    main()
