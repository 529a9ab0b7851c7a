"""``fsar data``: look at a data set before spending hours on it.

``fsar data check --data ROOT``: classes, videos per class, frames per video, missing and
unreadable files, byte-identical duplicates; exit status 1 when the data cannot serve
the requested ``--way/--shot/--queries`` (the message names the short classes).

``fsar data synth OUT``: render the synthetic action data set (the embedded default).

``fsar data splits``: the standard few-shot splits shipped with fsar (names for ``--split``),
with their classes and clips per part and where they come from.
"""

from __future__ import annotations

import argparse
import sys

from fsar.cli import CLIError
from fsar.cli._args import add_data, add_json, add_no_progress, data_root, emit_json

ORDER = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check a data set (fsar data check) or render the synthetic one (fsar data synth)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: _help(parser))

    check = commands.add_parser(
        "check",
        help="report classes, frame counts, unreadable files and duplicates; fail if episodes can't be served",
        description=(
            "Report classes, videos per class, frames per video (min/median/max), missing and unreadable "
            "files, non-image files in frame folders and byte-identical duplicates. Exit status 1 when the "
            "data cannot serve --way/--shot/--queries episodes (the short classes are named), 2 on bad input."
        ),
    )
    add_data(check, required=True, legacy_positional=True)
    check.add_argument("--split-file", metavar="F", help="check the entries of a 'label/video_id' split file")
    check.add_argument(
        "--split", metavar="NAME[:PART]",
        help="check the entries of a shipped split (`fsar data splits`), e.g. ssv2-small (test) or kinetics-100:train",
    )
    check.add_argument(
        "--classnames-file",
        metavar="F",
        help="class names for anonymised labels (SSv2-Full 'trainN'); default: classnames_<split>.txt beside it",
    )
    check.add_argument("--way", type=int, default=5, help="classes per episode (default 5)")
    check.add_argument("--shot", type=int, default=1, help="support videos per class (default 1)")
    check.add_argument("--queries", type=int, default=1, help="query videos per class (default 1)")
    check.add_argument("--deep", action="store_true", help="decode every frame (default: first and last)")
    check.add_argument("--no-duplicates", action="store_true", help="skip the duplicate search (hashing)")
    add_json(check, what="the full report")
    add_no_progress(check)
    check.set_defaults(func=run_check)

    splits = commands.add_parser(
        "splits", help="list the standard few-shot splits shipped with fsar (names for --split / --splits)"
    )
    splits.add_argument("--json", action="store_true", help="print the list as JSON")
    splits.set_defaults(func=run_splits)

    synth = commands.add_parser("synth", help="render the synthetic action data set (seeded)")
    synth.add_argument("out", metavar="OUT", help="output folder: OUT/<action>/<clip>.mp4 + OUT/synth.json")
    synth.add_argument("--classes", type=int, default=None, help="number of actions (default: all)")
    synth.add_argument("--videos-per-class", type=int, default=10, help="clips per action (default 10)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    synth.add_argument("--size", type=int, default=112, help="frame side in pixels (default 112)")
    synth.add_argument("--version", type=int, choices=(1, 2), default=2,
                       help="generator version: 2 (default) large objects and motions with speed profiles; "
                            "1 the small, eased set of the first demo figures")
    synth.add_argument("--overwrite", action="store_true", help="replace a synthetic set rendered with other parameters")
    add_no_progress(synth)
    synth.set_defaults(func=run_synth)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def run_check(args: argparse.Namespace) -> int:
    from fsar.data.check import check_dataset
    from fsar.data.manifest import ManifestError

    root = data_root(args)
    for name in ("way", "shot", "queries"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be >= 1, got {getattr(args, name)}")
    ref = None
    if args.split and args.split_file:
        raise CLIError("give --split NAME or --split-file F, not both")
    if args.split:
        from fsar.data.splits import SplitError, resolve_split

        try:
            ref = resolve_split(args.split, classnames_file=args.classnames_file)
        except SplitError as error:
            raise CLIError(str(error)) from None
        args.split_file, args.classnames_file = str(ref.path), (str(ref.classnames_file) if ref.classnames_file else None)
    if args.classnames_file and not args.split_file:
        raise CLIError("--classnames-file needs --split-file")
    try:
        report = check_dataset(
            root,
            split_file=args.split_file,
            classnames_file=args.classnames_file,
            way=args.way,
            shot=args.shot,
            queries=args.queries,
            deep=args.deep,
            duplicates=not args.no_duplicates,
            progress=args.progress,
        )
    except ManifestError as error:
        raise CLIError(str(error)) from None
    if args.json == "-":
        emit_json("-", report.to_dict())
    else:
        print(report.format())
        if ref is not None and ref.benchmark is not None:
            missing = {c.name: c.skipped for c in report.classes if c.skipped}
            from fsar.data.splits import comparability_note

            print()
            print("\n".join(comparability_note(
                ref, readable=report.videos, missing_per_class=missing,
                clips_per_class={c.name: c.videos for c in report.classes}, short_classes=report.short_classes,
            )))
    if args.json and args.json != "-":
        path = report.write_json(args.json)
        print(f"report written to {path}")
    if not report.ok:
        print(f"fsar data check: {report.message}", file=sys.stderr)
        return 1
    return 0


def run_splits(args: argparse.Namespace) -> int:
    import json

    from fsar.data.splits import list_benchmarks

    benchmarks = list_benchmarks()
    if args.json:
        print(json.dumps([{**b.provenance(), "aliases": list(b.aliases), "protocol": b.protocol,
                           "parts": {p: {"classes": i.classes, "clips": i.clips, "sha256": i.sha256}
                                     for p, i in b.parts.items()}} for b in benchmarks], indent=2, ensure_ascii=False))
        return 0
    print(f"{'name':<14}{'train':>14}{'val':>13}{'test':>13}   title (aliases)")
    for b in benchmarks:
        cells = "".join(
            f"{f'{b.parts[p].classes} / {b.parts[p].clips}' if p in b.parts else '-':>{14 if p == 'train' else 13}}"
            for p in ("train", "val", "test")
        )
        print(f"{b.name:<14}{cells}   {b.title} ({', '.join(b.aliases)})")
    print("counts: classes / clips.  --split NAME = test part, --split NAME:val any part, --splits NAME = train + val")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from fsar.data.synth import render_dataset

    if args.classes is not None and args.classes < 1:
        raise CLIError(f"--classes must be >= 1, got {args.classes}")
    if args.videos_per_class < 1:
        raise CLIError(f"--videos-per-class must be >= 1, got {args.videos_per_class}")
    try:
        out = render_dataset(
            args.out,
            classes=args.classes,
            videos_per_class=args.videos_per_class,
            seed=args.seed,
            frames=args.frames,
            size=args.size,
            progress=args.progress,
            overwrite=args.overwrite,
            version=args.version,
        )
    except ValueError as error:
        raise CLIError(str(error)) from None
    print(f"synthetic data set written to {out}")
    return 0
