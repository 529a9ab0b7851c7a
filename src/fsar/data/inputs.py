"""The model-ready form of one episode (built by the data layer or the feature cache)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EpisodeInputs:
    """One M-way K-shot episode, ready for a model.

    support: (n_support, T, C, H, W) normalised frames, or (n_support, T, D) features
        when ``features`` is True.
    support_labels: (n_support,) int64 in 0..way-1.
    query: (n_query, T, C, H, W) or (n_query, T, D).
    query_labels: (n_query,) int64, given in training (and evaluation, for scoring);
        a method must never let it influence its predictions.
    class_names: the way class names; index = episode label.
    features: True when support/query hold cached encoder features, not frames.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    class_names: list[str]
    query_labels: torch.Tensor | None = None
    features: bool = False

    @property
    def way(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> "EpisodeInputs":
        return EpisodeInputs(
            support=self.support.to(device),
            support_labels=self.support_labels.to(device),
            query=self.query.to(device),
            class_names=self.class_names,
            query_labels=None if self.query_labels is None else self.query_labels.to(device),
            features=self.features,
        )
