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
    "fsar.methods.fsar_llava",
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
    """Build method ``name`` (see :func:`list_methods`)."""
    _load_all()
    return METHODS.build(name, **options)


def list_methods() -> list[str]:
    _load_all()
    return METHODS.names()


__all__ = ["METHODS", "EpisodeInputs", "FewShotMethod", "MethodOutput", "create_method", "list_methods"]
