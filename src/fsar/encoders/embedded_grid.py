"""``effnet-lite0-grid+minilm``: the embedded pair with a coarse spatial grid of tokens per frame.

fsar's own design (not a paper's). The default pair ``effnet-lite0+minilm`` averages the
EfficientNet-Lite0 map of a frame over all positions, so a clip becomes T vectors that say
*what* is in the frame but hardly *where*: a frozen ImageNet CNN carries little motion, and
after global pooling a trained temporal module has nothing to see moving. This variant keeps
the same frozen map (the 1280-channel head conv after BN and ReLU6) pooled to a ``grid`` x
``grid`` array of cells instead of one vector, so that trainable temporal modules can follow
where things are and how they move; everything else (weights, normalisation, MiniLM text,
frozen BatchNorm) is the default pair's.

Features: ``encode_frames`` returns ``(B, T, grid² · 1280)``, the cells in row-major order
(top-left cell first), each cell's 1280 channels contiguous, so the feature cache stores the
grid once per clip like any (T, D) feature. :func:`grid_tokens` turns them back into
``(B, T, grid², 1280)``; :func:`cell_mean` is the per-frame mean over the cells, the one
vector per frame the training-free core of a method matches on (for a map that divides
evenly into the cells it is exactly the default pair's global average; otherwise
``adaptive_avg_pool2d``'s overlapping cells weight the centre a little more).

What reads the tokens: MA-FSAR's grid temporal module (:mod:`fsar.methods.grid_temporal`), a
small trained temporal convolution over each cell's token sequence whose output is added, through
a zero-initialised projection, to the cell mean -- the CNN analogue of FgMA's temporal
adaptation. Training-free methods (proto, OTAM, Bi-MHM) on this backbone match the flattened
grid as one vector per frame (position-aware cosines).

Cache cost: grid² times the default pair's (9 x 1280 float32 = 45 KB per frame at grid 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsar.encoders import ENCODERS
from fsar.encoders.embedded import EmbeddedEncoder

__all__ = ["GridEmbeddedEncoder", "cell_mean", "grid_tokens"]

#: Channels of one grid cell (EfficientNet-Lite0's head conv).
TOKEN_DIM = 1280


def grid_tokens(features: torch.Tensor, cells: int) -> torch.Tensor:
    """Flattened grid features ``(..., cells · D)`` -> tokens ``(..., cells, D)``."""
    if features.shape[-1] % cells:
        raise ValueError(
            f"grid features of width {features.shape[-1]} do not split into {cells} cells"
        )
    return features.reshape(*features.shape[:-1], cells, features.shape[-1] // cells)


def cell_mean(features: torch.Tensor, cells: int) -> torch.Tensor:
    """Flattened grid features ``(..., cells · D)`` -> the mean over cells ``(..., D)``."""
    return grid_tokens(features, cells).mean(dim=-2)


class GridEmbeddedEncoder(EmbeddedEncoder):
    """EfficientNet-Lite0 map pooled to ``grid`` x ``grid`` cells of 1280-d (flattened) + MiniLM-L6.

    Args:
        grid: cells per side (default 3: 9 tokens per frame); 1 gives the default pair's
            features (one globally pooled vector).
        Other options as :class:`~fsar.encoders.embedded.EmbeddedEncoder`.

    Attributes beyond :class:`~fsar.encoders.base.Encoder`'s: ``grid``, ``grid_cells``
    (= grid²) and ``token_dim`` (1280); ``feature_dim = grid_cells · token_dim``.
    """

    name = "effnet-lite0-grid+minilm"
    token_dim = TOKEN_DIM

    def __init__(self, *, grid: int = 3, **options) -> None:
        if isinstance(grid, bool) or not isinstance(grid, int) or not 1 <= grid <= 8:
            raise ValueError(f"backbone {self.name!r}: grid must be an integer in 1..8, got {grid!r}")
        super().__init__(**options)
        self.grid = grid
        self.grid_cells = grid * grid
        self.feature_dim = self.grid_cells * TOKEN_DIM

    def _pooled(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        fmap = self.visual.extract_features(images)  # (N, 1280, h, w)
        cells = F.adaptive_avg_pool2d(fmap, self.grid)  # (N, 1280, grid, grid)
        return cells.flatten(2).transpose(1, 2).reshape(fmap.shape[0], self.feature_dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}"


@ENCODERS.register("effnet-lite0-grid+minilm")
def build_embedded_grid(*, weights: str | None = None, finetune: str = "frozen", **options) -> GridEmbeddedEncoder:
    """Registry factory for the grid variant of the embedded pair (see :class:`GridEmbeddedEncoder`)."""
    return GridEmbeddedEncoder(weights=weights, finetune=finetune, **options)
