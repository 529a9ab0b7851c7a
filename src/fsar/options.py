"""Declarations of the command-line options a method adds (light: no torch import, so
``fsar --help`` stays fast and ``fsar.cli`` can list them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MethodOption"]


@dataclass(frozen=True)
class MethodOption:
    """One command-line option a method adds to the commands that build it (e.g. LGA's
    ``--descriptions``). ``fsar.cli`` turns it into the flag ``--<name with dashes>``; the
    parsed value, of ``type`` (``bool`` options are on/off switches), reaches
    :meth:`fsar.methods.FewShotMethod.load_resources` under ``name``. An option that was not
    given is absent there: the method applies ``default`` itself, so a saved config records
    only what was asked for. Given values are saved in the run's config and used again
    when the method is rebuilt from a checkpoint (unless given again).
    """

    name: str
    type: type = str
    help: str = ""
    default: Any = None
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.type not in (str, int, float, bool):
            raise TypeError(f"option {self.name!r}: type must be str, int, float or bool, got {self.type!r}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def help_text(self) -> str:
        """The help text with the default, for ``--help``."""
        if self.default is None or self.type is bool:
            return self.help
        return f"{self.help} (default {self.default})"
