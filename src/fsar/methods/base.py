"""What every few-shot method receives and returns.

A method never opens files: the engine hands it an :class:`EpisodeInputs` built by
the data layer (decoded, transformed frames) or by the feature cache (per-frame
features of a frozen encoder).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from fsar.data.inputs import EpisodeInputs

__all__ = ["EpisodeInputs", "FewShotMethod", "MethodOutput"]


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
    ``trainable_state_dict`` is what a checkpoint stores.
    """

    name: str
    encoder: nn.Module
    #: False for the training-free baselines (nothing to train).
    trainable: bool = True

    @abstractmethod
    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        """Score the episode's queries against its support set."""

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}
