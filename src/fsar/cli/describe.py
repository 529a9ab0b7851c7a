"""``fsar describe CLASSES_FILE --out CACHE.json``: LGA's textual anatomy, generated once.

Reads one class name per line, keeps every description already in ``--out`` (hand edits
included), asks the configured LLM (``--llm-url``/``--llm-model`` or ``--llm-folder``) for
the missing ones and writes the cache atomically after each answer. Without an LLM the
documented template fallback fills the gaps and the command says so.
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import add_device, add_no_progress, resolve_device

ORDER = 60


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fsar.lga.describe import add_describer_arguments

    parser = subparsers.add_parser(
        "describe",
        help="generate LGA stage descriptions (onset/progression/completion) for class names",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
    )
    parser.add_argument("classes_file", metavar="CLASSES_FILE", help="text file, one class name per line")
    parser.add_argument("--out", required=True, metavar="CACHE.json", help="description cache to fill")
    parser.add_argument(
        "--num-stages", type=int, default=3, help="stages per class, L (3: onset, progression, completion)"
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="re-describe classes already in the cache (hand-edited entries included)",
    )
    add_describer_arguments(parser, cache_flag=False)
    add_device(parser)
    add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsar.lga.describe import (
        DescriptionCache,
        DescriptionError,
        describer_from_args,
        read_class_names,
        resolve_descriptions,
    )

    if args.num_stages < 1:
        raise CLIError(f"--num-stages must be >= 1, got {args.num_stages}")
    try:
        class_names = read_class_names(args.classes_file)
        describer = describer_from_args(args, device=resolve_device(args.device) if args.llm_folder else "cpu")
        cache = DescriptionCache(args.out)
    except ValueError as error:
        raise CLIError(str(error)) from None
    if args.refresh:
        for name in class_names:
            cache.entries.get(name, {}).pop(args.num_stages, None)
    try:
        _, report = resolve_descriptions(
            class_names,
            num_stages=args.num_stages,
            cache=cache,
            describer=describer,
            progress=args.progress,
            on_generated=cache.save,
        )
    except DescriptionError as error:
        raise CLIError(f"{error} (descriptions so far are saved in {args.out})") from None
    cache.save()
    print(f"{args.out}: {len(class_names)} classes, L={args.num_stages}: {report.summary()}")
    if report.template:
        print(
            f"note: {len(report.template)} class(es) use the template fallback "
            "('the start/middle/end of <label>'), not LLM descriptions; pass --llm-url and "
            "--llm-model (or --llm-folder), or edit the file and set their source to 'manual'"
        )
    return 0
