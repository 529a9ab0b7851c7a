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


def write_tiny_dataset(root, *, classes=6, clips=3, frames=4, size=16, seed=0):
    """``root/<class>/<clip>/<n>.png``: per-class colour and motion plus noise (learnable, tiny)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(classes):
        colour = np.array([(37 * c) % 256, (91 * c + 40) % 256, (53 * c + 90) % 256], dtype=np.float64)
        for j in range(clips):
            folder = root / f"class{c:02d}" / f"clip{j}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(frames):
                image = np.zeros((size, size, 3)) + colour * 0.5
                x = (k * (c + 1)) % size
                image[:, x : x + 3] = 255 - colour
                image += rng.normal(0, 20, image.shape)
                Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{k + 1}.png")
    return root


#: A CLIP ViT of a few thousand parameters (random weights): the real architecture, test-sized.
TINY_CLIP = (
    "encoder_options={image_size: 32, patch_size: 16, width: 32, vision_layers: 1, heads: 2, "
    "text_width: 32, text_layers: 1, text_heads: 2, projection_dim: 16, vocab_size: 64}"
)
