"""Episodes per second from the feature cache, per method (issue 16's speed target: >= 500/s).

Set-up (once, in ``--work``, reused): the synthetic action set (12 classes x 10 clips), its
features from the embedded pair ``effnet-lite0+minilm`` (frozen, so every method reads the
cache). Each measurement is one fresh process for one code tree under one load, and measures,
for each method:

* evaluation: ``--episodes`` 5-way K-shot episodes, 1 query per class, in one call of
  ``fsar.engine.evaluate.evaluate`` from a ``CachedEpisodes`` source built as ``fsar eval``
  builds it, with the data root given as a *relative* path (``cd WORK; --data synth``), as
  a user types it; after a 20-episode warm-up (text bank filled, kernels compiled); the
  measured call starts with an empty per-clip memory, as every evaluation does (so its first
  episodes pay for every clip once);
* training (trainable methods): forward + backward of ``--train-steps`` 5-way 1-shot
  episodes with 5 queries per class from the same cache (no optimiser step: its cost does
  not depend on where the episode came from);
* start-up: wall time of ``python -m fsar eval --method proto --episodes 1`` from the cache in
  a fresh process (imports, building the encoder pair, opening the cache);
* extraction: a fresh ``fsar extract`` of the synthetic set at 224 px: wall, user and system
  time, minor page faults and peak RSS of the child (``--no-extraction`` skips it).

``--loads 0 1`` (the default) measures idle and with one competing busy process (a pure-Python
loop, started before fsar chooses its threads, as a user's busy machine would be);
``--before REF`` measures the git commit REF the same way (exported with ``git archive`` into
``--work``), so that one command prints the before/after table of ``benchmarks/README.md``.
``--threads N`` sets torch's intra-op threads (default: fsar's own choice). The ``uptime`` of
every measurement is printed: the machine may be shared, so compare within one run.
``--profile METHOD`` only profiles that method's evaluation (cProfile, top functions by own time).

    python benchmarks/throughput.py --before b53fcac      # the whole table (about 10 min)
    python benchmarks/throughput.py --methods lga --loads 0 --no-startup
    python benchmarks/throughput.py --profile lga --shots 5
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

BACKBONE = "effnet-lite0+minilm"
METHODS = ("proto", "otam", "bimhm", "ma-fsar", "clip-fsar", "lga")
TRAINABLE = ("ma-fsar", "clip-fsar", "lga")


def _setup(work: Path, image_size: int, features_dir: str = "features"):
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
    features = work / features_dir
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


def startup_seconds(work: Path, features: Path, threads: int | None, src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    command = [sys.executable, "-m", "fsar", "eval", "--data", "synth", "--features", str(features), "--method", "proto",
               "--backbone", BACKBONE, "--episodes", "1", "--no-progress", "--image-size", "64"]
    if threads:
        command += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def extraction_figures(work: Path, src: Path, threads: int | None) -> dict:
    """A fresh ``fsar extract`` of the synthetic set at the encoder's own 224 px (the issue's page
    faults): wall seconds, user and system CPU seconds, minor page faults, peak RSS (MB)."""
    import resource
    import shutil

    out = work / "extract-check"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    command = [sys.executable, "-m", "fsar", "extract", "--data", "synth", "--out", str(out), "--no-progress"]
    if threads:
        command += ["--threads", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "max_rss_mb": after.ru_maxrss / 1024}


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


def _configure(threads: int | None) -> int:
    import torch

    try:
        from fsar.engine.threads import configure_threads
    except ImportError:  # before fsar chose threads itself
        configure_threads = None
    if configure_threads is not None:
        return configure_threads(threads)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _commit(src: Path) -> str:
    marker = src.parent / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                          cwd=src).stdout.strip() or "?"


def measure(args) -> dict:
    """One code tree (``--src``) under one load: every method's rates, the start-up time."""
    import torch

    import fsar

    # The competing processes start first, so that fsar's own thread choice (made once at start-up
    # from the runnable tasks) sees them, as it would for a user whose machine is busy.
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        time.sleep(1.0 if busy else 0.0)
        chosen = _configure(args.threads)
        work = args.work.resolve()
        manifest, features = _setup(work, args.image_size, args.features_dir)
        record = {"commit": _commit(args.src), "version": fsar.__version__, "torch": torch.__version__,
                  "threads": chosen, "load": args.load, "cores": os.cpu_count(),
                  "loadavg_before": os.getloadavg()[0], "uptime_before": _uptime(), "rates": {}}
        for name in args.methods:
            method = _method(name)
            rates = {"eval": {}}
            for shot in args.shots:
                rates["eval"][str(shot)] = eval_rate(method, _source(method, manifest, features, shot, 1, args.image_size),
                                                args.episodes)
            if name in TRAINABLE and args.train_steps:
                rates["train"] = train_rate(method, _source(method, manifest, features, 1, 5, args.image_size),
                                            args.train_steps, manifest.classes)
            record["rates"][name] = rates
            print(f"  {record['commit']} load {args.load}: {name} " + ", ".join(
                f"{shot}-shot {w:.0f} ({c:.0f})" for shot, (w, c) in rates["eval"].items()), file=sys.stderr, flush=True)
        if not args.no_startup:
            record["startup"] = startup_seconds(work, features, args.threads, args.src)
        if not args.no_extraction:
            record["extraction"] = extraction_figures(work, args.src, args.threads)
        record["loadavg_after"], record["uptime_after"] = os.getloadavg()[0], _uptime()
        return record
    finally:
        for process in busy:
            process.kill()
            process.wait()


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _export(ref: str, work: Path) -> Path:
    """``git archive`` of ``ref`` under WORK/tree-REF; returns its src folder."""
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", ref], capture_output=True, text=True, cwd=repo,
                            check=True).stdout.strip()
    tree = work / f"tree-{commit}"
    if not (tree / "src" / "fsar").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], capture_output=True, cwd=repo, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / "COMMIT").write_text(commit + "\n")
    return tree / "src"


