"""Speed of the synthetic action renderer (fsar.data.synth): clips per second.

Prints, for clips of 16 frames at 112x112 (the defaults):
  * render only (numpy drawing, no file),
  * encode only (PyAV, MPEG-4 part 2 as written by render_dataset, and libx264 for comparison),
  * render_dataset end to end (render + encode + atomic write + synth.json) into a temp folder.
Both wall-clock and process CPU time are shown: the machine is shared, so CPU time is the
steadier figure; compare ratios within one run.

    /work/venv/bin/python benchmarks/synth.py [--videos-per-class 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
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
    print(f"| step | clips/s (wall) | clips/s (CPU time) |")
    print(f"| --- | ---: | ---: |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
