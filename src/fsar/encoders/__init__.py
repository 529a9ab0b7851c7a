"""Frame+text encoders behind one interface (:class:`fsar.encoders.base.Encoder`).

``create_encoder(name, **options)`` builds a registered backbone; ``list_encoders()``
names them. Backbone modules register themselves on import.
"""

from __future__ import annotations

import importlib

from fsar.encoders.base import Encoder
from fsar.registry import Registry

ENCODERS: Registry[Encoder] = Registry("backbone")

# Modules that register backbones; imported on first use so that `import fsar` stays light.
_BACKBONE_MODULES = (
    "fsar.encoders.clip",
    "fsar.encoders.embedded",
    "fsar.encoders.embedded_grid",
    "fsar.encoders.video_llava",
    "fsar.encoders.llava_next_video",
    "fsar.encoders.qwen2_vl",
)


def _load_all() -> None:
    for module in _BACKBONE_MODULES:
        importlib.import_module(module)


def create_encoder(name: str, **options) -> Encoder:
    """Build backbone ``name`` (see :func:`list_encoders`) with backbone-specific options."""
    _load_all()
    return ENCODERS.build(name, **options)


def list_encoders() -> list[str]:
    _load_all()
    return ENCODERS.names()


__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
