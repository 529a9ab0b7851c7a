"""Few-shot methods: encoder + prototype module + metric + losses, one file per method.

``create_method(name, backbone=..., weights=..., **options)`` and ``list_methods()``.
Every module of this package is imported on first use (modules whose name starts with
``_`` excepted), and a method module registers its methods on import with
``@METHODS.register(name)``: adding a method is adding its file, nothing else. A module
that fails to import (a missing dependency, a syntax error) is an error, never skipped.

What the engine and the command line ask of a method goes through the hooks of
:class:`FewShotMethod` and the helpers here (:func:`method_class`, :func:`method_options`,
:func:`check_method_options`, :func:`method_from_config`); they never name a method.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from fsar.methods.base import EpisodeInputs, FewShotMethod, MethodOption, MethodOutput
from fsar.registry import Registry

METHODS: Registry[FewShotMethod] = Registry("method")

_loaded = False


def _load_all() -> None:
    """Import every module of this package once (they register their methods)."""
    global _loaded
    if _loaded:
        return
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def create_method(name: str, **options) -> FewShotMethod:
    """Build method ``name`` (see :func:`list_methods`)."""
    _load_all()
    return METHODS.build(name, **options)


def list_methods() -> list[str]:
    _load_all()
    return METHODS.names()


def method_class(name: str) -> type[FewShotMethod]:
    """The class registered as ``name`` (ValueError listing the methods for an unknown one)."""
    _load_all()
    return METHODS.get(name)


def method_options() -> dict[str, tuple[MethodOption, ...]]:
    """Every method's own command-line options: {method name: options} (methods without any
    left out)."""
    _load_all()
    out = {}
    for name in METHODS.names():
        options = METHODS.get(name).options()
        if options:
            out[name] = tuple(options)
    return out


def check_method_options(name: str, values: Mapping[str, Any]) -> None:
    """Refuse option values that method ``name`` does not declare, naming the methods that do."""
    own = {option.name for option in method_class(name).options()}
    foreign = sorted(set(values) - own)
    if not foreign:
        return
    owners = {}
    for method, options in method_options().items():
        for option in options:
            owners.setdefault(option.name, []).append(method)
    problems = []
    for key in foreign:
        flag = "--" + key.replace("_", "-")
        where = owners.get(key)
        problems.append(f"{flag} is an option of method {', '.join(repr(m) for m in where)}, not of {name!r}"
                        if where else f"{flag} is no option of method {name!r}")
    raise ValueError("; ".join(problems))


def method_from_config(name: str, config: Mapping[str, Any]) -> FewShotMethod:
    """Rebuild method ``name`` from its saved resolved config (:meth:`FewShotMethod.config_dict`)."""
    return method_class(name).from_config(config)


def __getattr__(name: str):
    # Imported on first use: method modules import this package (for METHODS) when they load.
    if name == "clip_spm_from_reference":
        from fsar.methods.clip_spm import clip_spm_from_reference

        return clip_spm_from_reference
    raise AttributeError(f"module 'fsar.methods' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "clip_spm_from_reference",
    "EpisodeInputs",
    "FewShotMethod",
    "MethodOption",
    "MethodOutput",
    "check_method_options",
    "create_method",
    "list_methods",
    "method_class",
    "method_from_config",
    "method_options",
]
