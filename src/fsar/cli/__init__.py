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

from fsar import __version__


class CLIError(Exception):
    """An error to report to the user as one line, exit code 2 (no traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsar",
        description="Few-shot action recognition: learn new actions from a few labelled clips.",
    )
    parser.add_argument("--version", action="version", version=f"fsar {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
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
    except CLIError as error:
        print(f"fsar {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
