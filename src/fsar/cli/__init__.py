"""The ``fsar`` command.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)``, which registers the command and sets ``func`` to a
``run(args) -> int`` callable. Modules are discovered, so adding a command
never touches this file. Heavy imports (torch, transformers) belong inside
``run`` so that ``fsar --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from fsar import __version__
from fsar.errors import ConfigError, FsarError


class CLIError(ConfigError):
    """A command-line mistake, reported as one line with exit code 2 (no traceback)."""


def build_parser() -> argparse.ArgumentParser:
    from fsar.cli._values import ArgumentParser

    parser = ArgumentParser(
        prog="fsar",
        description="Few-shot action recognition: learn new actions from a few labelled clips.",
    )
    parser.add_argument("--version", action="version", version=f"fsar {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the Python traceback (for bug reports)")
    from fsar.cli._args import DeferredParser

    # Sub-command parsers may defer arguments that need heavy imports until they are used.
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=DeferredParser)
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            modules.append(module)
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        if hasattr(args, "threads"):
            from fsar.engine.threads import configure_threads

            try:
                configure_threads(args.threads)
            except ValueError as error:
                raise CLIError(str(error)) from None
        return int(args.func(args) or 0)
    except FsarError as error:
        # One error path for every command: fsar's own exceptions (bad config, data, cache,
        # checkpoint, model options) are the user's input problems, reported as one line.
        if args.debug:
            traceback.print_exc()
        print(f"fsar {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A path the user gave that cannot be written or read as asked (a file where a folder
        # is needed, a folder where a file is, no permission, a full disk).
        if error.filename is None and error.strerror is None:
            raise
        if args.debug:
            traceback.print_exc()
        where = f"{error.filename}: " if error.filename is not None else ""
        print(f"fsar {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
