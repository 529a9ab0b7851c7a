"""Small stand-ins for the engine tests: a tensor episode source and a tiny trainable method.

They exercise the engine's loops without the data layer or a real encoder, so the engine
tests stay fast and test the engine alone.
"""

from __future__ import annotations

import torch
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.engine.distributed import derive_seed
from fsar.methods.base import FewShotMethod, MethodOutput


class TensorEpisodes:
    """Episodes of random features around fixed per-class centres (``(n, T, D)``, features=True).

    Deterministic from ``(seed, index)``; ``train`` adds feature noise (a stand-in for augmentation).
    Records every episode it serves in ``served``.
    """

    def __init__(self, class_names, *, way=3, shot=1, queries=2, seed=0, dim=6, frames=4, centre_seed=123):
        self.class_names = list(class_names)
        self.way, self.shot, self.queries, self.seed = way, shot, queries, seed
        self.frames, self.dim = frames, dim
        g = torch.Generator().manual_seed(centre_seed)
        self.centres = {c: torch.randn(frames, dim, generator=g) for c in self.class_names}
        self.served: list[tuple[int, bool, tuple[str, ...]]] = []

    def sample(self, index: int, *, train: bool) -> EpisodeInputs:
        g = torch.Generator().manual_seed(derive_seed(self.seed, index))
        order = torch.randperm(len(self.class_names), generator=g)[: self.way].tolist()
        names = [self.class_names[i] for i in order]
        noise = 1.0 if train else 0.8

        def clips(k):
            return torch.stack(
                [self.centres[n] + noise * torch.randn(self.frames, self.dim, generator=g) for n in names for _ in range(k)]
            )

        support, query = clips(self.shot), clips(self.queries)
        self.served.append((index, train, tuple(names)))
        return EpisodeInputs(
            support=support,
            support_labels=torch.arange(self.way).repeat_interleave(self.shot),
            query=query,
            query_labels=torch.arange(self.way).repeat_interleave(self.queries),
            class_names=names,
            features=True,
        )


class TinyMethod(FewShotMethod):
    """Linear projection + dropout + prototype cosine matching; a frozen "encoder" for realism."""

    name = "tiny"

    def __init__(self, dim=6, backbone="tiny-backbone", dropout=0.2):
        super().__init__()
        self.backbone_name = backbone
        self.encoder = nn.Linear(dim, dim)
        self.encoder.requires_grad_(False)
        self.project = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        support = self.dropout(self.project(inputs.support)).mean(dim=1)
        query = self.dropout(self.project(inputs.query)).mean(dim=1)
        prototypes = torch.stack([support[inputs.support_labels == c].mean(0) for c in range(inputs.way)])
        logits = self.scale * nn.functional.cosine_similarity(query[:, None], prototypes[None], dim=-1)
        log_probs = logits.log_softmax(dim=-1)
        loss = None
        if self.training and inputs.query_labels is not None:
            loss = nn.functional.nll_loss(log_probs, inputs.query_labels)
        return MethodOutput(log_probs=log_probs, loss=loss)
