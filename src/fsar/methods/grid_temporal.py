"""Trained temporal modules that start as the identity: how fsar's methods on the embedded
pairs begin from their training-free core.

Both are fsar's own design (not a paper's), in the spirit of FgMA's zero-initialised
up-projections inside CLIP: each adds a learned residual through a projection whose weights
start at zero, so an untrained method computes exactly its training-free metric on the raw
features, and validation decides how far training moves away from it.

* :class:`GridTemporalModule` -- for ``effnet-lite0-grid+minilm``, the CNN analogue of FgMA's
  temporal adaptation (LMA). Per frame, the grid tokens ``(n, T, G, D)`` are normalised,
  projected down to ``width`` (shared over cells) and given a learned cell embedding; a
  temporal convolution over each cell's sequence (kernel ``kernel``, zero-padded in time) mixes
  neighbouring frames, so a token can tell that something arrived in or left its cell; a
  Linear over the G cells of a frame mixes them (so a cell knows where the motion came from
  and went), and a **zero-initialised** Linear per cell projects back up to D and is added to
  the cell's token::

      z   = GELU(Conv_t(Down(LN(tokens)) + cell_g))            (n, T, G, width)
      z   = GELU(Mix(flatten_g z))                              (n, T, G · width)
      out = flatten_g(tokens - s ⊙ mean_t(tokens) + Up(z_g))    (n, T, G · D)

  ``s`` is a **static-suppression gate**, zero at the start: with it training can learn to
  remove from every cell what does not move over the clip (its temporal mean: background, the
  object's look), which on motion classes is nuisance, and keep what changes. Only the clip's
  own frames enter its mean (no other clip, no label). ``gate="shared"`` (default) makes ``s``
  one number for every cell and channel, so all of a step's gradient agrees on it and it opens
  (or stays shut) within tens of steps; ``gate="per-channel"`` gives each of the D channels its
  own ``s`` (the first design: on the demo's set its mean reached only ~0.3 in 60 steps, see
  benchmarks/README.md). ``s`` is ``static_rate x`` its stored parameter, since Adam moves a
  parameter by about lr per step. At initialisation ``out`` is the flattened grid exactly, i.e.
  the features training-free metrics see on this backbone.
* :class:`ResidualBottleneck` -- wraps a width-``inner`` module (MA-FSAR's TPCM) for features
  of width D: ``x + Up(module(Down x, Down_text text))`` with Up zero-initialised, so the
  module can run at a small width on 1280-d CNN features and starts as the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "GATES", "GridTemporalModule", "GridTemporalOptions", "ResidualBottleneck", "STATIC_GATE_RATE", "check_grid_options",
    "grid_temporal_for",
]

#: The static-suppression gate is ``static_rate x`` its parameter (default this), so that at lr
#: 1e-3 it can open by ~0.05 a step, i.e. fully within ~20 optimiser steps (on the demo's set the
#: shared gate reached ~0.8 by step 25-30, where validation peaked; see benchmarks/README.md).
STATIC_GATE_RATE = 50.0
#: How many static-suppression gates: one shared by every cell and channel, or one per channel.
GATES = ("shared", "per-channel")


def check_grid_options(method: str, *, gate: str, static_rate: float) -> None:
    """The grid module's options as a method config holds them (``grid_gate``,
    ``grid_static_rate``); errors name the method and the option."""
    if gate not in GATES:
        raise ValueError(f"{method}: grid_gate must be one of {GATES}, got {gate!r}")
    if not float(static_rate) > 0:
        raise ValueError(f"{method}: grid_static_rate must be positive, got {static_rate}")


@dataclass(kw_only=True)
class GridTemporalOptions:
    """The grid temporal module's options, as every method config that can hold one has them (a
    base of the config dataclasses; keyword-only, so a config's own required fields may come first)."""

    #: grid backbones: the temporal module over the grid tokens (zero-initialised, so the identity
    #: at the start): its width, temporal kernel and dropout.
    grid_width: int = 64
    grid_kernel: int = 3
    grid_dropout: float = 0.1
    #: its static-suppression gate: "shared" (one for all cells and channels) or "per-channel".
    grid_gate: str = "shared"
    #: the gate is this x its stored parameter (how fast Adam can open it).
    grid_static_rate: float = STATIC_GATE_RATE


