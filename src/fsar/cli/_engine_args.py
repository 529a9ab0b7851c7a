"""Flags shared by ``fsar train`` and ``fsar eval``, and their merge into the typed configs.

Every config flag defaults to ``None`` ("not given") so that the precedence is exactly
dataclass default < ``--recipe NAME`` < ``--config F.yaml`` < flag. Module name starts with ``_``: it is not a
sub-command.
"""

from __future__ import annotations

import argparse
from typing import Any

from fsar.cli import CLIError
from fsar.cli._args import (
    add_data,
    add_device,
    add_method_option_flag,
    add_methods_own_options,
    add_no_progress,
    add_sampling,
    add_threads,
    method_args_from,
    method_options_dict,
)


def add_common(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument("--config", metavar="F.yaml", help="YAML file with any of the settings below (flags win)")
    parser.add_argument(
        "--recipe", metavar="NAME",
        help="a shipped recipe (fsar recipes), e.g. ma-fsar/ssv2-small-1shot: the paper's settings; "
             "--config and flags override any of them",
    )
    add_data(parser)
    parser.add_argument("--method", help="method name (fsar.list_methods(): ma-fsar, clip-fsar, lga, proto, otam, ...)")
    parser.add_argument("--backbone", help="encoder: effnet-lite0+minilm (embedded default), clip-vit-b32, clip-vit-b16")
    parser.add_argument("--weights", metavar="W", help="backbone weights: a local folder, a hub id, or 'random'")
    add_method_option_flag(parser, legacy_flags=("--option",))
    parser.add_argument("--way", type=int, help="classes per episode (default 5)")
    parser.add_argument("--shot", type=int, help="support clips per class (default 1)")
    parser.add_argument("--queries", type=int, help=f"query clips per class in {what} episodes")
    parser.add_argument("--episodes", type=int, help=f"number of {what} episodes")
    parser.add_argument("--seed", type=int, help="seed of the episodes and of everything random (default 0)")
    add_sampling(parser)
    parser.add_argument(
        "--features", metavar="DIR",
        help="feature cache of a frozen encoder (from `fsar extract`); default: extract on the fly",
    )
    parser.add_argument("--no-feature-cache", dest="use_feature_cache", action="store_const", const=False,
                        help="always decode frames, even for a frozen encoder")
    add_device(parser, default=None)
    add_no_progress(parser, default=None)
    add_threads(parser)
    add_methods_own_options(parser)


CONFIG_KEYS_SKIP = {"config", "command", "func", "verbose", "resume", "recipe", "compare", "threads"}


def overrides_from_args(args: argparse.Namespace, config_cls) -> dict[str, Any]:
    """The flags given on the command line, as config keys (only fields of ``config_cls``)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)} - {"method_options", "method_args"}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if getattr(args, "method_options", None):
        values["method_options"] = method_options_dict(args)
    method_args = method_args_from(args)
    if method_args:
        values["method_args"] = method_args
    return values


def resolve(args: argparse.Namespace, config_cls, **extra):
    """Merge defaults, ``--config`` and the flags; configuration problems become CLIError."""
    from fsar.engine.config import ConfigError, resolve_config

    overrides = overrides_from_args(args, config_cls)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    recipe = None
    if getattr(args, "recipe", None):
        from fsar.engine.config import TrainConfig
        from fsar.recipes import RecipeError, load_recipe

        try:
            loaded = load_recipe(args.recipe)
        except RecipeError as error:
            raise CLIError(str(error)) from None
        recipe = (loaded.name, loaded.train_values() if config_cls is TrainConfig else loaded.eval_values())
    try:
        return resolve_config(config_cls, yaml_path=args.config, overrides=overrides, recipe=recipe)
    except ConfigError as error:
        raise CLIError(str(error)) from None


#: Exceptions that are the user's input problems (bad data, checkpoint, config), reported as one line.
def user_errors() -> tuple[type[BaseException], ...]:
    from fsar.data.episodes import EpisodeError
    from fsar.data.manifest import ManifestError
    from fsar.data.video import VideoReadError
    from fsar.data.inputs import MissingStreamError
    from fsar.encoders.cache import CacheMismatchError, MissingFeatureError
    from fsar.engine.checkpoint import CheckpointError
    from fsar.engine.config import ConfigError
    from fsar.engine.train import TrainError

    return (EpisodeError, ManifestError, VideoReadError, CheckpointError, ConfigError, TrainError,
            CacheMismatchError, MissingFeatureError, MissingStreamError, FileNotFoundError)
