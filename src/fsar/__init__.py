"""fsar: few-shot action recognition with multimodal (CLIP-era) methods and temporal matching metrics.

Public surface::

    fsar.create_method("ma-fsar", backbone="clip-vit-b32", weights="random")
    fsar.list_methods()
    fsar.metrics.build("otam")
    fsar.encoders.create_encoder("effnet-lite0+minilm")
    fsar.Recognizer.from_folder("my_actions/", method="otam", reject="auto")   # the practitioner's API
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "IncompatibleCheckpointError",
    "NotAVideoError",
    "Recognizer",
    "RecognizerError",
    "SupportSetError",
    "__version__",
    "create_method",
    "list_methods",
]

_RECOGNIZER_NAMES = {"Recognizer", "RecognizerError", "NotAVideoError", "SupportSetError",
                     "IncompatibleCheckpointError", "Prediction"}


def __getattr__(name: str):
    # imported on first use: `import fsar` (and `fsar --help`) stays free of torch
    if name in _RECOGNIZER_NAMES:
        from fsar import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'fsar' has no attribute {name!r}")


def create_method(name: str, **kwargs):
    """Build a registered few-shot method (see :func:`list_methods`)."""
    from fsar.methods import create_method as _create

    return _create(name, **kwargs)


def list_methods() -> list[str]:
    """Names of the registered few-shot methods."""
    from fsar.methods import list_methods as _list

    return _list()
