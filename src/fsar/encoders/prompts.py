"""Prompt templates for class names and a cached bank of class text features.

MA-FSAR (Table 10; spec ``ma_fsar.md`` section 5) fills 16 templates with the class name.
Training draws one template at random per video; inference averages the text features of
all 16 (arithmetic mean of the raw encoder outputs, no re-normalisation). The text encoder is
frozen in every method here, so the 16 features of a class are computed once and kept in memory.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

__all__ = ["TEMPLATES", "ClassTextBank", "normalise_class_name"]

#: The 16 prompt templates of MA-FSAR Table 10, in the paper's order; ``{}`` is the class name.
TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def normalise_class_name(name: str) -> str:
    """A dataset class name as words to put into a template.

    - SSv2 placeholders lose their brackets: ``"Pushing [something] from left to right"`` ->
      ``"pushing something from left to right"``.
    - Underscores become spaces (HMDB51 ``brush_hair``, Kinetics ``playing_guitar``).
    - A single CamelCase token is split (UCF101 ``ApplyEyeMakeup`` -> ``apply eye makeup``).
    - Lower case, single spaces, no surrounding whitespace.
    """
    if not isinstance(name, str):
        raise TypeError(f"class name must be a string, got {type(name).__name__}")
    text = name.replace("_", " ")
    text = re.sub(r"[\[\]]", "", text)
    if " " not in text.strip():
        text = _CAMEL_BOUNDARY.sub(" ", text)
    text = " ".join(text.split()).lower()
    if not text:
        raise ValueError(f"class name {name!r} is empty after normalisation")
    return text


def _device_of(encoder) -> torch.device | None:
    """The device of the encoder's parameters (None for parameter-free encoders)."""
    parameters = getattr(encoder, "parameters", None)
    if not callable(parameters):
        return None
    first = next(iter(parameters()), None)
    return None if first is None else first.device


class ClassTextBank:
    """Text features of class names under the prompt templates, computed once per class.

    ``features(names, train=True, generator=g)`` returns one row per given name (repeats
    allowed, e.g. one name per support clip), each filled into its own randomly drawn template.
    ``features(names, train=False)`` returns, per name, the mean of its features over all
    templates. Both read from an in-memory cache of (num_templates, D_text) per class, filled
    by one batched ``encoder.encode_text`` call for all missing classes; so a fixed class list
    costs one encoder call in total. Cached tensors are detached (the text encoder is frozen)
    and returned on the encoder's current device.

    Args:
        encoder: anything with ``encode_text(list[str]) -> (N, D_text)``.
        templates: defaults to the 16 of MA-FSAR.
        normalise: apply :func:`normalise_class_name` before filling templates.
    """

    def __init__(
        self,
        encoder,
        *,
        templates: Sequence[str] = TEMPLATES,
        normalise: bool = True,
    ) -> None:
        templates = tuple(templates)
        if not templates:
            raise ValueError("ClassTextBank needs at least one template")
        bad = [t for t in templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f"each template needs exactly one '{{}}' placeholder: {bad}")
        self.encoder = encoder
        self.templates = templates
        self.normalise = normalise
        self._per_template: dict[str, torch.Tensor] = {}  # class name -> (num_templates, D)

    def prompts(self, class_name: str) -> list[str]:
        """The filled templates of one class, in template order."""
        words = normalise_class_name(class_name) if self.normalise else class_name
        return [t.format(words) for t in self.templates]

    def template_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """(n, num_templates, D_text): every template's features for each name."""
        self._fill(class_names)
        stacked = torch.stack([self._per_template[n] for n in class_names])
        device = _device_of(self.encoder)
        return stacked if device is None else stacked.to(device)

    def features(
        self,
        class_names: Sequence[str],
        *,
        train: bool,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(n, D_text): a random template per row in training, the template mean otherwise."""
        class_names = list(class_names)
        if not class_names:
            raise ValueError("features() needs at least one class name")
        per_template = self.template_features(class_names)  # (n, K, D)
        if not train:
            return per_template.mean(dim=1)
        choice = torch.randint(
            len(self.templates), (len(class_names),), generator=generator, device="cpu"
        )
        rows = torch.arange(len(class_names))
        device = per_template.device
        return per_template[rows.to(device), choice.to(device)]

    def clear(self) -> None:
        """Forget the cached features (e.g. after moving the encoder to another device)."""
        self._per_template.clear()

    def __len__(self) -> int:
        return len(self._per_template)

    def _fill(self, class_names: Sequence[str]) -> None:
        missing = list(dict.fromkeys(n for n in class_names if n not in self._per_template))
        if not missing:
            return
        texts = [p for name in missing for p in self.prompts(name)]
        with torch.no_grad():
            feats = self.encoder.encode_text(texts)
        k = len(self.templates)
        if feats.dim() != 2 or feats.shape[0] != len(texts):
            raise ValueError(
                f"{type(self.encoder).__name__}.encode_text returned shape {tuple(feats.shape)} "
                f"for {len(texts)} texts"
            )
        feats = feats.detach().reshape(len(missing), k, feats.shape[-1])
        for name, rows in zip(missing, feats):
            self._per_template[name] = rows
