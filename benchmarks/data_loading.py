"""Data-layer speed: seeking vs sequential decoding, crop-then-resize vs resize-then-crop, episode loading.

Run: python benchmarks/data_loading.py  (about a minute on 2 CPU cores). Prints markdown tables;
the machine is shared and noisy, so read ratios within one run, not absolute times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from fsar.data import ClipLoader, EpisodeSampler, Manifest, TransformConfig, load_episode, open_video, sample_indices
from fsar.data.testing import write_video
from fsar.data.transforms import ClipTransform, resize_short_side

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def timed(fn, repeats: int = 7) -> float:
    """Best wall time of ``fn()`` in milliseconds (after one warm-up call).

    The minimum, not the mean: on a shared machine the noise only ever adds time.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def bench_decoding(workdir: Path) -> None:
    print("## Reading 8 TSN frames (evaluation) from a 300-frame video\n")
    print("| file | size | GOP | seeking: ms | frames decoded | sequential: ms | frames decoded | speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    indices = sample_indices(300, 8, train=False)
    cases = ((".mp4", 240, 320, 12), (".mp4", 240, 320, 250), (".mp4", 360, 640, 50), (".webm", 240, 320, 50))
    for ext, height, width, gop in cases:
        path = write_video(workdir / f"clip_{width}_g{gop}{ext}", 300, height=height, width=width, gop=gop)

        def seeking():
            reader = open_video(path)
            reader.read(indices)
            return reader

        def sequential():
            reader = open_video(path)
            reader.read([0])  # builds the packet index
            reader._index.usable = False  # force the fallback path
            reader.decoded_frames = 0
            reader.read(indices)
            return reader

        fast, slow = timed(seeking, 12), timed(sequential, 12)
        print(
            f"| {ext} | {width}x{height} | {gop} | {fast:.1f} | {seeking().decoded_frames} | {slow:.1f} | "
            f"{sequential().decoded_frames} | {slow / fast:.1f}x |"
        )
    print()


def bench_transform() -> None:
    print("## Transform of 8 frames 240x427 -> 224x224 (short side 256)\n")
    frames = torch.randint(0, 256, (8, 3, 240, 427), dtype=torch.uint8)
    config = TransformConfig(image_size=224, resize_short=256)
    transform = ClipTransform(config, train=False)

    def resize_then_crop():
        x = resize_short_side(frames.float(), 256)
        top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
        return x[:, :, top : top + 224, left : left + 224] / 255.0

    full, fast = timed(resize_then_crop, 7), timed(lambda: transform(frames), 7)
    print("| method | ms | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| resize whole frame, then crop | {full:.1f} | 1.0x |")
    print(f"| ClipTransform (crop window, then resize; + normalise) | {fast:.1f} | {full / fast:.1f}x |")
    print()


def bench_episode() -> None:
    mini = SHARED / "data" / "ssv2-mini"
    if not mini.is_dir():
        print(f"(skipping the episode benchmark: {mini} is absent)")
        return
    print("## One 5-way 1-shot episode (5 support + 5 query clips, 8 JPEG frames each) from ssv2-mini\n")
    manifest = Manifest.from_folder(mini)
    sampler = EpisodeSampler(manifest, way=5, shot=1, queries=1, seed=0)
    print("| image size | train | ms per episode |")
    print("| ---: | --- | ---: |")
    for size in (112, 224):
        loader = ClipLoader(num_frames=8, transform=TransformConfig(image_size=size))
        for train in (False, True):
            episodes = iter(sampler.take(5))  # warm-up + 4 timed, each a different episode
            ms = timed(lambda: load_episode(next(episodes), loader, train=train), 4)
            print(f"| {size} | {train} | {ms:.0f} |")
    print()


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bench_decoding(Path(tmp))
    bench_transform()
    bench_episode()


if __name__ == "__main__":
    main()
