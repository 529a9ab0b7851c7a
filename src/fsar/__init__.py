"""fsar: few-shot action recognition with multimodal (CLIP-era) methods and temporal matching metrics.

Public surface::

    fsar.create_method("ma-fsar", backbone="clip-vit-b32", weights="random")
    fsar.list_methods()
    fsar.metrics.build("otam")
    fsar.encoders.create_encoder("effnet-lite0+minilm")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "create_method", "list_methods"]


def create_method(name: str, **kwargs):
    """Build a registered few-shot method (see :func:`list_methods`)."""
    from fsar.methods import create_method as _create

    return _create(name, **kwargs)


def list_methods() -> list[str]:
    """Names of the registered few-shot methods."""
    from fsar.methods import list_methods as _list

    return _list()
