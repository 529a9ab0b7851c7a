"""``fsar demo``: the whole loop on the embedded default, on a laptop CPU.

Interim version (data layer only): renders the seeded synthetic action set, checks it
with ``fsar data check``, and prints one sampled 5-way 1-shot episode from its test
classes. Training and evaluation join when the engine lands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fsar.cli import CLIError

ORDER = 10


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the embedded default end to end (synthetic actions, CPU, minutes)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--out", default="fsar-demo", metavar="DIR", help="working folder (default ./fsar-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and episodes (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster set (fewer, shorter, smaller clips)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsar.data.check import check_dataset
    from fsar.data.episodes import EpisodeError, EpisodeSampler
    from fsar.data.synth import default_split, render_dataset

    if args.quick:
        params = dict(videos_per_class=4, frames=8, size=64)
        data_dir = Path(args.out) / "synth-quick"
    else:
        params = dict(videos_per_class=10, frames=16, size=112)
        data_dir = Path(args.out) / "synth"
    print(f"rendering the synthetic action set into {data_dir} (seed {args.seed}) ...")
    try:
        render_dataset(data_dir, seed=args.seed, progress=True, **params)
    except ValueError as error:
        raise CLIError(f"{error} (choose another --out)") from None

    way, shot, queries = 5, 1, 1
    report = check_dataset(data_dir, way=way, shot=shot, queries=queries, progress=False)
    print()
    print(report.format(max_listed=5))
    if not report.ok:
        raise CLIError(f"the rendered set cannot serve the demo's episodes: {report.message}")

    _, _, test_names = default_split([c.name for c in report.classes])
    test_manifest = report.manifest.subset(test_names)
    try:
        sampler = EpisodeSampler(test_manifest, way=way, shot=shot, queries=queries, seed=args.seed)
    except EpisodeError as error:
        raise CLIError(str(error)) from None
    episode = sampler.episode(0)
    print()
    print(f"episode 0 of {sampler} on the {len(test_names)} test classes:")
    for label, name in enumerate(episode.class_names):
        support = [str(c.path) for c, y in zip(episode.support, episode.support_labels) if y == label]
        query = [str(c.path) for c, y in zip(episode.query, episode.query_labels) if y == label]
        print(f"  [{label}] {name}")
        for path in support:
            print(f"      support: {path}")
        for path in query:
            print(f"      query:   {path}")
    return 0
