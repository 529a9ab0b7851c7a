"""Command-line values checked where they enter: argparse types that carry their range.

``type=int_at_least(1)`` or ``type=number(above=0)`` turn a bad value into argparse's own
one-line error (``fsar predict: error: argument --top: must be an integer >= 1, got 0``,
exit 2) with the allowed range in it, before any work starts. :class:`ArgumentParser` also
reads negative numbers in scientific notation (``--lr -1e-3``, ``-inf``) as values rather
than as unknown options, so that the range check, not "expected one argument", answers.
The module name starts with ``_``: it is not a sub-command.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

#: A negative number as a user writes it: -3, -0.5, -.5, -1e-3, -2.5E+4, -inf, -nan.
_NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that takes ``-1e-3`` for a (negative) value, not an option.

    Sub-parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER


def _range_text(kind: str, above, at_least, at_most) -> str:
    def text(value) -> str:  # integers exactly (a seed's 2**63-1), floats short
        return str(value) if isinstance(value, int) else f"{value:g}"

    parts = []
    if above is not None:
        parts.append(f"> {text(above)}")
    if at_least is not None:
        parts.append(f">= {text(at_least)}")
    if at_most is not None:
        parts.append(f"<= {text(at_most)}")
    return f"{kind} {' and '.join(parts)}".strip()


def int_at_least(minimum: int, *, at_most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum`` (and ``<= at_most``)."""
    wanted = _range_text("an integer", None, minimum, at_most)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < minimum or (at_most is not None and value > at_most):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def number(*, above: float | None = None, at_least: float | None = None, at_most: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite float in the given range (``above`` is exclusive)."""
    wanted = _range_text("a finite number", above, at_least, at_most)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (above is not None and value <= above)
            or (at_least is not None and value < at_least)
            or (at_most is not None and value > at_most)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = "number"
    return parse
