"""``fsar benchmark``: the papers' protocol for several methods on several benchmarks, one table.

    fsar benchmark --methods proto otam ma-fsar=runs/ma-{benchmark}-{shot}shot \\
        --data ssv2-small=/data/ssv2 kinetics-100=/data/k100 --out bench/
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import (
    add_device,
    add_methods_own_options,
    add_no_progress,
    add_threads,
    method_args_from,
    method_options_per_label,
    resolve_device,
)
from fsar.cli._values import int_at_least

ORDER = 25

EPILOG = """\
Every cell is 5-way (--way) K-shot for each K of --shots (1 and 5), 1 query per class
(--queries), 10,000 seeded test episodes (--episodes, --seed): the protocol of the OTAM,
TRX, HyRSM, CLIP-FSAR, MA-FSAR and LGA tables. Every method of a cell sees the same
episodes (the table records their SHA-256), so each pair of methods is also compared
episode by episode: the difference with its paired 95% interval, an exact sign test and a
paired bootstrap p-value.

Methods: a registered name (proto, otam, bimhm, zero-shot, or an untrained method, with a
warning) built on --backbone/--weights/--frames/--image-size, or LABEL=RUN_DIR, a run of
`fsar train`, rebuilt from its saved config; {benchmark} and {shot} in RUN_DIR are filled
per cell. Data: NAME=ROOT, NAME a shipped split (`fsar data splits`: its test part;
NAME:val for another part) resolved under ROOT, or any other label for a ROOT/<class>/<clip>
folder whose classes are all used.

Output (--out DIR): benchmark.md, benchmark.csv, benchmark.json, benchmark.png, and
cells/<benchmark>/<K>shot/<method>.json with the per-episode accuracies, written every
--chunk episodes. Run the same command again to resume an interrupted benchmark; finished
cells are read back. Frozen-encoder methods share one feature cache per benchmark and
backbone under DIR/features/.

examples:
  fsar benchmark --methods proto otam bimhm --data synth=fsar-demo/data --episodes 1000 --out bench-synth
  fsar benchmark --methods otam ma-fsar=runs/ssv2s-{shot}shot --data ssv2-small=/data/ssv2 --out bench-ssv2
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="methods x benchmarks x {1,5}-shot at paper scale: one table (MD/CSV/JSON/PNG) + paired comparisons",
        description="Evaluate methods on benchmarks with the field's protocol and write one table.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--methods", nargs="+", required=True, metavar="METHOD",
                        help="rows: method names (training-free) or LABEL=RUN_DIR checkpoints")
    parser.add_argument("--data", nargs="+", required=True, metavar="NAME=ROOT",
                        help="columns: shipped split name (ssv2-small, kinetics-100, ...) or a label, = its data root")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (re-run to resume)")
    parser.add_argument("--shots", nargs="+", type=int_at_least(1), default=[1, 5], help="shots (default 1 5)")
    parser.add_argument("--way", type=int_at_least(1), default=5, help="classes per episode (default 5)")
    parser.add_argument("--queries", type=int_at_least(1), default=1, help="query clips per class (default 1)")
    parser.add_argument("--episodes", type=int_at_least(1), default=10_000, help="test episodes per cell (default 10000)")
    parser.add_argument("--seed", type=int_at_least(0, at_most=2**63 - 1), default=0,
                        help="seed of the episodes, 0..2**63-1 (default 0)")
    parser.add_argument("--backbone", default="effnet-lite0+minilm",
                        help="encoder of the methods given by name (default effnet-lite0+minilm)")
    parser.add_argument("--weights", metavar="W", help="backbone weights: a local folder, a hub id, or 'random'")
    parser.add_argument("--frames", dest="num_frames", type=int_at_least(1), default=8, help="frames per clip (default 8)")
    parser.add_argument("--image-size", type=int_at_least(1), metavar="PX", help="frame side (default: the encoder's)")
    parser.add_argument("--option", "-O", dest="method_options", action="append", default=[],
                        metavar="[METHOD:]KEY=VALUE",
                        help="option of the methods given by name (all, or METHOD: one), e.g. -O ma-fsar:alpha=0.25")
    parser.add_argument("--bootstrap", type=int_at_least(0), default=10_000, help="paired bootstrap resamples (default 10000)")
    parser.add_argument("--chunk", type=int_at_least(1), default=1000, help="episodes between two partial writes (default 1000)")
    add_device(parser)
    add_no_progress(parser)
    add_threads(parser)
    add_methods_own_options(parser)  # e.g. LGA's --descriptions, for the methods given by name
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsar.cli._engine_args import user_errors
    from fsar.data.splits import SplitError
    from fsar.engine.benchmark import (
        BenchmarkError,
        BenchmarkPlan,
        parse_data_spec,
        parse_method_spec,
        run_benchmark,
        table_markdown,
    )
    from fsar.engine.compare import ComparisonError

    resolve_device(args.device)  # a bad --device is a one-line error before any work
    try:
        methods = [parse_method_spec(text) for text in args.methods]
        data = [parse_data_spec(text) for text in args.data]
        plan = BenchmarkPlan(
            methods=methods, data=data, shots=args.shots, way=args.way, queries=args.queries,
            episodes=args.episodes, seed=args.seed, backbone=args.backbone, weights=args.weights,
            num_frames=args.num_frames, image_size=args.image_size,
            method_options=method_options_per_label(args.method_options, [m.label for m in methods if m.checkpoint is None]),
            method_args=method_args_from(args), device=args.device, bootstrap=args.bootstrap, chunk=args.chunk,
            progress=args.progress,
        )
        table = run_benchmark(plan, args.out)
    except (BenchmarkError, SplitError, ComparisonError, *user_errors()) as error:
        raise CLIError(str(error)) from None
    print()
    print(table_markdown(table))
    print(f"written: {', '.join(str(table.out / f'benchmark.{ext}') for ext in ('md', 'csv', 'json', 'png'))}")
    return 0
