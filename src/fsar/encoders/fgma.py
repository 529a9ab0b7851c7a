"""FgMA: MA-FSAR's Fine-grained Multimodal Adaptation inside every CLIP ViT block.

Paper: Xing et al., "Multimodal Adaptation of CLIP for Few-Shot Action Recognition" (§3.3, eqs. 4-8);
our spec: ``shared/specs/ma_fsar.md`` §3. Each frozen ViT block l is run as

1. **GTA** (Global Temporal Adaptation, eq. 4): the T class tokens of one clip attend to each other with the
   block's own frozen attention (batch = clips, sequence = T)::

       x_TA = c + Adapter_GTA(MSA_l(LN1_l(c)))            # Adapter_GTA has no internal skip

   With ``gta_adapters_per_layer=2`` an AIM-style input adapter (with skip) sits between LN1 and the
   attention: ``x_TA = c + Adapter_GTA(MSA_l(Adapter_GTA_in(LN1_l(c))))`` (spec §8 reading of the paper's
   parameter count).
2. **Text token** (support branch only, eq. 6): ``FC_text(F_T)``, one Linear 512->768 shared by all layers,
   repeated for the T frames of the clip. It is appended afresh in every layer.
3. **LSTA / LMA** (Local Spatiotemporal / Multimodal Adaptation, eqs. 5, 7): each frame's tokens plus its
   temporal token (query: N+2 tokens) or plus temporal and text token (support: N+3 tokens) go through the
   frozen spatial attention; ``z' = z + Adapter_S(MSA_l(LN1_l(z_cat)))`` where Adapter_S keeps its internal
   skip. LSTA and LMA are the same Adapter_S weights.
4. **Select**: keep the leading N+1 tokens (class + patches).
5. **JA** (Joint Adaptation, eq. 8): ``z = z_sel + MLP_l(LN2_l(z_sel)) + r * Adapter_J(LN2_l(z_sel))``,
   r = 0.5, Adapter_J without skip.

Every frozen piece is the Hugging Face ``CLIPEncoderLayer``'s own module (``layer_norm1``, ``self_attn``,
``layer_norm2``, ``mlp``): no weight is copied, so the adapted encoder stores only the adapters and FC_text.

All adapter up-projections start at zero, so at initialisation every adapter *body* outputs zero. The
network is then still not plain CLIP, because the appended temporal token (a copy of the class token at
init) and the text token take part in the spatial attention. ``mask_appended_tokens=True`` hides them from
the class and patch tokens (they may still attend to everything; their own outputs are dropped by Select),
which makes the adapted encoder exactly plain CLIP at init; it exists for testing that equivalence.

The query branch never receives text: a clip gets a text token only when the caller passes its text
features (the support branch); nothing is stored between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FgMAConfig:
    """Switches of FgMA; the defaults are the full MA-FSAR model.

    Ablations of the paper (Tables 4 and 5):
        +LMA/LSTA only: ``gta=False, ja=False``;  +GTA: ``ja=False``;  +JA: defaults;
        double LSTA (support without text, i.e. AIM-style adaptation without text): ``lma=False``.
    (The "frozen" row is ``finetune="frozen"``, which builds no FgMA at all.)

    Attributes:
        gta: Global Temporal Adaptation; also appends the temporal token x_TA to the spatial attention.
        lsta: Adapter_S on the spatial attention (LSTA for queries, LMA for support; shared weights).
            When False the spatial attention is plain (no adapter) but appended tokens still take part.
        lma: append the FC_text-projected class-text token to support frames (needs text features).
        ja: Joint Adaptation adapter parallel to the MLP.
        gta_adapters_per_layer: 1 (paper's equation) or 2 (extra AIM-style input adapter before the
            temporal attention; matches the paper's parameter table better, spec §8).
        bottleneck_ratio: adapter hidden width / model width (0.25 -> 768 -> 192 -> 768).
        ja_scale: r of eq. 8.
        mask_appended_tokens: hide the temporal and text tokens from the class/patch tokens in the spatial
            attention (test switch: makes FgMA equal to plain CLIP at initialisation).
    """

    gta: bool = True
    lsta: bool = True
    lma: bool = True
    ja: bool = True
    gta_adapters_per_layer: int = 1
    bottleneck_ratio: float = 0.25
    ja_scale: float = 0.5
    mask_appended_tokens: bool = False

    def __post_init__(self) -> None:
        if self.gta_adapters_per_layer not in (1, 2):
            raise ValueError(
                f"FgMAConfig.gta_adapters_per_layer must be 1 or 2, got {self.gta_adapters_per_layer!r}"
            )
        if not 0.0 < self.bottleneck_ratio <= 1.0:
            raise ValueError(f"FgMAConfig.bottleneck_ratio must be in (0, 1], got {self.bottleneck_ratio!r}")
        if not (self.gta or self.lsta or self.lma or self.ja):
            raise ValueError(
                "FgMAConfig: every adaptation (gta, lsta, lma, ja) is off; use finetune='frozen' instead"
            )


class Adapter(nn.Module):
    """Bottleneck adapter (paper Fig. 3a, as in AIM): ``[x +] FC2(GELU(FC1(x)))``.

    FC2 starts at zero (weight and bias) so the body outputs zero at initialisation; ``skip`` adds the
    internal residual ``x +`` (on for Adapter_S and GTA's input adapter, off for Adapter_GTA and Adapter_J).
    """

    def __init__(self, dim: int, *, bottleneck_ratio: float = 0.25, skip: bool) -> None:
        super().__init__()
        hidden = int(dim * bottleneck_ratio)
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self.fc2(self.act(self.fc1(x)))
        return x + body if self.skip else body

    def extra_repr(self) -> str:
        return f"skip={self.skip}"


class FgMA(nn.Module):
    """The trainable part of MA-FSAR's visual encoder: per-layer adapters plus one shared FC_text.

    Parameters are grouped by role (``gta_adapters[l]``, ``lsta_adapters[l]`` ...) rather than by block, so
    a parameter report shows each adaptation's size at a glance. :meth:`block` runs one frozen HF
    ``CLIPEncoderLayer`` with the adaptations around it.
    """

    def __init__(self, *, width: int, text_dim: int, num_layers: int, config: FgMAConfig) -> None:
        super().__init__()
        self.config = config
        self.width = width
        self.num_layers = num_layers

        def adapters(skip: bool) -> nn.ModuleList:
            return nn.ModuleList(
                Adapter(width, bottleneck_ratio=config.bottleneck_ratio, skip=skip) for _ in range(num_layers)
            )

        self.gta_in_adapters = adapters(True) if config.gta and config.gta_adapters_per_layer == 2 else None
        self.gta_adapters = adapters(False) if config.gta else None
        self.lsta_adapters = adapters(True) if config.lsta else None  # Adapter_S, shared by LSTA and LMA
        self.ja_adapters = adapters(False) if config.ja else None
        # FC_text: one Linear for all layers (eq. 6).
        self.fc_text = nn.Linear(text_dim, width) if config.lma else None

    def text_token(self, text_features: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
        """Support clips' text features (B, D_text) -> the LMA token (B*T, 1, D), repeated over frames.

        None when LMA is off or no text is given (the query branch).
        """
        if self.fc_text is None or text_features is None:
            return None
        projected = self.fc_text(text_features)  # (B, D)
        batch = projected.shape[0]
        return projected[:, None, None, :].expand(batch, num_frames, 1, self.width).reshape(
            batch * num_frames, 1, self.width
        )

    def global_temporal(self, index: int, layer: nn.Module, hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
        """GTA (eq. 4) of block ``index``: class tokens of (B*T, N+1, D) -> temporal tokens (B*T, 1, D).

        The block's frozen attention runs with batch = clips and sequence = the T frames.
        """
        frames_total, _, dim = hidden.shape
        # A copy, not a view: LN1 saves its input for backward, and a view would keep all of ``hidden`` alive.
        cls_tokens = hidden[:, 0, :].reshape(frames_total // num_frames, num_frames, dim).clone()  # (B, T, D)
        y = layer.layer_norm1(cls_tokens)
        if self.gta_in_adapters is not None:
            y = self.gta_in_adapters[index](y)
        y, _ = layer.self_attn(hidden_states=y, attention_mask=None)  # attention over T only
        x_ta = cls_tokens + self.gta_adapters[index](y)
        return x_ta.reshape(frames_total, 1, dim)

    def block(
        self,
        index: int,
        layer: nn.Module,
        hidden: torch.Tensor,
        *,
        num_frames: int,
        text_token: torch.Tensor | None,
    ) -> torch.Tensor:
        """One adapted ViT block: ``hidden`` (B*T, N+1, D) -> (B*T, N+1, D).

        ``layer`` is the frozen HF ``CLIPEncoderLayer`` of this depth; ``text_token`` (B*T, 1, D) or None.
        """
        num_kept = hidden.shape[1]  # N + 1
        appended = []
        if self.gta_adapters is not None:
            appended.append(self.global_temporal(index, layer, hidden, num_frames))
        if text_token is not None:
            appended.append(text_token)

        # LN is token-wise, so normalising the concatenation equals concatenating normalised parts.
        tokens = torch.cat([hidden, *appended], dim=1) if appended else hidden  # (B*T, N+1+k, D)
        mask = None
        if appended and self.config.mask_appended_tokens:
            length = tokens.shape[1]
            # Bool mask, True = may attend. Class/patch rows may not see the appended columns.
            mask = torch.ones(length, length, dtype=torch.bool, device=tokens.device)
            mask[:num_kept, num_kept:] = False
            mask = mask[None, None]
        attended, _ = layer.self_attn(hidden_states=layer.layer_norm1(tokens), attention_mask=mask)
        # Select (step 5) before the adapter: Adapter_S, MLP and Adapter_J are token-wise, so dropping the
        # appended tokens' outputs first gives the same result with less work.
        attended = attended[:, :num_kept]
        if self.lsta_adapters is not None:
            attended = self.lsta_adapters[index](attended)  # Adapter_S with internal skip (eqs. 5, 7)
        hidden = hidden + attended

        normed = layer.layer_norm2(hidden)
        out = hidden + layer.mlp(normed)
        if self.ja_adapters is not None:
            out = out + self.config.ja_scale * self.ja_adapters[index](normed)  # JA (eq. 8)
        return out
