"""LGA's Fine-grained Multimodal Fusion: stage-level cross-attention between text and frames.

For stage i of a video the attention query is the stage's frames plus the stage's text
feature, ``Q_i = t_i + f_{S_i}`` (t_i broadcast over the n_i frames); keys and values are
*all* stage frames of the video in time order, overlaps included,
``K = V = concat_i f_{S_i}``. Each stage thus reads the global temporal context while
keeping its own atomic semantics. One pre-LayerNorm block (our choice, the paper gives
no layer details; it mirrors MA-FSAR's TPCM):

    f~ = R + MHA(LN(Q), LN(KV), LN(KV)),   f~ = f~ + FFN(LN(f~))

with the residual R = Q (``residual="query"``, the default) or R = f_{S_i}
(``residual="visual"``: the text then only steers where each stage attends). The
prototype of a video is the concatenation of its fused stages, kept here in the packed
(B, L, n_max, D) form with a validity mask so the matcher still knows the stages.

Query videos have no label: they go through the same module with ``stage_text=None``
(Q_i = f_{S_i}), i.e. shared-weight self-attention over their stages.

:class:`ResidualStageFusion` (fsar's own, not the paper's; LGA's ``start="training-free"``, the
default on encoders without a shared space) runs the fusion at a small width on the raw
features and adds it back through a zero-initialised up-projection,
``f~ = f + Up(StageFusion(Down f, Down_text t))`` on the valid slots, so the untrained fusion is
the identity and LGA's V-V branch starts as AB-MHM on the raw stage packs.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualStageFusion", "StageFusion", "concat_stages"]


class StageFusion(nn.Module):
    """Multi-head cross-attention at the level of atomic action stages (LGA).

    ``forward(stage_features (B, L, n, D), stage_valid (B, L, n) bool,
    stage_text (B, L, D) | None) -> fused (B, L, n, D)``; padded slots come out as zeros
    and are never attended to (key padding mask).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        ffn_mult: int = 4,
        dropout: float = 0.1,
        residual: str = "query",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion dim {dim} is not divisible by heads={heads}")
        if residual not in ("query", "visual"):
            raise ValueError(f"residual must be 'query' or 'visual', got {residual!r}")
        self.residual = residual
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        stage_features: torch.Tensor,
        stage_valid: torch.Tensor,
        stage_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, num_stages, n_max, dim = stage_features.shape
        if stage_valid.shape != (batch, num_stages, n_max):
            raise ValueError(
                f"stage_valid {tuple(stage_valid.shape)} does not match stage_features "
                f"{tuple(stage_features.shape)}"
            )
        if not stage_valid.any(dim=(1, 2)).all():
            raise ValueError("every video needs at least one valid stage frame")
        context = stage_features.reshape(batch, num_stages * n_max, dim)  # K = V
        if stage_text is None:
            query = context
        else:
            if stage_text.shape != (batch, num_stages, dim):
                raise ValueError(
                    f"stage_text {tuple(stage_text.shape)} must be (B, L, D) = "
                    f"{(batch, num_stages, dim)}"
                )
            query = (stage_features + stage_text[:, :, None, :]).reshape(batch, num_stages * n_max, dim)
        padding = ~stage_valid.reshape(batch, num_stages * n_max)
        context_normed = self.norm_context(context)
        attended, _ = self.attention(
            self.norm_query(query),
            context_normed,
            context_normed,
            key_padding_mask=padding,
            need_weights=False,
        )
        fused = (query if self.residual == "query" else context) + attended
        # The feed-forward block works row by row: it runs on the valid slots only (the padded
        # ones, up to half of them, come out as zeros either way).
        valid = ~padding
        rows = fused[valid]  # (n_valid, D)
        out = fused.new_zeros(fused.shape)
        out[valid] = rows + self.ffn(self.norm_ffn(rows))
        return out.reshape(batch, num_stages, n_max, dim)


class ResidualStageFusion(nn.Module):
    """``f~ = f + Up(fusion(Down f, Down_text t))`` with Up zero-initialised: the identity at the start.

    ``fusion`` is a :class:`StageFusion` of width ``inner``; ``forward`` takes stage packs of width
    ``dim`` (B, L, n, dim), their validity mask, and the stage texts (B, L, text_dim) of the
    support clips (raw text-encoder features) or None (queries). Padded slots stay zero (the
    up-projection's bias would otherwise fill them once trained). Gradients reach Up at once;
    the rest of the branch receives them once Up has moved from zero.
    """

    def __init__(self, fusion: StageFusion, *, dim: int, inner: int, text_dim: int) -> None:
        super().__init__()
        if inner < 1:
            raise ValueError(f"ResidualStageFusion: inner width must be positive, got {inner}")
        self.fusion = fusion
        self.down = nn.Linear(dim, inner)
        self.text_down = nn.Linear(text_dim, inner)
        self.up = nn.Linear(inner, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(
        self,
        stage_features: torch.Tensor,
        stage_valid: torch.Tensor,
        stage_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inner_text = None if stage_text is None else self.text_down(stage_text.to(self.text_down.weight.dtype))
        inner = self.fusion(self.down(stage_features), stage_valid, inner_text)
        return stage_features + self.up(inner) * stage_valid[..., None].to(stage_features.dtype)


def concat_stages(
    stage_features: torch.Tensor, stage_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prototype f~ = concat_i f~_{S_i} in a fixed-length form the matcher accepts.

    (B, L, n_max, D) + (B, L, n_max) -> sequence (B, L * n_max, D) and a stage membership
    mask (B, L, L * n_max): stage i owns the slots [i * n_max, (i + 1) * n_max) that are
    valid; padded slots belong to no stage (they are zeros and must be ignored).
    """
    batch, num_stages, n_max, dim = stage_features.shape
    sequence = stage_features.reshape(batch, num_stages * n_max, dim)
    block = torch.eye(num_stages, dtype=torch.bool, device=stage_valid.device)  # (L, L)
    membership = block[None, :, :, None] & stage_valid[:, None, :, :]  # (B, L, L, n_max)
    return sequence, membership.reshape(batch, num_stages, num_stages * n_max)