def _cell(record: dict | None, name: str, kind: str, shot: int | None = None) -> str:
    if record is None:
        return "–"
    rates = record["rates"].get(name, {})
    value = rates.get("eval", {}).get(str(shot)) if kind == "eval" else rates.get("train")
    if value is None:
        return "–"
    wall, cpu = value
    digits = 0 if kind == "eval" else 1
    return f"{wall:.{digits}f} ({cpu:.{digits}f})"


def table(runs: dict[tuple[str, int], dict], methods, shots) -> str:
    """The README's table: episodes/s (per CPU second) per method, each tree idle and under load."""
    columns = [(label, load) for label, load in runs]
    head = ["method"]
    for label, load in columns:
        where = f"{label}, {'idle' if load == 0 else f'{load} competing'}"
        head += [f"{where}: eval {shot}-shot" for shot in shots] + [f"{where}: train 1-shot"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for name in methods:
        cells = [name]
        for key in columns:
            record = runs[key]
            cells += [_cell(record, name, "eval", shot) for shot in shots] + [_cell(record, name, "train")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for (label, load), record in runs.items():
        startup = f"start-up {record['startup']:.2f} s; " if "startup" in record else ""
        if "extraction" in record:
            e = record["extraction"]
            startup += (f"extraction {e['wall']:.1f} s (user {e['user']:.1f} s, system {e['sys']:.1f} s, "
                        f"{e['minor_faults'] / 1e6:.1f}M minor faults, peak RSS {e['max_rss_mb']:.0f} MB); ")
        lines.append(f"- {label} ({record['commit']}), {load} competing: {record['threads']} torch thread(s); {startup}"
                     f"before: `{record['uptime_before']}`; after: `{record['uptime_after']}`")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fsar-throughput"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64, help="frame side at extraction (cache cost only)")
    parser.add_argument("--loads", nargs="+", type=int, default=[0, 1],
                        help="competing busy processes: one measurement per value (default: idle and 1)")
    parser.add_argument("--before", default=None, metavar="REF",
                        help="also measure this git commit (exported with git archive), e.g. the issue's start")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: fsar's choice)")
    parser.add_argument("--profile", nargs="*", default=[], metavar="METHOD",
                        help="only profile these methods' evaluation (this tree, this process, --loads' first value)")
    parser.add_argument("--flops", nargs="*", default=[], metavar="METHOD",
                        help="only count these methods' FLOPs per evaluation episode (torch.utils.flop_counter), "
                             "after 50 warm-up episodes: every clip and class text seen, as in a long evaluation")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--no-extraction", action="store_true", help="skip the timed `fsar extract` (page faults)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement as JSON")
    # one measurement in this process (what the table's runs are made of)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src", help=argparse.SUPPRESS)
    parser.add_argument("--load", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--features-dir", default="features", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    if args.profile:
        _configure(args.threads)
        manifest, features = _setup(args.work.resolve(), args.image_size, args.features_dir)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.loads[0])]
        try:
            print(f"{_uptime()}; {len(busy)} competing process(es)")
            for name in args.profile:
                method = _method(name)
                shot = max(args.shots)
                print(f"\nprofile: {name} {shot}-shot, {args.episodes} episodes (top functions by own time)\n")
                print(profile(method, _source(method, manifest, features, shot, 1, args.image_size), args.episodes))
        finally:
            for process in busy:
                process.kill()
                process.wait()
        return 0
    if args.flops:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        manifest, features = _setup(args.work.resolve(), args.image_size, args.features_dir)
        for name in args.flops:
            method = _method(name).eval()
            for shot in args.shots:
                source = _source(method, manifest, features, shot, 1, args.image_size)
                with torch.no_grad():
                    # the steady state of a long evaluation: every clip and class text seen before
                    for index in range(50):
                        method(replace(source.sample(index, train=False), query_labels=None))
                    episode = replace(source.sample(0, train=False), query_labels=None)
                    with FlopCounterMode(display=False) as counter:
                        method(episode)
                print(f"{name} {shot}-shot: {counter.get_total_flops() / 1e9:.3f} GFLOP per 5-way episode "
                      f"(features {tuple(episode.support.shape[1:])})")
        return 0
    trees = [("after", Path(__file__).resolve().parents[1] / "src")]
    if args.before:
        trees.insert(0, ("before", _export(args.before, args.work.resolve())))
    runs: dict[tuple[str, int], dict] = {}
    common = ["--work", str(args.work), "--methods", *args.methods, "--shots", *map(str, args.shots),
              "--episodes", str(args.episodes), "--train-steps", str(args.train_steps),
              "--image-size", str(args.image_size)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    if args.no_startup:
        common.append("--no-startup")
    if args.no_extraction:
        common.append("--no-extraction")
    print(f"{BACKBONE} cache of the synthetic set (12 classes x 10 clips); {args.episodes} episodes per figure, "
          "5-way, 1 query per class; episodes per wall second (per CPU second of the process)", flush=True)
    for label, src in trees:
        for load in args.loads:
            command = [sys.executable, __file__, "--measure", "--src", str(src), "--load", str(load),
                       "--features-dir", f"features-{label}", *common]
            done = subprocess.run(command, capture_output=False, stdout=subprocess.PIPE, text=True, check=True)
            runs[(label, load)] = json.loads(done.stdout.strip().splitlines()[-1])
    print()
    print(table(runs, args.methods, args.shots))
    if args.json:
        args.json.write_text(json.dumps({f"{label}/{load}": record for (label, load), record in runs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
