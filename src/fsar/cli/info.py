"""``fsar info``: parameter counts (total and trainable, per module) of a method or a backbone.

    fsar info ma-fsar --backbone clip-vit-b32 --weights random
    fsar info effnet-lite0+minilm --json counts.json

Counts do not depend on weight values, so CLIP backbones without local weights can be
inspected with ``--weights random`` (MA-FSAR Table 4 / spec section 8 acceptance check).
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import add_json, add_method_option_flag, emit_json, method_options_dict

ORDER = 90
DEFAULT_BACKBONE = "effnet-lite0+minilm"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="parameter counts (total / trainable, per module) of a method or backbone",
        description="Build a method or backbone and print its parameters, total and trainable, per module.",
    )
    parser.add_argument("name", metavar="METHOD_OR_BACKBONE", help="a registered method or backbone name")
    parser.add_argument(
        "--backbone", default=None, help=f"backbone of a method (default: {DEFAULT_BACKBONE})"
    )
    parser.add_argument("--weights", default=None, help="backbone weights: local folder, hub id or 'random'")
    add_method_option_flag(parser, legacy_flags=("--option",))
    parser.add_argument("--depth", type=int, default=2, help="module name parts per row (default: %(default)s)")
    add_json(parser, what="the counts", bare_prints=True)
    parser.set_defaults(func=run)


def build_for_info(name: str, *, backbone: str | None, weights: str | None, options: dict):
    """(kind, module) for a method or backbone name; CLIError listing what exists otherwise."""
    import fsar
    from fsar.encoders import create_encoder, list_encoders

    backbones = list_encoders()
    methods = fsar.list_methods()
    try:
        if name in backbones:
            if backbone is not None:
                raise CLIError(f"{name!r} is a backbone; --backbone applies to methods only")
            return "backbone", create_encoder(name, weights=weights, **options)
        if name in methods:
            chosen = backbone or DEFAULT_BACKBONE
            if chosen not in backbones:
                raise CLIError(f"unknown backbone {chosen!r}; available backbones: {', '.join(backbones)}")
            return "method", fsar.create_method(name, backbone=chosen, weights=weights, **options)
    except CLIError:
        raise
    except (ValueError, TypeError, OSError) as error:
        hint = ""
        if weights is None and isinstance(error, OSError):
            hint = " (no local weights? counts do not depend on them: try --weights random)"
        raise CLIError(f"cannot build {name!r}: {error}{hint}") from None
    raise CLIError(
        f"unknown method or backbone {name!r}; methods: {', '.join(methods) or '(none)'}; "
        f"backbones: {', '.join(backbones)}"
    )


def run(args: argparse.Namespace) -> int:
    from fsar.encoders.params import format_report, parameter_report

    if args.depth < 1:
        raise CLIError("--depth must be >= 1")
    kind, module = build_for_info(
        args.name, backbone=args.backbone, weights=args.weights, options=method_options_dict(args)
    )
    for part in list(module.modules()):  # an encoder that loads lazily (video MLLMs): count its weights too
        if callable(getattr(part, "load_weights", None)):
            part.load_weights()
    rows = parameter_report(module, depth=args.depth)
    total, trainable = rows[-1][1], rows[-1][2]
    backbone = getattr(module, "backbone_name", None) if kind == "method" else None
    record = {
        "name": args.name,
        "kind": kind,
        "backbone": backbone,
        "weights": args.weights,
        "total": total,
        "trainable": trainable,
        "modules": [{"module": n, "total": t, "trainable": tr} for n, t, tr in rows[:-1]],
    }
    if emit_json(args.json, record):
        return 0
    title = f"{args.name} ({kind}" + (f", backbone {backbone}" if backbone else "") + ")"
    print(f"{title}: {total:,} parameters ({total / 1e6:.2f} M), trainable {trainable:,} ({trainable / 1e6:.2f} M)")
    print(format_report(rows))
    return 0
