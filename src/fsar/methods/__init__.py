"""Few-shot methods: encoder + prototype module + metric + losses, one file per method.

``create_method(name, backbone=..., weights=..., **options)`` and ``list_methods()``.
Method modules register themselves on import.
"""

from __future__ import annotations

import importlib

from fsar.methods.base import EpisodeInputs, FewShotMethod, MethodOutput
from fsar.registry import Registry

METHODS: Registry[FewShotMethod] = Registry("method")

# Modules that register methods; imported on first use.
_METHOD_MODULES = (
    "fsar.methods.baselines",
    "fsar.methods.ma_fsar",
    "fsar.methods.clip_fsar",
    "fsar.methods.lga",
)


def _load_all() -> None:
    for module in _METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # Only tolerate the method module itself being absent (work in progress),
            # never a missing dependency inside it.
            if error.name != module:
                raise


def create_method(name: str, **options) -> FewShotMethod:
    """Build method ``name`` (see :func:`list_methods`).

    Everything that stops the build because of the arguments (an unknown method or option, a
    value of the wrong type or out of range, an unknown backbone or metric, weights that do
    not load) is a :class:`~fsar.errors.ModelError` naming the method and the problem.
    """
    from fsar.errors import FsarError, ModelError

    _load_all()
    try:
        return METHODS.build(name, **options)
    except FsarError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        if not text.startswith(f"{name}:"):
            text = f"{name}: {text}"
        raise ModelError(f"cannot build method {text}") from error


def list_methods() -> list[str]:
    _load_all()
    return METHODS.names()


__all__ = ["METHODS", "EpisodeInputs", "FewShotMethod", "MethodOutput", "create_method", "list_methods"]