def grid_temporal_for(config: GridTemporalOptions, encoder) -> GridTemporalModule | None:
    """The temporal module over ``encoder``'s grid tokens as ``config`` sets it up; None for an
    encoder without a grid (one pooled vector per frame)."""
    cells = int(getattr(encoder, "grid_cells", 1) or 1)
    if cells <= 1:
        return None
    return GridTemporalModule(
        cells=cells, dim=encoder.feature_dim // cells, width=config.grid_width, kernel=config.grid_kernel,
        dropout=config.grid_dropout, gate=config.grid_gate, static_rate=config.grid_static_rate,
    )


class GridTemporalModule(nn.Module):
    """Grid tokens ``(n, T, cells, dim)`` -> flattened features ``(n, T, cells · dim)``; identity at init.

    Args:
        cells: grid cells per frame (G).
        dim: channels per cell (D).
        width: inner width of the temporal convolution (per cell).
        kernel: temporal kernel size (odd).
        dropout: dropout before the up-projection.
        gate: ``"shared"`` (one static-suppression gate) or ``"per-channel"`` (D of them).
        static_rate: the gate is ``static_rate x`` its stored parameter.
    """

    def __init__(self, *, cells: int, dim: int, width: int = 64, kernel: int = 3, dropout: float = 0.1,
                 gate: str = "shared", static_rate: float = STATIC_GATE_RATE) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"GridTemporalModule: gate must be one of {GATES}, got {gate!r}")
        if not static_rate > 0:
            raise ValueError(f"GridTemporalModule: static_rate must be positive, got {static_rate}")
        if cells < 1 or dim < 1 or width < 1:
            raise ValueError(f"GridTemporalModule: cells, dim and width must be positive, got {cells}, {dim}, {width}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"GridTemporalModule: kernel must be a positive odd number, got {kernel}")
        self.cells, self.dim, self.width = cells, dim, width
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, width)
        self.cell_embedding = nn.Parameter(torch.zeros(cells, width))
        nn.init.normal_(self.cell_embedding, std=0.02)
        self.temporal = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.mix = nn.Linear(cells * width, cells * width)
        self.activation = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        # Stored divided by static_rate: Adam moves a parameter by about lr per step, so at lr 1e-3
        # the gate itself could open by only ~0.1 in 100 steps.
        self.static_rate = float(static_rate)
        self.static_gate = nn.Parameter(torch.zeros(dim if gate == "per-channel" else ()))

    def static_suppression(self) -> torch.Tensor:
        """The gate ``s`` as applied: a scalar (shared) or ``(D,)`` (per-channel); 0 = off, 1 = the
        clip's temporal mean removed entirely."""
        return self.static_rate * self.static_gate

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 4 or tokens.shape[2:] != (self.cells, self.dim):
            raise ValueError(
                f"GridTemporalModule: tokens must be (n, T, {self.cells}, {self.dim}), got {tuple(tokens.shape)}"
            )
        n, frames, cells, _ = tokens.shape
        z = self.down(self.norm(tokens)) + self.cell_embedding  # (n, T, G, w)
        z = z.permute(0, 2, 3, 1).reshape(n * cells, self.width, frames)  # one sequence per cell
        z = self.activation(self.temporal(z))
        z = z.reshape(n, cells, self.width, frames).permute(0, 3, 1, 2).reshape(n, frames, cells * self.width)
        z = self.activation(self.mix(z)).reshape(n, frames, cells, self.width)
        static = self.static_suppression() * tokens.mean(dim=1, keepdim=True)  # (n, 1, G, D)
        return (tokens - static + self.up(self.drop(z))).flatten(2)


class ResidualBottleneck(nn.Module):
    """``x + Up(module(Down x, Down_text text))``, Up zero-initialised: starts as the identity.

    ``module`` is called as ``module(features (n, T, inner), text (n, inner) | None)`` (TPCM's
    signature); ``text_dim`` is the width of the text given to :meth:`forward` (None: no text).
    """

    def __init__(self, module: nn.Module, *, dim: int, inner: int, text_dim: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.down = nn.Linear(dim, inner)
        self.text_down: nn.Module | None = nn.Linear(text_dim, inner) if text_dim else None
        self.up = nn.Linear(inner, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, features: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        inner_text = None
        if text is not None:
            if self.text_down is None:
                raise ValueError("ResidualBottleneck: built without text_dim, so it takes no text")
            inner_text = self.text_down(text)
        return features + self.up(self.module(self.down(features), inner_text))
