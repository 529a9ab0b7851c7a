"""The one vocabulary of the ``fsar`` commands: every shared flag is defined here, once.

* ``--data ROOT``: the data root, in every command that reads a data set
  (:func:`add_data`; an old positional or flag spelling keeps working for one release
  with a deprecation message);
* ``--json PATH``: write the command's JSON record there (``--json -``: print it instead)
  (:func:`add_json`, :func:`emit_json`);
* ``--device``: ``auto`` (default: CUDA when available), ``cpu``, ``cuda``, ``cuda:N``
  (:func:`add_device`, :func:`resolve_device`);
* ``-O KEY=VALUE``: a method option (repeatable), in every command that builds a method
  (:func:`add_method_option_flag`);
* ``--no-progress``: no progress bars (:func:`add_no_progress`; ``args.progress`` is False);
* the methods' own options (:func:`add_methods_own_options`, from
  :meth:`fsar.methods.FewShotMethod.options`), gathered by :func:`method_args_from`.

Module name starts with ``_``: it is not a sub-command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterable, Sequence

from fsar.cli import CLIError
from fsar.cli._values import ArgumentParser as NumberAwareParser
from fsar.options import MethodOption

__all__ = [
    "DeferredParser",
    "add_command",
    "add_data",
    "add_device",
    "add_json",
    "add_method_option_flag",
    "add_method_options",
    "add_methods_own_options",
    "add_no_progress",
    "add_sampling",
    "add_threads",
    "data_root",
    "deprecated",
    "emit_json",
    "method_args_from",
    "method_options_dict",
    "method_options_per_label",
    "parse_option",
    "resolve_device",
]


def deprecated(old: str, new: str) -> None:
    """Tell the user (stderr) that spelling ``old`` is going away in favour of ``new``."""
    print(f"fsar: warning: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr)


class DeferredParser(NumberAwareParser):
    """An ArgumentParser that adds some arguments only when it is used (parsing or help):
    the methods' own options need the method modules (and torch) imported, which only the
    commands that build a method should pay for. Like every fsar parser it reads ``-1e-3`` as
    a (negative) value, not as an unknown option (:class:`fsar.cli._values.ArgumentParser`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse API
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()


def add_command(subparsers, name: str, *, help: str, description: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser whose description and epilog keep their line breaks."""
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


# ----------------------------------------------------------------------------- data root


class _LegacyStore(argparse.Action):
    """An old spelling of an option: stores the value like the new one and warns once."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string or self.dest, self.new)
        setattr(namespace, self.dest, values)


def add_data(
    parser: argparse.ArgumentParser,
    *,
    help: str = "data root: ROOT/<class>/<video file or frame folder>",
    required: bool = False,
    legacy_positional: bool = False,
    legacy_flags: Sequence[str] = (),
) -> None:
    """``--data ROOT`` (into ``args.data``). ``legacy_positional``: the old spelling
    ``fsar CMD ROOT`` still works (with a deprecation message); ``legacy_flags``: old flag
    names (e.g. ``--support``) that still work. With either, :func:`data_root` checks
    ``required`` after parsing."""
    parser.add_argument("--data", metavar="ROOT", help=help,
                        required=required and not (legacy_positional or legacy_flags))
    for flag in legacy_flags:
        parser.add_argument(flag, dest="data", metavar="ROOT", action=_LegacyStore, new="--data",
                            help=argparse.SUPPRESS)
    if legacy_positional:
        parser.add_argument("legacy_data", nargs="?", metavar="ROOT", help=argparse.SUPPRESS)
    parser.set_defaults(_data_required=required)


def data_root(args: argparse.Namespace) -> str | None:
    """The data root given (``--data``, or a deprecated spelling, which says so on stderr)."""
    legacy = getattr(args, "legacy_data", None)
    if legacy is not None:
        if args.data is not None and args.data != legacy:
            raise CLIError(f"two data roots: --data {args.data} and {legacy}")
        deprecated(f"the positional ROOT ({legacy})", "--data ROOT")
        args.data = legacy
        args.legacy_data = None
    if args.data is None and getattr(args, "_data_required", False):
        raise CLIError("give the data root with --data ROOT")
    return args.data


# ----------------------------------------------------------------------------- json


class _JsonAction(argparse.Action):
    """``--json PATH`` / ``--json -``; a bare ``--json`` (the old print switch) prints, with a
    deprecation message."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            deprecated("a bare --json", "--json - (print) or --json PATH (write a file)")
            values = "-"
        setattr(namespace, self.dest, values)


def add_json(parser: argparse.ArgumentParser, *, what: str = "the result", bare_prints: bool = False) -> None:
    """``--json PATH`` (write ``what`` as JSON to PATH) or ``--json -`` (print it).
    ``bare_prints``: the command used to take a bare ``--json`` meaning "print"; keep it."""
    parser.add_argument("--json", metavar="PATH", nargs="?" if bare_prints else None, action=_JsonAction,
                        help=f"write {what} as JSON to PATH ('-': print it instead of the text)")


def emit_json(target: str | None, record: Any) -> bool:
    """Write ``record`` to ``target`` atomically, or print it when ``target`` is ``-``.
    Returns True when it was printed (the command then prints nothing else)."""
    import json

    if target is None:
        return False
    if target == "-":
        print(json.dumps(record, indent=2, default=str))
        return True
    from fsar.engine.checkpoint import atomic_write_json

    try:
        atomic_write_json(target, record)
    except OSError as error:
        raise CLIError(f"--json {target}: cannot write ({error.strerror or error})") from None
    return False


# ----------------------------------------------------------------------------- device, progress


def add_device(parser: argparse.ArgumentParser, *, default: str | None = "auto") -> None:
    """``--device``: auto (CUDA when available, else CPU), cpu, cuda, cuda:N."""
    parser.add_argument("--device", default=default, metavar="DEVICE",
                        help="auto (default: CUDA when available, else CPU), cpu, cuda, cuda:N")


def resolve_device(name: str | None):
    """``torch.device`` of a ``--device`` value (``auto``/None: CUDA when available)."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    return device


def add_no_progress(parser: argparse.ArgumentParser, *, default: bool | None = True) -> None:
    """``--no-progress``: ``args.progress`` becomes False (``default`` otherwise; None = "not
    given", for the config layers)."""
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=default,
                        help="no progress bars")


# ----------------------------------------------------------------------------- frame sampling


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads (default: the cores not busy with other processes; see
    :mod:`fsar.engine.threads`). ``fsar.cli.main`` applies it before the command runs, for every
    command that has the flag."""
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads for torch (default: the cores not busy with other processes; FSAR_THREADS also sets it)",
    )


def add_sampling(parser: argparse.ArgumentParser, *, frames: int | None = None, image_size: int | None = None) -> None:
    """How clips become model inputs, the same in every command that decodes clips (so a
    cache from ``fsar extract`` serves ``fsar train``/``eval`` given the same flags):
    ``--frames T`` (``args.num_frames``) and ``--image-size PX``. Defaults None = "not given"
    (the config's or the checkpoint's value)."""
    from fsar.cli._values import int_at_least

    parser.add_argument("--frames", dest="num_frames", type=int_at_least(1), default=frames, metavar="T",
                        help=f"frames per clip T >= 1 (default {frames or 8})")
    parser.add_argument("--image-size", type=int_at_least(1), default=image_size, metavar="PX",
                        help="frame side fed to the encoder, >= 1 (default: the encoder's, 224)")


# ----------------------------------------------------------------------------- method options


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (numbers, booleans, lists, mappings, strings)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CLIError(f"-O expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return key.strip(), value


class _LegacyOption(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string, "-O KEY=VALUE")
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)


def add_method_option_flag(parser: argparse.ArgumentParser, *, legacy_flags: Sequence[str] = ()) -> None:
    """``-O KEY=VALUE`` (repeatable) into ``args.method_options`` (the texts; read them with
    :func:`method_options_dict`)."""
    parser.add_argument(
        "-O", dest="method_options", action="append", metavar="KEY=VALUE",
        help="method option (repeatable, VALUE read as YAML), e.g. -O alpha=0.25 -O metric=bimhm "
        "-O finetune=frozen",
    )
    for flag in legacy_flags:
        parser.add_argument(flag, dest="method_options", action=_LegacyOption, metavar="KEY=VALUE",
                            help=argparse.SUPPRESS)


def method_options_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The ``-O KEY=VALUE`` options given, as {key: value}; a malformed one is a CLIError."""
    return dict(parse_option(text) for text in (getattr(args, "method_options", None) or []))


def method_options_per_label(values: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``-O KEY=VALUE`` for every method in ``labels``, ``-O METHOD:KEY=VALUE`` for one of them
    (commands that run several methods: ``fsar benchmark``, ``fsar demo``); methods without
    options are left out."""
    options: dict[str, dict[str, Any]] = {label: {} for label in labels}
    for text in values or []:
        if "=" not in text:
            raise CLIError(f"-O {text!r}: expected KEY=VALUE or METHOD:KEY=VALUE")
        head, _, _ = text.partition("=")
        label, sep, _ = head.partition(":")
        targets = list(labels)
        if sep:
            if label not in labels:
                raise CLIError(f"-O {text!r}: {label!r} is not one of the methods run here ({', '.join(labels)})")
            targets, text = [label], text[len(label) + 1:]
        key, value = parse_option(text)
        for target in targets:
            options[target][key] = value
    return {label: values for label, values in options.items() if values}


def add_method_options(parser: argparse.ArgumentParser, options: Iterable[MethodOption], *, title: str) -> list[str]:
    """Add ``options`` (a method's :class:`MethodOption` declarations) as flags in a group
    called ``title``; values default to None ("not given"). Returns the option names added."""
    group = parser.add_argument_group(title)
    names = []
    for option in options:
        kwargs: dict[str, Any] = dict(dest=option.name, default=None, help=option.help_text())
        if option.type is bool:
            kwargs.update(action="store_const", const=True)
        else:
            kwargs.update(type=option.type, metavar=option.metavar or option.name.split("_")[-1].upper())
        try:
            group.add_argument(option.flag, **kwargs)
        except argparse.ArgumentError as error:
            raise ValueError(f"{title}: option {option.flag} clashes with a flag of the command ({error})") from None
        names.append(option.name)
    return names


def add_methods_own_options(parser: DeferredParser) -> None:
    """Every method's own options (:meth:`FewShotMethod.options`), one group per method, added
    when the command is used; an option that several methods declare is added once."""

    def add(parser: argparse.ArgumentParser) -> None:
        from fsar.methods import method_options

        seen: dict[str, tuple[str, MethodOption]] = {}
        names: list[str] = []
        for method, options in method_options().items():
            fresh = []
            for option in options:
                if option.name in seen:
                    first, declared = seen[option.name]
                    if (declared.type, declared.default) != (option.type, option.default):
                        raise ValueError(
                            f"method {method!r} declares option {option.flag} unlike method {first!r} "
                            "(another type or default); give it another name"
                        )
                    continue
                seen[option.name] = (method, option)
                fresh.append(option)
            if fresh:
                sharing = sorted({m for m, o in seen.values() if o in fresh} | {method})
                names += add_method_options(parser, fresh, title=f"options of method {', '.join(sharing)}")
        parser.set_defaults(method_option_names=tuple(names))

    parser.defer(add)


def method_args_from(args: argparse.Namespace) -> dict[str, Any]:
    """The methods' own options given on the command line: {option name: typed value}."""
    names = getattr(args, "method_option_names", ())
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
