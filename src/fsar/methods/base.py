"""What every few-shot method receives and returns, and what it tells the engine about itself.

A method never opens files: the engine hands it an :class:`EpisodeInputs` built by
the data layer (decoded, transformed frames) or by the feature cache (per-frame
features of a frozen encoder, plus any named streams the method asks for).

The engine and the command line never name a method. They ask it instead, through the
hooks below (all with defaults, so a new method overrides only what differs):

* :meth:`FewShotMethod.required_streams`: extra named streams it reads from the episode;
* :meth:`FewShotMethod.uses_cached_features`: whether episodes may come from the feature cache;
* :meth:`FewShotMethod.is_trainable`: whether ``fsar train`` has anything to train;
* :meth:`FewShotMethod.evaluation_batch` / :meth:`FewShotMethod.predict_episodes`: whether the
  evaluation loop may hand over several episodes of one shape at once (default: one by one);
* :meth:`FewShotMethod.set_training_classes`: the training split's class names;
* :meth:`FewShotMethod.prepare_training`: before the first step of a fresh run, training
  episodes to estimate fixed statistics of the training data from (base-feature centring);
* :meth:`FewShotMethod.options` / :meth:`FewShotMethod.load_resources`: the method's own
  command-line options (parsed in ``fsar.cli``, handed over as typed values) and what it
  loads from them (LGA: its class descriptions and the LLM that writes missing ones);
* ``config`` (a dataclass) and :meth:`FewShotMethod.from_config`: the resolved options,
  saved beside every checkpoint and used to rebuild the method from it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.options import MethodOption

__all__ = ["EpisodeInputs", "FewShotMethod", "MethodOption", "MethodOutput"]


@dataclass
class MethodOutput:
    """log_probs: (n_query, way) log-probabilities of the method's final prediction
    (higher = more likely). loss: scalar, present when the method ran with query labels
    in training mode. parts: named intermediate scores for logging (e.g. ``p_q2s``)."""

    log_probs: torch.Tensor
    loss: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] | None = None


class FewShotMethod(nn.Module, ABC):
    """Encoder + prototype module + metric + losses.

    Subclasses set ``name`` and ``encoder`` and implement :meth:`forward`.
    ``trainable_state_dict`` is what a checkpoint stores; ``config`` (a dataclass of the
    resolved options, or None) is saved beside it.
    """

    name: str
    encoder: nn.Module
    #: False for the training-free baselines (nothing to train).
    trainable: bool = True
    #: The resolved options (a dataclass); saved beside checkpoints, read back by from_config.
    config: Any = None
    #: The training split's class names (set by :meth:`set_training_classes`).
    training_classes: list[str] | None = None
    #: What checkpoints record as the backbone.
    backbone_name: str = ""

    @abstractmethod
    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        """Score the episode's queries against its support set."""

    # ------------------------------------------------------------------ what it needs

    def required_streams(self) -> tuple[str, ...]:
        """Names of the extra streams (beside the primary frames/features) the method reads
        from :attr:`EpisodeInputs.support_streams` / ``query_streams`` / ``class_streams``.
        The engine asks the feature cache for exactly these."""
        return ()

    def encoder_is_frozen(self) -> bool:
        """Whether the encoder never changes (its ``is_frozen``, else: no trainable parameter)."""
        encoder = self._modules.get("encoder")
        if encoder is None:
            return False
        frozen = getattr(encoder, "is_frozen", None)
        if frozen is not None:
            return bool(frozen)
        return not any(p.requires_grad for p in encoder.parameters())

    def uses_cached_features(self) -> bool:
        """Whether episodes may come from the feature cache (per-frame features computed once)
        instead of frames. Default: exactly when the encoder is frozen."""
        return self.encoder_is_frozen()

    def is_trainable(self) -> bool:
        """Whether ``fsar train`` has anything to train: ``trainable`` and some parameter
        that requires a gradient."""
        return bool(self.trainable) and any(p.requires_grad for p in self.parameters())

    def set_training_classes(self, class_names: Sequence[str]) -> None:
        """The class names of the training split, in a fixed order (global labels =
        positions). Methods with a loss over all training classes read
        ``training_classes`` / ``training_class_index``; the others ignore them."""
        names = list(class_names)
        if not names:
            raise ValueError(f"{self.name}: set_training_classes needs at least one class name")
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: set_training_classes got duplicate class names")
        self.training_classes = names
        self.training_class_index = {name: i for i, name in enumerate(names)}

    def prepare_training(
        self, episodes: Iterable[EpisodeInputs], *, reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Estimate what the method fixes from the training data before its first optimiser step.

        The engine calls it once per fresh run (not on resume: the estimate is then in the
        checkpoint), in training mode under ``torch.no_grad``, with an iterator over the run's
        own training episodes (never validation or test ones); the method reads as many as it
        needs (the iterator does not end: a short run's start is the same as a long run's). ``reduce_sum`` sums a tensor over distributed ranks (None: one process). Returns
        what it estimated, for the log (empty: nothing). Default: nothing to estimate.
        """
        return {}

    def optimizer_defaults(self) -> dict[str, Any]:
        """Adam settings the method prefers when the run gives none (keys ``lr``,
        ``weight_decay``, ``betas``; clip-spm: its release's). Default: the engine's."""
        return {}

    def inference_tags(self) -> dict[str, str]:
        """Choices every printed result must name besides the method's name (a transductive
        option, e.g. clip-spm's ``{"padm": "transductive"}``). Default: none."""
        return {}

    # ------------------------------------------------------------------ batched evaluation

    def evaluation_batch(self) -> int:
        """Episodes per :meth:`predict_episodes` call the evaluation loop may hand over (1: the
        loop calls the method once per episode, as it always did)."""
        return 1

    def predict_episodes(self, episodes: Sequence[EpisodeInputs]) -> list[torch.Tensor]:
        """Evaluation of several episodes of one shape (query labels removed): each episode's
        ``log_probs`` (n_query, way), exactly what :meth:`forward` gives it. A method that can stack
        episodes into one batched forward overrides this and :meth:`evaluation_batch`."""
        return [self(inputs).log_probs for inputs in episodes]

    # ------------------------------------------------------------------ options and resources

    @classmethod
    def options(cls) -> tuple[MethodOption, ...]:
        """The method's own command-line options (besides ``-O key=value``, which sets fields
        of its ``config``)."""
        return ()

    def load_resources(self, values: Mapping[str, Any], *, class_names: Sequence[str] | None = None) -> None:
        """Load what the method's own options point at (``values``: option name -> typed
        value, only the options given). ``class_names``: every class the run will show the
        method, for resources prepared per class. Default: nothing to load."""
        if values:
            raise ValueError(f"{self.name}: takes no options {sorted(values)}")

    # ------------------------------------------------------------------ config

    def config_dict(self) -> dict[str, Any] | None:
        """The resolved config as JSON-able values (None when the method has none)."""
        import json

        config = self.config
        if config is None:
            return None
        if dataclasses.is_dataclass(config):
            config = dataclasses.asdict(config)
        return json.loads(json.dumps(config, default=str))

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "FewShotMethod":
        """Rebuild the method from a saved :meth:`config_dict` (the checkpoint's ``method_config``).
        Default: the config's fields are the constructor's keywords."""
        return cls(**dict(values))

    # ------------------------------------------------------------------ training mode

    def train(self, mode: bool = True) -> "FewShotMethod":
        # A frozen encoder stays in eval mode: its BatchNorm statistics and dropout must
        # stay as pre-trained (and match the cached features) while the method trains.
        super().train(mode)
        if self.encoder_is_frozen():
            self._modules["encoder"].eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters, plus the buffers that training sets (a submodule lists
        those in its ``learned_buffers`` attribute, e.g. the base-class frame mean)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        for prefix, module in self.named_modules():
            names.update(f"{prefix}.{b}" if prefix else b for b in getattr(module, "learned_buffers", ()))
        return {k: v for k, v in self.state_dict().items() if k in names}
