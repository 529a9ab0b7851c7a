"""Episodes per second from the feature cache, per method (issue 16's speed target: >= 500/s).

Set-up (once, in ``--work``, reused): the synthetic action set (12 classes x 10 clips), its
features from the embedded pair ``effnet-lite0+minilm`` (frozen, so every method reads the
cache). Then, for each method, in this one process:

* evaluation: ``--episodes`` 5-way K-shot episodes, 1 query per class, in one call of
  ``fsar.engine.evaluate.evaluate`` from a ``CachedEpisodes`` source built as ``fsar eval``
  builds it, with the data root given as a *relative* path (``cd WORK; --data synth``), as
  a user types it; after a 20-episode warm-up (text bank filled, kernels compiled); the
  measured call starts with an empty per-clip memory, as every evaluation does;
* training (trainable methods): forward + backward of ``--train-steps`` 5-way 1-shot
  episodes with 5 queries per class from the same cache (no optimiser step: its cost does
  not depend on where the episode came from);
* start-up: wall time of ``python -m fsar eval --method proto --episodes 1`` from the cache in
  a fresh process (imports, building the encoder pair, opening the cache);
* ``--profile METHOD``: cProfile of that method's evaluation, the top functions by own time.

``--load 1`` runs one competing busy process (a pure-Python loop) during the measurements;
``--threads N`` sets torch's intra-op threads (default: fsar's own choice, or torch's if
fsar sets none). Figures are ratios within one run: the machine is shared (see ``uptime``).

    python benchmarks/throughput.py                       # every method, 1- and 5-shot
    python benchmarks/throughput.py --load 1 --profile lga
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

BACKBONE = "effnet-lite0+minilm"
METHODS = ("proto", "otam", "bimhm", "ma-fsar", "clip-fsar", "lga")
TRAINABLE = ("ma-fsar", "clip-fsar", "lga")


def _setup(work: Path, image_size: int):
    from fsar.data.manifest import Manifest
    from fsar.data.synth import render_dataset
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features
    from fsar.engine.sources import loader_for

    work.mkdir(parents=True, exist_ok=True)
    data = work / "synth"
    if not (data / "synth.json").is_file():
        render_dataset(data, classes=12, videos_per_class=10, frames=16, size=64, progress=False)
    encoder = create_encoder(BACKBONE)
    loader = loader_for(encoder, num_frames=8, image_size=image_size)
    features = work / "features"
    os.chdir(work)  # the relative root, as `fsar eval --data synth` from WORK
    manifest = Manifest.from_folder("synth")
    extract_features(manifest, encoder, loader, features, backbone_options={"weights": None}, progress=False)
    return manifest, features


def _method(name: str):
    import torch

    from fsar.engine.run import build_method

    torch.manual_seed(0)
    with contextlib.redirect_stderr(io.StringIO()):
        return build_method(name, backbone=BACKBONE, class_names=None)


def _source(method, manifest, features, shot: int, queries: int, image_size: int):
    from fsar.engine.sources import episode_source

    return episode_source(method, manifest, way=5, shot=shot, queries=queries, seed=0, num_frames=8,
                          image_size=image_size, features=features, progress=False)


def eval_rate(method, source, episodes: int) -> tuple[float, float]:
    """(episodes per wall second, episodes per CPU second of this process)."""
    from fsar.engine.evaluate import evaluate

    evaluate(method, source, episodes=20, progress=False)  # warm-up: kernels compiled, text bank filled
    # The measured call starts cold for the per-clip memory of evaluation (each evaluate() starts a
    # fresh one), as a real evaluation does: its first episodes pay for every clip once.
    start, cpu = time.perf_counter(), time.process_time()
    evaluate(method, source, episodes=episodes, progress=False)
    return episodes / (time.perf_counter() - start), episodes / max(1e-9, time.process_time() - cpu)


def train_rate(method, source, steps: int, class_names) -> tuple[float, float]:
    if hasattr(method, "set_training_classes"):
        method.set_training_classes(list(class_names))
    method.train()
    for index in range(3):  # warm-up
        method(source.sample(10_000 + index, train=True)).loss.backward()
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(steps):
        output = method(source.sample(index, train=True))
        output.loss.backward()
    method.zero_grad(set_to_none=True)
    method.eval()
    return steps / (time.perf_counter() - start), steps / max(1e-9, time.process_time() - cpu)


def startup_seconds(work: Path, features: Path, threads: int | None) -> float:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "fsar", "eval", "--data", "synth", "--features", str(features), "--method", "proto",
               "--backbone", BACKBONE, "--episodes", "1", "--no-progress", "--image-size", "64"]
    if threads:
        command += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def profile(method, source, episodes: int, top: int = 14) -> str:
    from fsar.engine.evaluate import evaluate

    evaluate(method, source, episodes=20, progress=False)
    profiler = cProfile.Profile()
    profiler.enable()
    evaluate(method, source, episodes=episodes, progress=False)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    total = next((line for line in lines if "function calls" in line), "")
    return "\n".join([total.strip(), *lines[start:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fsar-throughput"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64, help="frame side at extraction (cache cost only)")
    parser.add_argument("--load", type=int, default=0, help="competing busy processes during the measurements")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: fsar's choice)")
    parser.add_argument("--profile", nargs="*", default=[], metavar="METHOD", help="profile these methods' evaluation")
    parser.add_argument("--no-startup", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    import fsar

    try:
        from fsar.engine.threads import configure_threads
    except ImportError:  # before fsar chose threads itself
        configure_threads = None
    if configure_threads is not None:
        chosen = configure_threads(args.threads)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        chosen = torch.get_num_threads()
    work = args.work.resolve()
    manifest, features = _setup(work, args.image_size)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        print(f"fsar {fsar.__version__} @ {commit}; torch {torch.__version__}, {chosen} thread(s), "
              f"{os.cpu_count()} cores, {len(busy)} competing process(es); load before: {os.getloadavg()[0]:.2f}")
        print(f"cache: {len(manifest.clips)} clips of {len(manifest.classes)} classes, {BACKBONE}; "
              f"{args.episodes} episodes per figure, 5-way, 1 query per class\n")
        print("ep/s = episodes per wall-clock second; in brackets, per CPU second of this process (what one "
              "otherwise idle core gives, as long as the process runs on one thread)\n")
        print("| method | " + " | ".join(f"eval {s}-shot ep/s" for s in args.shots) + " | train 1-shot ep/s |")
        print("| --- |" + " ---: |" * (len(args.shots) + 1))
        for name in args.methods:
            method = _method(name)
            rates = []
            for shot in args.shots:
                rates.append(eval_rate(method, _source(method, manifest, features, shot, 1, args.image_size),
                                       args.episodes))
            train = "–"
            if name in TRAINABLE:
                wall, cpu = train_rate(method, _source(method, manifest, features, 1, 5, args.image_size), args.train_steps,
                                       manifest.classes)
                train = f"{wall:.1f} ({cpu:.1f})"
            print(f"| {name} | " + " | ".join(f"{w:.0f} ({c:.0f})" for w, c in rates) + f" | {train} |", flush=True)
        if not args.no_startup:
            print(f"\nstart-up (fresh `fsar eval --method proto --episodes 1` from the cache): "
                  f"{startup_seconds(work, features, args.threads):.2f} s")
        for name in args.profile:
            method = _method(name)
            shot = max(args.shots)
            print(f"\nprofile: {name} {shot}-shot, {args.episodes} episodes (top functions by own time)\n")
            print(profile(method, _source(method, manifest, features, shot, 1, args.image_size), args.episodes))
        print(f"\nload after: {os.getloadavg()[0]:.2f}")
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
