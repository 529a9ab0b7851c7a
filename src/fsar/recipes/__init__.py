"""Training recipes: the papers' hyper-parameters per (method, benchmark, shot), shipped as YAML.

``fsar train --recipe ma-fsar/ssv2-small-1shot --data /data/ssv2`` fills the training config
from ``fsar/recipes/ma-fsar/ssv2-small-1shot.yaml``; ``fsar recipes`` lists them. Layers,
later ones winning: the config defaults < the recipe < ``--config F.yaml`` < flags. A
method option given with ``-O`` replaces that one option, not the recipe's others.

A recipe file holds ``train:`` (keys of :class:`fsar.engine.config.TrainConfig`, plus
``splits: NAME``, a shipped split whose train + val parts train and validate),
``evaluate:`` (the test protocol: ``split``, way, shot, queries, episodes, seed) and
``reported:`` (the source's accuracy per backbone, for comparison). Every value's comment in
the file names its source: ``[paper: ...]``, ``[spec: ...]`` or ``[ours]`` where no source
gives one. A path to a YAML file of the same form works wherever a name does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Recipe", "RecipeError", "list_recipes", "load_recipe", "recipe_directory"]


class RecipeError(ValueError):
    """A recipe name or file that cannot be used (the message lists the known recipes)."""


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    method: str
    benchmark: str | None
    shot: int | None
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, float | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def train_values(self) -> dict[str, Any]:
        """The ``train:`` section as TrainConfig keys (``splits`` becomes ``split_file_dir``, a name)."""
        values = dict(self.train)
        if "splits" in values:
            values["split_file_dir"] = values.pop("splits")
        return values

    def eval_values(self) -> dict[str, Any]:
        """The ``evaluate:`` section as EvalConfig keys (``split`` becomes ``split_file``, a name)."""
        values = dict(self.evaluate)
        if "split" in values:
            values["split_file"] = values.pop("split")
        return values


def recipe_directory() -> Path:
    from importlib import resources

    return Path(str(resources.files("fsar.recipes")))


def _read(path: Path, name: str) -> Recipe:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RecipeError(f"{path}: cannot read recipe ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("train"), dict):
        raise RecipeError(f"{path}: a recipe is a mapping with a 'train:' section")
    unknown = set(loaded) - {"recipe", "method", "benchmark", "shot", "train", "evaluate", "reported", "notes"}
    if unknown:
        raise RecipeError(f"{path}: unknown recipe sections {sorted(unknown)}")
    train = dict(loaded["train"])
    method = loaded.get("method") or train.get("method")
    if not method:
        raise RecipeError(f"{path}: the recipe names no method")
    return Recipe(
        name=str(loaded.get("recipe") or name), path=path, method=str(method), benchmark=loaded.get("benchmark"),
        shot=loaded.get("shot"), train=train, evaluate=dict(loaded.get("evaluate") or {}),
        reported=dict(loaded.get("reported") or {}), notes=tuple(str(n) for n in loaded.get("notes") or ()),
    )


def list_recipes() -> list[Recipe]:
    """Every shipped recipe, by method then benchmark then shot."""
    root = recipe_directory()
    found = [_read(path, f"{path.parent.name}/{path.stem}") for path in root.glob("*/*.yaml")]
    return sorted(found, key=lambda r: (r.method, r.benchmark or "", r.shot or 0))


def load_recipe(name: str | Path) -> Recipe:
    """A shipped recipe by name (``ma-fsar/ssv2-small-1shot``) or a YAML file of the same form."""
    text = str(name).strip()
    candidate = recipe_directory() / f"{text}.yaml"
    if "/" in text and not text.endswith((".yaml", ".yml")) and candidate.is_file():
        return _read(candidate, text)
    path = Path(text)
    if path.is_file():
        return _read(path, path.stem)
    known = [r.name for r in list_recipes()]
    close = [k for k in known if text.split("/")[0] in k] or known
    raise RecipeError(f"unknown recipe {text!r}; e.g. {', '.join(close[:12])}"
                      + (f" ... ({len(known)} in all: fsar recipes)" if len(close) > 12 else ""))
