"""Prototype construction modules: MA-FSAR's TPCM and its Table 6 alternatives, and
CLIP-FSAR's prototype modulation. All are one attention layer plus one FFN.

TPCM (MA-FSAR eqs. 9-12), support clip with features F_S (T, D) and class text F_T (D):

    q = F_S + repeat_T(F_T)              (T, D)      eq. 9
    k = v = concat_time(F_S, F_T)        (T+1, D)    eq. 10
    F~ = q + MHA(q, k, v)                            eq. 11
    F~ = F~ + FFN(F~)                                eq. 12

Query clip: q = k = v = F_Q (plain temporal self-attention) with the *same* weights, and
no text anywhere on that path.

Sizes (spec §4, derived from the paper's parameter count): MHA at width D with in/out
projections and biases (1,050,624 params at D = 512), FFN D -> 4D -> D (2,099,712).
[proposed, configurable] 8 heads, GELU, dropout 0.1, and an optional pre-LayerNorm
before the MHA and before the FFN (``pre_ln``; the paper's equations show none, the two
norms add 2·2·D params). With pre-LN the query/key/value are normalised copies but the
residual still carries the un-normalised q (which for the support already holds the text).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AttentionFFNBlock", "PROTOTYPE_MODULES", "PrototypeModulation", "TPCM", "build_prototype_module"]


class AttentionFFNBlock(nn.Module):
    """``x = q + MHA(q, kv, kv)``; ``x = x + FFN(x)`` with an optional pre-LayerNorm.

    q (n, Tq, D), kv (n, Tk, D) -> (n, Tq, D).
    """

    def __init__(
        self, *, dim: int, heads: int = 8, ffn_dim: int | None = None, dropout: float = 0.1, pre_ln: bool = True
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"AttentionFFNBlock: width {dim} is not divisible by heads={heads}")
        ffn_dim = 4 * dim if ffn_dim is None else ffn_dim
        self.dim, self.heads, self.pre_ln = dim, heads, pre_ln
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, bias=True, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop = nn.Dropout(dropout)
        self.norm_attn: nn.Module = nn.LayerNorm(dim) if pre_ln else nn.Identity()
        self.norm_ffn: nn.Module = nn.LayerNorm(dim) if pre_ln else nn.Identity()

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        q_in, kv_in = self.norm_attn(q), self.norm_attn(kv)
        attended, _ = self.attn(q_in, kv_in, kv_in, need_weights=False)
        x = q + self.drop(attended)
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class TPCM(nn.Module):
    """Text-guided Prototype Construction Module (one module for support and query).

    ``forward(features (n, T, D), text (n, D) | None) -> (n, T, D)``. With ``text`` the
    support form (eqs. 9-12); with ``None`` the query form (self-attention). ``mode``
    selects the paper's Table 6 alternatives with the same block:

    * ``"tpcm"``: the paper's module (above).
    * ``"unimodal"``: temporal self-attention for support and query; text ignored.
    * ``"multimodal"``: CLIP-FSAR style, the text is stacked as an extra time step, full
      self-attention over T+1 steps, output sliced back to the T frame steps.
    """

    MODES = ("tpcm", "unimodal", "multimodal")

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 8,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        pre_ln: bool = True,
        mode: str = "tpcm",
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"TPCM: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.block = AttentionFFNBlock(dim=dim, heads=heads, ffn_dim=ffn_dim, dropout=dropout, pre_ln=pre_ln)

    def forward(self, features: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"TPCM: features must be (n, T, D), got {tuple(features.shape)}")
        if text is None or self.mode == "unimodal":
            return self.block(features, features)
        if text.shape != (features.shape[0], features.shape[2]):
            raise ValueError(
                f"TPCM: text must be (n, D) = {(features.shape[0], features.shape[2])}, got {tuple(text.shape)}"
            )
        text_step = text.unsqueeze(1)  # (n, 1, D)
        if self.mode == "multimodal":
            steps = torch.cat([features, text_step], dim=1)  # (n, T+1, D)
            return self.block(steps, steps)[:, : features.shape[1]]
        q = features + text_step  # eq. 9: repeat over T by broadcasting
        kv = torch.cat([features, text_step], dim=1)  # eq. 10
        return self.block(q, kv)  # eqs. 11-12


class PrototypeModulation(TPCM):
    """CLIP-FSAR's prototype modulation: the support's class text appended as one extra
    temporal token, a 1-layer transformer over the T+1 steps, output sliced back to T;
    queries go through the same layer without text. (= :class:`TPCM` in ``multimodal`` mode.)
    """

    def __init__(self, *, dim: int, heads: int = 8, ffn_dim: int | None = None, dropout: float = 0.1,
                 pre_ln: bool = True) -> None:
        super().__init__(dim=dim, heads=heads, ffn_dim=ffn_dim, dropout=dropout, pre_ln=pre_ln, mode="multimodal")


#: ``prototype_module`` option values of MA-FSAR: TPCM modes plus ``"none"`` (identity).
PROTOTYPE_MODULES = (*TPCM.MODES, "none")


def build_prototype_module(kind: str, **options) -> TPCM | None:
    """TPCM in mode ``kind``, or None for ``"none"`` (features go to the metric unchanged)."""
    if kind not in PROTOTYPE_MODULES:
        raise ValueError(f"prototype_module must be one of {PROTOTYPE_MODULES}, got {kind!r}")
    return None if kind == "none" else TPCM(mode=kind, **options)
