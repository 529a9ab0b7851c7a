"""``fsar recipes``: the shipped training recipes (papers' hyper-parameters per method, benchmark, shot).

    fsar recipes                        list them
    fsar recipes ma-fsar/ssv2-small-1shot   print one (every value with its source)
    fsar train --recipe ma-fsar/ssv2-small-1shot --data /data/ssv2
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError

ORDER = 30


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "recipes",
        help="list the shipped training recipes (fsar train --recipe NAME), or print one",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="print this recipe (with the source of every value)")
    parser.add_argument("--method", help="only this method's recipes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsar.recipes import RecipeError, list_recipes, load_recipe

    if args.name:
        try:
            recipe = load_recipe(args.name)
        except RecipeError as error:
            raise CLIError(str(error)) from None
        print(recipe.path.read_text(encoding="utf-8"), end="")
        return 0
    recipes = [r for r in list_recipes() if args.method in (None, r.method)]
    if not recipes:
        raise CLIError(f"no recipes for method {args.method!r}")
    print(f"{'recipe':<30}{'backbone':<15}{'train episodes':>15}   reported accuracy (%)")
    for r in recipes:
        reported = ", ".join(f"{k} {v}" for k, v in r.reported.items() if v is not None) or "not public"
        print(f"{r.name:<30}{r.train.get('backbone', ''):<15}{r.train.get('episodes', ''):>15}   {reported}")
    print("fsar train --recipe NAME --data ROOT  (flags and --config override any value; "
          "fsar recipes NAME shows each value's source)")
    return 0
