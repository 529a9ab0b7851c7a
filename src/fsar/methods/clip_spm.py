"""CLIP-SPM (Li et al., arXiv 2512.19036): Hierarchical Synergistic Motion Refinement (HSMR),
Semantic Prototype Modulation (SPM) and Prototype-Anchor Dual Modulation (PADM) on CLIP frame
features, equal to the released code (hnlxy/CLIP-SPM @ 63f4361) where the options say so.

One episode (C-way K-shot, Nq queries, width D; spec ``clip_spm.md`` §2-6)::

    X_s, X_q = encoder(frames)                                   (Ns, T, D), (Nq, T, D)
    HSMR (training only, auxiliary loss):
        m = MFE(X);  (X_m, m') = SF(X, m);  L_hsmr += mean_b ||MFE(X_m) - m'_b||²   for X_s and X_q
    SPM:
        P_s = E[support labels]                                  class texts (16-template means)
        g   = mean(P_s)                                          episode token (support texts only)
        Ĝ_b = PromptGenerator(g · mean(X_b))                     "query-relevant" prompt, every clip
        X_s^r = SF(X_s, P_s)   (pass a)    X_q^g = SF(X_q, Ĝ_q)   (pass b)
        (passes c = SF(X_s, Ĝ_s) and d = SF(X_q, P_q) feed the auxiliary terms, training only)
        d_spm = OTAM(X_q^g, mean_K X_s^r)                         (Nq, C)
    PADM (on X_s^r and X_q^g):
        A_c = mean(X_s^r of class c ∪ all X_q^g)   G = mean_c A_c          (transductive, release)
        [Â; X̂_s] = ctx_padm([A; X_s^r]),  [Ĝ; X̂_q] = ctx_padm([G; X_q^g])  attention across clips per frame
        d_padm = OTAM(X̂_q, mean_K X̂_s) + OTAM(Ĝ, Â)
    logits = -(0.5 · d_spm + d_padm)
    loss   = Σ_queries CE(logits, y) + 16 · 0.001 · w_mo · L_hsmr   (see :data:`RELEASE_AUX_WEIGHT`)

SF (Semantic Fusion, one instance shared by HSMR and all SPM passes): ``Y = α·(p ⊙ g_t(p)) +
X ⊙ g_v(X)`` with sigmoid gates, then a one-layer pre-LN transformer over ``[p; Y]``. MFE
(Motion Feature Extraction): two stacked temporal convolutions Φ and the mean of the forward
and backward differences ``Φ(X)[t+1] - X[t]`` and ``Φ(X)[t] - X[t+1]``.

Where this module departs from the release by default (spec §8; each is an option, and
:func:`clip_spm_from_reference` builds the release's configuration):

* the episode token g averages the **support** texts only. The release averages the query
  texts too (looked up by the query labels): identical whenever every class has the same
  number of shots and queries (:func:`release_episode_token`, tested on the reference files),
  but the release needs the labels to run. Query labels never enter an evaluation forward
  pass here; SF passes c/d and every auxiliary term run only in training.
* ``padm="transductive"`` (default, the release and the reference files) or ``"inductive"``
  (anchors from the supports only, each query alone with the global anchor, so a query's
  logits do not depend on the other queries of the episode).
* ``hsmr_weight="fixed"`` (default: w_mo = ``hsmr_weight_init``, a constant), ``"learnable"``
  (the release: a free parameter, which only ever receives the gradient 0.001·L_hsmr > 0 and
  so drifts down and eventually negative), ``"clamped"`` (a parameter used as ``max(w, 0)``).
* ``pixel_normalisation="clip"`` (default) or ``"none"``: the release feeds CLIP pixels in
  [0, 1] without CLIP's mean/std (``IMG_NORM=false``).
* ``spm_aux_losses=False`` (the release computes the prompt-regression and consistency terms
  but hard-sets them to 0); ``True`` adds ``16 · 0.001 · (text + consistency)`` with
  text = w·(query terms) + (0.5 - w)·(support terms), w = ``text_dis``, and consistency =
  u·c_q + (1 - u)·c_s, u = ``consist_1``, the weighting of the release's commented-out lines.

Start from the training-free core (fsar's own, not the paper's or the release's): ``start``
(default ``"auto"``) is ``"standard"`` on CLIP, exactly the release's head as above (the
reference-file tests), and ``"training-free"`` on encoders without a shared space (the embedded
pairs ``effnet-lite0+minilm`` and ``effnet-lite0-grid+minilm``), where the release's head on
random projections would start worse than the metric on the raw features. There
(:class:`ResidualCLIPSPMHead`) the frame map is the identity (minus the base-class frame mean,
``base_centring``, on by default: estimated from training clips before step 1, zero until then,
so the metric is then the release's OTAM on the centred features) and the text map starts with zero
weights and a constant bias (:class:`~fsar.methods.text_side.TextSpace` with
``start="training-free"``); the release's modules (SF, the prompt generator, PADM's
transformer, HSMR) run at width ``bottleneck`` on down-projected frames and texts, and return to
the features only through zero-initialised up-projections; the PADM anchor term OTAM(G, A_c), a
class-dependent constant per episode, is weighted by a learned scalar that starts at zero; on
grid backbones the grid tokens first pass MA-FSAR's zero-initialised
:class:`~fsar.methods.grid_temporal.GridTemporalModule`. The untrained method's logits are then
``-1.5 · OTAM(X_q, mean_K X_s)`` with the release's OTAM preset below on the raw features, i.e.
its predictions are that training-free metric's, and validation decides how far training moves
away from it. A config saved before ``start`` existed loads as ``"standard"``. Evaluated from the
feature cache, everything that depends on one clip (its frames through the grid module, the
residual head's ``Down`` and a support's SPM pass a) or one class (its text) is computed once per
evaluation (:class:`~fsar.methods.memo.ClipMemo`); per episode remain the prompt (it reads every
support text), pass b, PADM and the OTAM distances.

The OTAM distance is fsar's ``otam_clipfsar`` head (:mod:`fsar.metrics.otam`): the release's
``otam_distance`` is CLIP-FSAR's ``OTAM_cum_dist_v2`` with λ 0.5, the ``cos_sim`` with +0.01 on
the norm product, both directions summed, which is exactly that preset (computed with a stable
soft-min; the release's naive one agrees in float64 at these magnitudes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar.data.inputs import EpisodeInputs
from fsar.methods import METHODS
from fsar.methods.base import MethodOutput
from fsar.methods.base import MethodOption
from fsar.encoders.embedded_grid import grid_tokens
from fsar.methods.common import check_episode, class_means
from fsar.methods.grid_temporal import GridTemporalOptions, check_grid_options, grid_temporal_for
from fsar.methods.memo import ClipMemo
from fsar.methods.text_aware import STARTS, CentringOptions, TextAwareMethod, resolve_start
from fsar.methods.text_side import TextSpace
from fsar.metrics._common import PEER_COSINE_EPS
from fsar.metrics.otam import OTAM

__all__ = [
    "CLIPSPM",
    "CLIPSPMConfig",
    "CLIPSPMHead",
    "OPTIMIZER_PRESETS",
    "PRESETS",
    "HSMR_WEIGHT_MODES",
    "MotionFeatureExtraction",
    "PADM",
    "PADM_MODES",
    "PromptGenerator",
    "RELEASE_STATE_DICT_NAMES",
    "ResidualCLIPSPMHead",
    "SemanticFusion",
    "TransformerV1",
    "clip_spm_from_reference",
    "release_episode_token",
    "release_state_dict_to_fsar",
]

PADM_MODES = ("transductive", "inductive")
HSMR_WEIGHT_MODES = ("fixed", "learnable", "clamped")

#: The release's weight of every auxiliary term per task (``0.001 * dists``), next to a
#: classification term that is the CE summed over the queries and divided by the 16 tasks of a
#: step. fsar's engine divides the *whole* task loss by the tasks of a step, so the method adds
#: ``RELEASE_TASKS_PER_BATCH * RELEASE_AUX_WEIGHT`` times the auxiliary terms to the CE sum:
#: the same ratio of the two terms, whatever ``--tasks-per-step`` is.
RELEASE_AUX_WEIGHT = 0.001
RELEASE_TASKS_PER_BATCH = 16

#: Weights of the two distances in the logits ``-(0.5 d_spm + d_padm)``.
SPM_LOGIT_WEIGHT = 0.5
PADM_LOGIT_WEIGHT = 1.0


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------


class TransformerV1(nn.Module):
    """One pre-LayerNorm transformer layer of the release (``Transformer_v1``, depth 1).

    ``x (B, S, D)``, attention along S: ``h = LN(x)`` (one LayerNorm for q, k and v), q/k/v
    projections without bias into ``heads * dim_head`` (head index major), scale
    ``dim_head ** -0.5``, output projection with bias and dropout, residual onto the
    *un-normalised* x; then ``FFN(x1) + x1`` with FFN = Linear, GELU (erf), Dropout, Linear,
    Dropout. No final LayerNorm.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        attention_dropout: float = 0.2,
        ffn_dropout: float = 0.05,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.out_dropout = nn.Dropout(attention_dropout)
        self.ffn_in = nn.Linear(dim, mlp_dim)
        self.ffn_out = nn.Linear(mlp_dim, dim)
        self.ffn_dropout_hidden = nn.Dropout(ffn_dropout)
        self.ffn_dropout_out = nn.Dropout(ffn_dropout)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.dim_head).transpose(1, 2)  # (B, H, S, d_h)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = self._split(self.to_q(h)), self._split(self.to_k(h)), self._split(self.to_v(h))
        attended = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, S, d_h)
        merged = attended.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        x1 = self.out_dropout(self.to_out(merged)) + x
        hidden = self.ffn_dropout_hidden(F.gelu(self.ffn_in(x1)))
        return self.ffn_dropout_out(self.ffn_out(hidden)) + x1


class Gate(nn.Module):
    """``sigmoid(Linear(LeakyReLU_ν(Linear(x))))``: SF's text gate g_t and vision gate g_v."""

    def __init__(self, dim: int, hidden: int, negative_slope: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.out(F.leaky_relu(self.hidden(x), self.negative_slope)))


class SemanticFusion(nn.Module):
    """SF(X, p): gated fusion of a prompt token into frames, then one transformer layer.

    ``X (B, T, D)``, ``p (B, 1, D)`` -> ``(X' (B, T, D), p' (B, 1, D))``:
    ``Y = α·(p ⊙ g_t(p)) + X ⊙ g_v(X)``, ``Z = context([p; Y])`` with the un-gated p as
    token 0; ``X' = Z[:, 1:]``, ``p' = Z[:, :1]``.
    """

    def __init__(
        self, dim: int, *, gate_text_hidden: int, gate_vision_hidden: int, negative_slope: float, alpha: float,
        context: TransformerV1,
    ) -> None:
        super().__init__()
        self.gate_text = Gate(dim, gate_text_hidden, negative_slope)
        self.gate_vision = Gate(dim, gate_vision_hidden, negative_slope)
        self.context = context
        self.alpha = float(alpha)

    def forward(self, frames: Tensor, prompt: Tensor) -> tuple[Tensor, Tensor]:
        fused = self.alpha * (prompt * self.gate_text(prompt)) + frames * self.gate_vision(frames)
        z = self.context(torch.cat([prompt, fused], dim=1))
        return z[:, 1:], z[:, :1]


class MotionFeatureExtraction(nn.Module):
    """MFE(X) -> (B, D): Φ = two stacked ``Conv1d(D, D, 3, padding=1)`` over time (no activation
    between them), ``m = mean_t ½((Φ(x)[t+1] - x[t]) + (Φ(x)[t] - x[t+1]))`` over the T-1
    neighbour pairs. Needs T >= 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, padding=1)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.shape[1] < 2:
            raise ValueError(
                f"clip-spm: MFE (HSMR) needs at least 2 frames per clip for its temporal differences, "
                f"got T={frames.shape[1]}"
            )
        x = frames.transpose(1, 2)  # (B, D, T)
        a = self.conv2(self.conv1(x))
        forward_diff = a[..., 1:] - x[..., :-1]
        backward_diff = a[..., :-1] - x[..., 1:]
        return (0.5 * (forward_diff + backward_diff)).mean(-1)


class PromptGenerator(nn.Module):
    """SPM's prompt generator: ``Ĝ_b = FFN(g · μ_b)`` with μ_b the scalar mean of clip b's T·D
    entries; FFN = Linear, GELU, Dropout, Linear, Dropout (no residual). -> (B, 1, D)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)
        self.dropout_hidden = nn.Dropout(dropout)
        self.dropout_out = nn.Dropout(dropout)

    def forward(self, episode_token: Tensor, frames: Tensor) -> Tensor:
        conditioned = episode_token.view(1, 1, -1) * frames.mean(dim=(1, 2)).view(-1, 1, 1)  # (B, 1, D)
        return self.dropout_out(self.out(self.dropout_hidden(F.gelu(self.hidden(conditioned)))))


def _class_sum_and_count(features: Tensor, labels: Tensor, way: int) -> tuple[Tensor, Tensor]:
    if features.shape[0] == way:  # one shot per class: the sums are the clips (see class_means)
        return class_means(features, labels, way), features.new_ones(way)
    one_hot = F.one_hot(labels, way).to(features.dtype)  # (n, way)
    return torch.einsum("nc,n...->c...", one_hot, features), one_hot.sum(0)


class PADM(nn.Module):
    """Prototype-Anchor Dual Modulation on ``X_s^r (Ns, T, D)`` and ``X_q^g (Nq, T, D)``.

    ``mode="transductive"`` (release): class anchors ``A_c = mean(supports of c ∪ all
    queries)``, global anchor ``G = mean_c A_c``, the support side ``[A; X_s]`` and the query
    side ``[G; X_q]`` each go through ``context`` as a sequence *across clips*, separately at
    every frame index, so queries attend to one another. ``"inductive"``: ``A_c`` = mean of
    class c's supports, and each query forms its own two-clip sequence ``[G; x_q]``, so the
    refined global anchor is one per query. Classes may have different numbers of shots (every
    mean runs over the clips present).
    """

    def __init__(self, context: TransformerV1, mode: str = "transductive") -> None:
        super().__init__()
        if mode not in PADM_MODES:
            raise ValueError(f"clip-spm: padm must be one of {PADM_MODES}, got {mode!r}")
        self.context = context
        self.mode = mode

    def _across_clips(self, clips: Tensor) -> Tensor:
        """(N, T, D) -> context over the N clips at each frame index -> (N, T, D)."""
        return self.context(clips.transpose(0, 1)).transpose(0, 1)

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> dict[str, Tensor]:
        anchors, global_anchor = padm_anchors(support, support_labels, query, way, self.mode)
        support_side = self._across_clips(torch.cat([anchors, support]))
        anchors_out, support_out = support_side[:way], support_side[way:]
        if self.mode == "transductive":
            query_side = self._across_clips(torch.cat([global_anchor, query]))
            global_out, query_out = query_side[:1], query_side[1:]
        else:
            n_query, frames, dim = query.shape
            pairs = torch.stack([global_anchor.expand(n_query, -1, -1), query], dim=2)  # (Nq, T, 2, D)
            refined = self.context(pairs.reshape(n_query * frames, 2, dim)).view(n_query, frames, 2, dim)
            global_out, query_out = refined[:, :, 0], refined[:, :, 1]  # (Nq, T, D) each
        return {
            "padm_anchor_in": anchors,
            "padm_global_in": global_anchor,
            "padm_anchor_out": anchors_out,
            "padm_global_out": global_out,
            "padm_xs": support_out,
            "padm_xq": query_out,
            "padm_proto": class_means(support_out, support_labels, way),
        }


def padm_anchors(support: Tensor, support_labels: Tensor, query: Tensor, way: int, mode: str) -> tuple[Tensor, Tensor]:
    """PADM's class anchors ``A (way, T, D)`` and global anchor ``G = mean_c A_c (1, T, D)``:
    ``A_c`` = mean of class c's supports and (``"transductive"``) every query."""
    summed, counts = _class_sum_and_count(support, support_labels, way)
    if mode == "transductive":
        anchors = (summed + query.sum(0, keepdim=True)) / (counts + query.shape[0]).view(-1, 1, 1)
    else:
        anchors = summed / counts.view(-1, 1, 1)
    return anchors, anchors.mean(0, keepdim=True)


def spm_auxiliary_terms(
    *, prompts_query: Tensor, generated_query: Tensor, prompts_support: Tensor, generated_support: Tensor,
    query_r: Tensor, query_r_token: Tensor, query_g: Tensor, query_g_token: Tensor,
    support_r: Tensor, support_r_token: Tensor, support_g: Tensor, support_g_token: Tensor,
) -> dict[str, Tensor]:
    """The six auxiliary SPM terms of the release (prompt regression, token agreement and
    consistency, each for the queries and the supports) from SF passes a-d."""
    return {
        "spm_aux_prompt_query": squared_distance(prompts_query, generated_query),
        "spm_aux_prompt_support": squared_distance(prompts_support, generated_support),
        "spm_aux_token_query": squared_distance(query_r_token, query_g_token),
        "spm_aux_token_support": squared_distance(support_r_token, support_g_token),
        "spm_aux_consist_query": squared_distance(
            torch.cat([query_r_token, query_r], 1), torch.cat([query_g_token, query_g], 1)),
        "spm_aux_consist_support": squared_distance(
            torch.cat([support_r_token, support_r], 1), torch.cat([support_g_token, support_g], 1)),
    }


def squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """The release's ``_dis``: per batch element the sum of squares of ``a - b`` over every
    other axis, then the mean over the batch."""
    if a.shape != b.shape:
        raise ValueError(f"clip-spm: squared distance of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return (a - b).pow(2).flatten(1).sum(1).mean()


def release_episode_token(text_bank: Tensor, support_labels: Tensor, query_labels: Tensor) -> Tensor:
    """The release's episode token ``mean(concat(E[query labels], E[support labels]))`` (1, D).

    Kept for comparison only (it needs the query labels): with the same number of shots and
    of queries for every class it equals the support-only token this module uses.
    """
    return torch.cat([text_bank[query_labels], text_bank[support_labels]]).mean(0, keepdim=True)


# ---------------------------------------------------------------------------------------------
# the head
# ---------------------------------------------------------------------------------------------


class CLIPSPMHead(nn.Module):
    """Everything of CLIP-SPM after the encoder, at one width ``dim``.

    ``head(support, support_labels, query, way, text_bank) -> logits (n_query, way)``;
    ``text_bank (way, dim)`` holds one text vector per episode class (row j = class j).
    :meth:`forward_details` returns the logits with every intermediate and, given
    ``auxiliary=True``, the auxiliary losses (training).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        dim_head: int = 256,
        mlp_dim: int = 2048,
        prompt_hidden: int = 2048,
        gate_vision_hidden: int | None = None,
        gate_text_hidden: int | None = None,
        gate_vision_ratio: float = 0.5,
        gate_text_ratio: float = 1.5,
        negative_slope: float = 0.0025,
        alpha: float = 0.2,
        attention_dropout: float = 0.2,
        ffn_dropout: float = 0.05,
        prompt_dropout: float = 0.05,
        layernorm_eps: float = 1e-5,
        otam_lambda: float = 0.5,
        padm: str = "transductive",
        hsmr_weight: str = "fixed",
        hsmr_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        if hsmr_weight not in HSMR_WEIGHT_MODES:
            raise ValueError(f"clip-spm: hsmr_weight must be one of {HSMR_WEIGHT_MODES}, got {hsmr_weight!r}")
        self.dim = dim
        transformer = dict(
            heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, attention_dropout=attention_dropout,
            ffn_dropout=ffn_dropout, eps=layernorm_eps,
        )
        self.mfe = MotionFeatureExtraction(dim)
        self.prompt_generator = PromptGenerator(dim, prompt_hidden, prompt_dropout)
        self.padm = PADM(TransformerV1(dim, **transformer), padm)
        self.sf = SemanticFusion(
            dim,
            gate_text_hidden=gate_text_hidden if gate_text_hidden is not None else int(gate_text_ratio * dim),
            gate_vision_hidden=gate_vision_hidden if gate_vision_hidden is not None else int(gate_vision_ratio * dim),
            negative_slope=negative_slope, alpha=alpha, context=TransformerV1(dim, **transformer),
        )
        self.hsmr_weight_mode = hsmr_weight
        weight = torch.tensor(float(hsmr_weight_init))
        if hsmr_weight == "fixed":
            self.register_buffer("hsmr_weight", weight)
        else:
            self.hsmr_weight = nn.Parameter(weight)
        # the release's otam_distance: λ 0.5, +0.01 on the norm product, both directions summed
        self.otam = OTAM(lam=otam_lambda, variant="reference", directions="both", combine="sum",
                         shots="prototype", cosine="peer")

    @property
    def padm_mode(self) -> str:
        return self.padm.mode

    def effective_hsmr_weight(self) -> Tensor:
        """w_mo as it enters the loss (``max(w, 0)`` in ``"clamped"`` mode)."""
        if self.hsmr_weight_mode == "clamped":
            return self.hsmr_weight.clamp(min=0.0)
        return self.hsmr_weight

    def otam_distance(self, targets: Tensor, query: Tensor) -> Tensor:
        """The release's ``otam_distance(S, Q)``: targets (n_t, T, D), query (n_q, T, D) -> (n_q, n_t)."""
        labels = torch.arange(targets.shape[0], device=targets.device)
        return -self.otam(targets, labels, query, targets.shape[0])

    def otam_directions(self, targets: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """(query-to-support, support-to-query) halves of :meth:`otam_distance`."""
        q2s, s2q = self.otam.pair_distances(targets, query)
        return q2s, s2q

    def hsmr_loss(self, support: Tensor, query: Tensor, details: dict[str, Tensor] | None = None) -> Tensor:
        """L_hsmr = L_{X_q} + L_{X_s} (before w_mo and the 0.001); the fused frames are discarded."""
        total = support.new_zeros(())
        for role, frames in (("query", query), ("support", support)):
            shallow = self.mfe(frames)
            fused, token = self.sf(frames, shallow.unsqueeze(1))
            deep = self.mfe(fused)
            loss = squared_distance(deep, token.squeeze(1))
            total = total + loss
            if details is not None:
                details.update({f"mfe_{role}": shallow, f"mfe_deep_{role}": deep, f"hsmr_token_{role}": token,
                                f"hsmr_loss_{role}": loss})
        if details is not None:
            details["hsmr_loss"] = total
        return total

    def forward_details(
        self,
        support: Tensor,
        support_labels: Tensor,
        query: Tensor,
        way: int,
        text_bank: Tensor,
        *,
        query_labels: Tensor | None = None,
        hsmr: bool = False,
        spm_auxiliary: bool = False,
        directions: bool = False,
    ) -> dict[str, Tensor]:
        """Logits and intermediates (keys as in the reference files' README).

        Training-only terms, off by default: ``hsmr`` (the HSMR loss and its MFE vectors) and
        ``spm_auxiliary`` (SF passes c and d and the six auxiliary SPM terms; pass d needs
        ``query_labels``, the only place they are read). ``directions``: the two OTAM halves
        of every distance as well.
        """
        check_head_inputs(support, support_labels, query, way, text_bank, dim=self.dim)
        check_training_terms(query_labels, spm_auxiliary)
        support_labels = support_labels.to(support.device)
        out: dict[str, Tensor] = {}
        if hsmr:
            self.hsmr_loss(support, query, out)

        prompts_support = text_bank[support_labels].unsqueeze(1)  # P_s (Ns, 1, D)
        token = prompts_support.mean(0).view(1, -1)  # g from support texts only (1, D)
        generated_support = self.prompt_generator(token, support)  # Ĝ_s
        generated_query = self.prompt_generator(token, query)  # Ĝ_q
        out.update(spm_g=token, spm_prompt_support=generated_support, spm_prompt_query=generated_query)
        if spm_auxiliary:
            prompts_query = text_bank[query_labels.to(support.device)].unsqueeze(1)  # P_q
            query_r, query_r_token = self.sf(query, prompts_query)  # pass d
            support_g, support_g_token = self.sf(support, generated_support)  # pass c
        query_g, query_g_token = self.sf(query, generated_query)  # pass b: queries
        support_r, support_r_token = self.sf(support, prompts_support)  # pass a: prototypes
        prototypes = class_means(support_r, support_labels, way)
        out.update(spm_xq_g=query_g, spm_xq_g_token=query_g_token, spm_xs_r=support_r,
                   spm_xs_r_token=support_r_token, spm_proto=prototypes)
        out["d_spm"] = self.otam_distance(prototypes, query_g)
        if spm_auxiliary:
            out.update(spm_xq_r_token=query_r_token, spm_xs_g_token=support_g_token)
            out.update(spm_auxiliary_terms(
                prompts_query=prompts_query, generated_query=generated_query, prompts_support=prompts_support,
                generated_support=generated_support, query_r=query_r, query_r_token=query_r_token, query_g=query_g,
                query_g_token=query_g_token, support_r=support_r, support_r_token=support_r_token,
                support_g=support_g, support_g_token=support_g_token,
            ))

        out.update(self.padm(support_r, support_labels, query_g, way))
        out["d_padm_main"] = self.otam_distance(out["padm_proto"], out["padm_xq"])
        # (1, way) in transductive mode, broadcast over the queries; (Nq, way) in inductive mode
        out["d_padm_anchor"] = self.otam_distance(out["padm_anchor_out"], out["padm_global_out"])
        out["d_padm"] = out["d_padm_main"] + out["d_padm_anchor"]
        out["logits"] = -(SPM_LOGIT_WEIGHT * out["d_spm"] + PADM_LOGIT_WEIGHT * out["d_padm"])
        if directions:
            for name, (targets, queries) in {
                "d_spm": (prototypes, query_g),
                "d_padm_main": (out["padm_proto"], out["padm_xq"]),
                "d_padm_anchor": (out["padm_anchor_out"], out["padm_global_out"]),
            }.items():
                out[f"{name}_q2s"], out[f"{name}_s2q"] = self.otam_directions(targets, queries)
        return out

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int, text_bank: Tensor) -> Tensor:
        return self.forward_details(support, support_labels, query, way, text_bank)["logits"]


def check_training_terms(query_labels: Tensor | None, spm_auxiliary: bool) -> None:
    """Query labels go with the auxiliary SPM terms (training) and with nothing else."""
    if query_labels is not None and not spm_auxiliary:
        raise ValueError("clip-spm: query_labels are only read by the auxiliary SPM terms (training)")
    if spm_auxiliary and query_labels is None:
        raise ValueError("clip-spm: the auxiliary SPM terms need the query labels (SF pass d)")


def check_head_inputs(
    support: Tensor, support_labels: Tensor, query: Tensor, way: int, text_bank: Tensor, *, dim: int,
    text_dim: int | None = None,
) -> None:
    """Shapes of one episode for the head (frames of width ``dim``, texts of ``text_dim``, default
    ``dim``); errors name the problem."""
    text_dim = dim if text_dim is None else text_dim
    for name, tensor in (("support", support), ("query", query)):
        if tensor.dim() != 3 or tensor.shape[-1] != dim:
            raise ValueError(f"clip-spm: {name} must be (n, T, {dim}), got {tuple(tensor.shape)}")
    if support.shape[1] != query.shape[1]:
        raise ValueError(f"clip-spm: support and query need the same T, got {support.shape[1]} and {query.shape[1]}")
    if support.shape[1] < 2:
        raise ValueError(
            f"clip-spm: clips need at least 2 frames (MFE's temporal differences), got T={support.shape[1]}"
        )
    if text_bank.dim() != 2 or text_bank.shape != (way, text_dim):
        raise ValueError(
            f"clip-spm: text_bank must hold one ({text_dim},) vector per episode class, i.e. ({way}, {text_dim}), "
            f"got {tuple(text_bank.shape)}"
        )
    if support_labels.dim() != 1 or support_labels.shape[0] != support.shape[0]:
        raise ValueError(f"clip-spm: support_labels must be ({support.shape[0]},), got {tuple(support_labels.shape)}")
    present = set(support_labels.tolist())
    missing = sorted(set(range(way)) - present)
    if missing or any(not 0 <= c < way for c in present):
        raise ValueError(f"clip-spm: support_labels must cover 0..{way - 1} exactly, got {support_labels.tolist()}")


class ResidualCLIPSPMHead(nn.Module):
    """CLIP-SPM started from its training-free core (fsar's own, not the paper's): the release's
    modules run at a small width ``inner`` on down-projected frames and texts, and reach the
    full-width features only through zero-initialised residual up-projections, so the untrained
    head's distances are the release's OTAM (``otam_clipfsar`` preset) on the raw features.

    With ``x = Down X`` (per frame) and ``p = Down_text(text_bank)``::

        (z_s, ·) = SF(x_s, p[labels]),  (z_q, ·) = SF(x_q, PromptGenerator(g, x_q))      SPM, inner width
        X_s^r = X_s + Up_spm(z_s),      X_q^g = X_q + Up_spm(z_q)                        full width
        d_spm = OTAM(X_q^g, mean_K X_s^r)
        PADM(z_s, z_q) at the inner width -> (Â, Ĝ, x̂_s, x̂_q);  A, G = PADM's anchors of X_s^r, X_q^g
        X̂_s = X_s^r + Up_padm(x̂_s), X̂_q = X_q^g + Up_padm(x̂_q), A' = A + Up_padm(Â), G' = G + Up_padm(Ĝ)
        d_padm = OTAM(X̂_q, mean_K X̂_s) + w_anchor · OTAM(G', A')
        logits = -(0.5 · d_spm + d_padm)

    ``Up_spm`` and ``Up_padm`` start at zero (weights and bias) and ``w_anchor`` at zero: the
    anchor term OTAM(G, A_c) would otherwise add a class-dependent constant to every query's
    logits. Untrained, X_s^r = X̂_s = X_s and X_q^g = X̂_q = X_q, so ``logits = -1.5 ·
    OTAM(X_q, mean_K X_s)``: the release's OTAM preset, predictions equal to it. The text
    prompt enters only through the SF passes inside the residual branches, so it adds nothing
    at the start. HSMR (the auxiliary loss) and the auxiliary SPM terms run at the inner width.
    The up-projections and ``w_anchor`` receive gradients from the first backward; the inner
    modules once the up-projections have moved.

    Same call convention as :class:`CLIPSPMHead` (``text_bank (way, text_dim)``); ``head_options``
    are :class:`CLIPSPMHead`'s keywords for the inner head ``core``.
    """

    def __init__(self, dim: int, *, inner: int, text_dim: int, **head_options: Any) -> None:
        super().__init__()
        if inner < 1:
            raise ValueError(f"clip-spm: the residual head's inner width must be >= 1, got {inner}")
        self.dim, self.text_dim = dim, text_dim
        self.core = CLIPSPMHead(inner, **head_options)
        self.down = nn.Linear(dim, inner)
        self.text_down = nn.Linear(text_dim, inner)
        self.up_spm = nn.Linear(inner, dim)
        self.up_padm = nn.Linear(inner, dim)
        for up in (self.up_spm, self.up_padm):
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self.anchor_weight = nn.Parameter(torch.zeros(()))

    @property
    def padm(self) -> PADM:
        return self.core.padm

    @property
    def padm_mode(self) -> str:
        return self.core.padm.mode

    @property
    def hsmr_weight_mode(self) -> str:
        return self.core.hsmr_weight_mode

    def effective_hsmr_weight(self) -> Tensor:
        return self.core.effective_hsmr_weight()

    def forward_details(
        self,
        support: Tensor,
        support_labels: Tensor,
        query: Tensor,
        way: int,
        text_bank: Tensor,
        *,
        query_labels: Tensor | None = None,
        hsmr: bool = False,
        spm_auxiliary: bool = False,
    ) -> dict[str, Tensor]:
        """Logits and intermediates (the keys of :meth:`CLIPSPMHead.forward_details` that exist
        here: ``d_spm``, ``d_padm``, ``d_padm_main``, ``d_padm_anchor``, ``logits``, ``hsmr_loss``,
        ``spm_aux_*``); training-only terms as there."""
        check_head_inputs(support, support_labels, query, way, text_bank, dim=self.dim, text_dim=self.text_dim)
        check_training_terms(query_labels, spm_auxiliary)
        core = self.core
        support_labels = support_labels.to(support.device)
        inner_support, inner_query = self.down(support), self.down(query)
        inner_bank = self.text_down(text_bank.to(inner_support.dtype))
        out: dict[str, Tensor] = {}
        if hsmr:
            core.hsmr_loss(inner_support, inner_query, out)

        prompts_support = inner_bank[support_labels].unsqueeze(1)
        token = prompts_support.mean(0).view(1, -1)  # g from support texts only
        generated_support = core.prompt_generator(token, inner_support)
        generated_query = core.prompt_generator(token, inner_query)
        if spm_auxiliary:
            prompts_query = inner_bank[query_labels.to(support.device)].unsqueeze(1)
            query_r, query_r_token = core.sf(inner_query, prompts_query)  # pass d
            support_g, support_g_token = core.sf(inner_support, generated_support)  # pass c
        fused_query, fused_query_token = core.sf(inner_query, generated_query)  # pass b
        support_r, fused_support, fused_support_token = self.support_part(support, prompts_support, inner_support)
        if spm_auxiliary:
            out.update(spm_auxiliary_terms(
                prompts_query=prompts_query, generated_query=generated_query, prompts_support=prompts_support,
                generated_support=generated_support, query_r=query_r, query_r_token=query_r_token,
                query_g=fused_query, query_g_token=fused_query_token, support_r=fused_support,
                support_r_token=fused_support_token, support_g=support_g, support_g_token=support_g_token,
            ))
        return self._matching(out, support_r, fused_support, support_labels, query, fused_query, way)

    def support_part(self, support: Tensor, prompts: Tensor, inner: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """SPM pass a of support clips ``(n, T, D)`` with their classes' inner-width prompts
        ``(n, 1, inner)`` (``inner``: ``Down support`` when already computed): ``(X_s^r, z_s, the
        SF token)``. A function of each clip and its class alone, so evaluation from the feature
        cache computes it once per clip (:class:`~fsar.methods.memo.ClipMemo`)."""
        fused, token = self.core.sf(self.down(support) if inner is None else inner, prompts)
        return support + self.up_spm(fused), fused, token

    def forward_from_parts(
        self, support_r: Tensor, fused_support: Tensor, support_labels: Tensor, query: Tensor, inner_query: Tensor,
        inner_bank: Tensor, way: int,
    ) -> dict[str, Tensor]:
        """Evaluation's :meth:`forward_details` from per-clip parts: :meth:`support_part`'s first two
        outputs of every support clip, ``Down query`` of every query and ``Down_text text_bank``
        (the same logits; no training-only terms). The rest depends on the episode: the prompt
        reads every support text, and PADM every clip."""
        core = self.core
        support_labels = support_labels.to(query.device)
        token = inner_bank[support_labels].unsqueeze(1).mean(0).view(1, -1)  # g from support texts only
        fused_query, _ = core.sf(inner_query, core.prompt_generator(token, inner_query))  # pass b
        return self._matching({}, support_r, fused_support, support_labels, query, fused_query, way)

    def _matching(
        self, out: dict[str, Tensor], support_r: Tensor, fused_support: Tensor, support_labels: Tensor, query: Tensor,
        fused_query: Tensor, way: int,
    ) -> dict[str, Tensor]:
        """SPM's distance, PADM and the logits, from pass a (``X_s^r``, ``z_s``) and pass b (``z_q``)."""
        core = self.core
        query_g = query + self.up_spm(fused_query)
        out["d_spm"] = core.otam_distance(class_means(support_r, support_labels, way), query_g)

        refined = core.padm(fused_support, support_labels, fused_query, way)
        anchors, global_anchor = padm_anchors(support_r, support_labels, query_g, way, core.padm.mode)
        padm_support = support_r + self.up_padm(refined["padm_xs"])
        padm_query = query_g + self.up_padm(refined["padm_xq"])
        anchors_out = anchors + self.up_padm(refined["padm_anchor_out"])
        global_out = global_anchor + self.up_padm(refined["padm_global_out"])  # (1 or Nq, T, D)
        out["d_padm_main"] = core.otam_distance(class_means(padm_support, support_labels, way), padm_query)
        out["d_padm_anchor"] = core.otam_distance(anchors_out, global_out)
        out["d_padm"] = out["d_padm_main"] + self.anchor_weight * out["d_padm_anchor"]
        out["logits"] = -(SPM_LOGIT_WEIGHT * out["d_spm"] + PADM_LOGIT_WEIGHT * out["d_padm"])
        return out

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int, text_bank: Tensor) -> Tensor:
        return self.forward_details(support, support_labels, query, way, text_bank)["logits"]


# ---------------------------------------------------------------------------------------------
# the release's state dict
# ---------------------------------------------------------------------------------------------

#: Release key prefix -> fsar key prefix (``models/model_clipspm.py``; ``backbone.*`` is the
#: CLIP encoder). ``context2`` is the SF transformer and ``context1`` the PADM one. ``scale``
#: is unused by the release's forward and is dropped.
RELEASE_STATE_DICT_NAMES: tuple[tuple[str, str], ...] = (
    ("mo_alpha1", "hsmr_weight"),
    ("motion_conv1.", "mfe.conv1."),
    ("motion_conv2.", "mfe.conv2."),
    ("token_tr.mlp.net.0.", "prompt_generator.hidden."),
    ("token_tr.mlp.net.3.", "prompt_generator.out."),
    ("gate_text.0.", "sf.gate_text.hidden."),
    ("gate_text.2.", "sf.gate_text.out."),
    ("gate_vision.0.", "sf.gate_vision.hidden."),
    ("gate_vision.2.", "sf.gate_vision.out."),
    *(
        (f"{release}.layers.0.{inner}", f"{ours}.{mine}")
        for release, ours in (("context2", "sf.context"), ("context1", "padm.context"))
        for inner, mine in (
            ("0.norm.", "norm."),
            ("0.fn.to_q.", "to_q."),
            ("0.fn.to_k.", "to_k."),
            ("0.fn.to_v.", "to_v."),
            ("0.fn.to_out.0.", "to_out."),
            ("1.net.0.", "ffn_in."),
            ("1.net.3.", "ffn_out."),
        )
    ),
)
RELEASE_UNUSED_KEYS = ("scale",)


def release_state_dict_to_fsar(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename a release state dict (keys of ``model_clipspm.CNN``, minus ``backbone.*``) to the
    keys of :class:`CLIPSPMHead` through :data:`RELEASE_STATE_DICT_NAMES`; unknown keys are an error."""
    renamed: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("backbone.") or key in RELEASE_UNUSED_KEYS:
            continue
        for release, ours in RELEASE_STATE_DICT_NAMES:
            if key == release or (release.endswith(".") and key.startswith(release)):
                renamed[ours + key[len(release):]] = torch.as_tensor(np.asarray(value)).clone()
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"clip_spm_from_reference: state_dict keys not in the release's head: {unknown}")
    return renamed


def clip_spm_from_reference(constructor: Mapping[str, Any], state_dict: Mapping[str, np.ndarray]) -> CLIPSPMHead:
    """A :class:`CLIPSPMHead` in the release's configuration from reference files.

    ``constructor``: the ``clip_spm_<case>_constructor.json`` object (``mid_dim``, the gate
    widths, ``transformer``, ``token_tr``, ``params``, ``otam_lambda``, ``cos_eps``);
    ``state_dict``: the release's keys (minus ``backbone.*``) to arrays. Returns the head in
    eval mode with transductive PADM and the learnable HSMR weight (the release's), float32;
    call ``.double()`` on it for float64. ``head(support, support_labels, query, way,
    text_bank) -> logits (n_query, way)``, ``text_bank (way, D)`` in episode class order.
    """
    try:
        dim = int(constructor["mid_dim"])
        transformer = constructor["transformer"]
        params = constructor.get("params", {})
        head = CLIPSPMHead(
            dim,
            heads=int(transformer["heads"]),
            dim_head=int(transformer["dim_head_k"]),
            mlp_dim=int(transformer["mlp_dim"]),
            prompt_hidden=int(constructor["token_tr"]["hidden"]),
            gate_vision_hidden=int(constructor["gate_vision_hidden"]),
            gate_text_hidden=int(constructor["gate_text_hidden"]),
            negative_slope=float(constructor.get("nu", params.get("negative_slope"))),
            alpha=float(constructor.get("alpha", params.get("alpha"))),
            attention_dropout=float(transformer.get("dropout_atte", 0.2)),
            ffn_dropout=float(transformer.get("dropout_ffn", 0.05)),
            prompt_dropout=float(constructor["token_tr"].get("dropout", 0.05)),
            layernorm_eps=float(transformer.get("layernorm_eps", 1e-5)),
            otam_lambda=float(constructor.get("otam_lambda", 0.5)),
            padm="transductive",
            hsmr_weight="learnable",
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"clip_spm_from_reference: constructor lacks or mistypes {error}") from None
    scale = transformer.get("attention_scale")
    if scale is not None and not math.isclose(float(scale), head.sf.context.scale, rel_tol=1e-12):
        raise ValueError(
            f"clip_spm_from_reference: attention_scale {scale} is not dim_head_k ** -0.5 = {head.sf.context.scale}"
        )
    eps = constructor.get("cos_eps", PEER_COSINE_EPS)
    if float(eps) != PEER_COSINE_EPS:
        raise ValueError(f"clip_spm_from_reference: cos_eps {eps} is not the release's {PEER_COSINE_EPS}")
    if constructor.get("otam_both_directions", True) is not True:
        raise ValueError("clip_spm_from_reference: only the release's two-direction OTAM is supported")
    tensors = release_state_dict_to_fsar(state_dict)
    expected = head.state_dict()
    wrong = [
        f"{key}: {tuple(value.shape)} != {tuple(expected[key].shape)}"
        for key, value in tensors.items() if key in expected and value.shape != expected[key].shape
    ]
    if wrong:
        raise ValueError(f"clip_spm_from_reference: shape mismatch: {'; '.join(wrong)}")
    tensors = {key: value.to(expected[key].dtype) for key, value in tensors.items() if key in expected}
    try:
        head.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ValueError(f"clip_spm_from_reference: state_dict does not fit: {error}") from None
    return head.eval()


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------

#: ``run/run.py`` rows (spec §6): h_v, h_t, ν, α, consist_1, text_dis (w_mo starts at 1 in all),
#: and the optimiser rows (lr, weight decay) of ``run/main_run.py`` / the configs. The release
#: hard-codes the HMDB row; the others are commented out there. Select with ``preset=``.
PRESETS: dict[str, dict[str, float]] = {
    "hmdb51": dict(gate_vision_ratio=0.5, gate_text_ratio=1.5, negative_slope=0.0025, alpha=0.2,
                   consist_weight=0.54, text_weight=0.07),
    "ucf101": dict(gate_vision_ratio=2.0, gate_text_ratio=2.0, negative_slope=0.054, alpha=0.228,
                   consist_weight=0.221, text_weight=0.0295),
    "kinetics": dict(gate_vision_ratio=0.5, gate_text_ratio=1.5, negative_slope=0.042, alpha=0.86,
                     consist_weight=0.62, text_weight=0.041),
    "ssv2-full": dict(gate_vision_ratio=0.5, gate_text_ratio=0.75, negative_slope=0.052, alpha=0.353,
                      consist_weight=0.579, text_weight=0.49),
}
PRESETS["ssv2-small"] = dict(PRESETS["hmdb51"])  # the release shares the HMDB row with SSv2-Small

#: Adam settings of the release (betas (0.5, 0.999) over all parameters, backbone included).
OPTIMIZER_PRESETS: dict[str, dict[str, Any]] = {
    name: dict(lr=1e-5, weight_decay=5e-5, betas=(0.5, 0.999)) for name in PRESETS
}
OPTIMIZER_PRESETS["ssv2-full"] = dict(lr=1.6e-5, weight_decay=9.7e-4, betas=(0.5, 0.999))

PIXEL_NORMALISATIONS = ("clip", "none")


@dataclass
class CLIPSPMConfig(CentringOptions, GridTemporalOptions):
    """Resolved CLIP-SPM options (JSON-able). ``None`` hyper-parameters come from ``preset``."""

    backbone: str
    weights: str | None = None
    finetune: str = "full"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    #: a row of :data:`PRESETS` (hmdb51, ssv2-small, ucf101, kinetics, ssv2-full).
    preset: str = "hmdb51"
    gate_vision_ratio: float | None = None  # h_v: vision gate hidden width = ⌊h_v·D⌋
    gate_text_ratio: float | None = None  # h_t
    negative_slope: float | None = None  # ν of the gates' LeakyReLU
    alpha: float | None = None  # a: weight of the gated prompt in SF
    consist_weight: float | None = None  # consist_1 (auxiliary SPM losses only)
    text_weight: float | None = None  # text_dis (auxiliary SPM losses only)
    #: widths of the release (8 heads x 256, FFN 2048, prompt FFN 2048).
    heads: int = 8
    dim_head: int = 256
    mlp_dim: int = 2048
    prompt_hidden: int = 2048
    attention_dropout: float = 0.2
    ffn_dropout: float = 0.05
    prompt_dropout: float = 0.05
    otam_lambda: float = 0.5
    #: "transductive" (release) or "inductive".
    padm: str = "transductive"
    #: "fixed" (default), "learnable" (release), "clamped".
    hsmr_weight: str = "fixed"
    hsmr_weight_init: float = 1.0
    #: the release computes the auxiliary SPM losses and switches them off.
    spm_aux_losses: bool = False
    #: "clip" (default) or "none" (release: pixels in [0, 1], no mean/std).
    pixel_normalisation: str = "clip"
    #: width of the learned common space when the encoder has none (the embedded pair) and
    #: start is "standard" (with "training-free" the frames keep their own width).
    embed_dim: int = 512
    #: How the learned maps start (fsar's own, not the paper's): "training-free" = the untrained
    #: method predicts exactly as the release's OTAM (fsar's otam_clipfsar preset: λ 0.5, both
    #: directions summed) on the raw features (identity frame map, zero-weight text map, the
    #: release's head at width `bottleneck` inside zero-initialised residual up-projections, the
    #: PADM anchor term behind a zero-initialised weight, the grid temporal module on grid
    #: backbones: ResidualCLIPSPMHead); "standard" = the release's head on the features (random
    #: projections into embed_dim on encoders without a shared space); "auto" = "training-free"
    #: on encoders without a shared space (the embedded pairs), "standard" on CLIP (exactly the
    #: release). Recorded resolved in the saved config.
    start: str = "auto"
    #: width of the release's head inside the residual branches when start is "training-free".
    bottleneck: int = 128

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"clip-spm: preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.padm not in PADM_MODES:
            raise ValueError(f"clip-spm: padm must be one of {PADM_MODES}, got {self.padm!r}")
        if self.hsmr_weight not in HSMR_WEIGHT_MODES:
            raise ValueError(f"clip-spm: hsmr_weight must be one of {HSMR_WEIGHT_MODES}, got {self.hsmr_weight!r}")
        if self.pixel_normalisation not in PIXEL_NORMALISATIONS:
            raise ValueError(
                f"clip-spm: pixel_normalisation must be one of {PIXEL_NORMALISATIONS}, got {self.pixel_normalisation!r}"
            )
        if self.start not in STARTS:
            raise ValueError(f"clip-spm: start must be one of {STARTS}, got {self.start!r}")
        check_grid_options("clip-spm", gate=self.grid_gate, static_rate=self.grid_static_rate)
        for name in ("heads", "dim_head", "mlp_dim", "prompt_hidden", "embed_dim", "bottleneck", "base_centring_clips"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"clip-spm: {name} must be >= 1, got {getattr(self, name)}")
        if not self.otam_lambda > 0:
            raise ValueError(f"clip-spm: otam_lambda must be > 0, got {self.otam_lambda}")

    def optimizer_defaults(self) -> dict[str, Any]:
        """The release's Adam settings for this preset (lr, weight_decay, betas)."""
        return dict(OPTIMIZER_PRESETS[self.preset])


@METHODS.register("clip-spm")
class CLIPSPM(TextAwareMethod):
    """CLIP-SPM: encoder + (learned projection) + :class:`CLIPSPMHead`.

    Options are the fields of :class:`CLIPSPMConfig`; ``finetune`` defaults to ``"full"``
    on CLIP (the release fine-tunes the whole visual encoder) and ``"frozen"`` elsewhere.
    Class texts are the 16-template means of the frozen text encoder, in training too
    (the release's fixed text banks), unnormalised. The own option ``--padm`` switches the
    PADM mode of a built (or trained) method: both modes share every weight.
    """

    name = "clip-spm"

    def __init__(
        self,
        *,
        backbone,
        weights: str | Path | None = None,
        finetune: str | None = None,
        training_classes: list[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            CLIPSPMConfig, backbone=backbone, weights=weights, finetune=finetune, preferred_finetune="full",
            training_classes=training_classes, options=options,
        )
        config = self.config
        head_options = dict(
            heads=config.heads, dim_head=config.dim_head, mlp_dim=config.mlp_dim,
            prompt_hidden=config.prompt_hidden, gate_vision_ratio=config.gate_vision_ratio,
            gate_text_ratio=config.gate_text_ratio, negative_slope=config.negative_slope, alpha=config.alpha,
            attention_dropout=config.attention_dropout, ffn_dropout=config.ffn_dropout,
            prompt_dropout=config.prompt_dropout, otam_lambda=config.otam_lambda, padm=config.padm,
            hsmr_weight=config.hsmr_weight, hsmr_weight_init=config.hsmr_weight_init,
        )
        self.head: CLIPSPMHead | ResidualCLIPSPMHead
        if config.start == "training-free":  # resolved by build_space
            self.head = ResidualCLIPSPMHead(self.space.dim, inner=config.bottleneck, text_dim=self.space.dim,
                                            **head_options)
        else:
            self.head = CLIPSPMHead(self.space.dim, **head_options)

    @classmethod
    def from_config(cls, values):
        """A config saved before ``start`` existed was built with the release's head on every
        encoder: rebuild it so, so that its checkpoint loads as it was trained."""
        values = dict(values)
        values.setdefault("start", "standard")
        values.setdefault("base_centring", False)
        return super().from_config(values)

    def build_space(self, config: CLIPSPMConfig, encoder) -> TextSpace:
        """On grid backbones with the training-free start the grid temporal module, then the
        video-text space, started as ``config.start`` says (resolved and recorded by
        :meth:`TextAwareMethod.build_space`, base-feature centring included)."""
        start = resolve_start(config.start, encoder.shared_space, method=self.name)
        self.grid_temporal = grid_temporal_for(config, encoder) if start == "training-free" else None
        return super().build_space(config, encoder)

    def _frames(self, clips: Tensor) -> Tensor:
        """Encoder features (n, T, D) -> the frames the method matches (n, T, W): centred on the
        base-class mean (a statistic of the encoder's features, so before any trained module),
        then through the grid tokens' temporal module if any, then the space's frame map."""
        clips = self.space.centre(clips)
        if self.grid_temporal is not None:
            clips = self.grid_temporal(grid_tokens(clips, self.grid_temporal.cells))
        return self.space.frames(clips, centred=True)

    @staticmethod
    def _output_parts(log_probs: Tensor, details: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"log_p": log_probs.detach(), "d_spm": details["d_spm"].detach(), "d_padm": details["d_padm"].detach()}

    def _forward_from_memo(self, support: Tensor, labels: Tensor, query: Tensor, way: int, names: list[str]) -> MethodOutput:
        """Evaluation from the feature cache with the residual head: every part that depends on
        one clip (its frames, ``Down``, a support's SPM pass a with its class's text) or one class
        (its inner-width text) once per evaluation; per episode only what reads the episode
        (:meth:`ResidualCLIPSPMHead.forward_from_parts`)."""
        head, device = self.head, query.device
        inner_bank = self._class_texts_once(names, device, inner=True)
        prompts = inner_bank[labels].unsqueeze(1)

        def support_part(index: Tensor) -> tuple[Tensor, Tensor]:
            refined, fused, _ = head.support_part(self._frames(support[index]), prompts[index])
            return refined, fused

        def query_part(index: Tensor) -> tuple[Tensor, Tensor]:
            frames = self._frames(query[index])
            return frames, head.down(frames)

        support_r, fused_support = self.clip_memo.map(
            support_part, support, [("clip-spm support", names[c]) for c in labels.tolist()])
        f_query, inner_query = self.clip_memo.map(query_part, query, [("clip-spm query",)] * query.shape[0])
        details = head.forward_from_parts(support_r, fused_support, labels, f_query, inner_query, inner_bank, way)
        log_probs = F.log_softmax(details["logits"], dim=-1)
        return MethodOutput(log_probs=log_probs, loss=None, parts=self._output_parts(log_probs, details))

    def _class_texts_once(self, names: list[str], device: torch.device, *, inner: bool) -> Tensor:
        """:meth:`_class_text` of ``names`` (through the residual head's ``Down_text`` when
        ``inner``), each class computed once per evaluation (:class:`ClipMemo`, by name)."""
        def compute(index: Tensor) -> tuple[Tensor]:
            text = self._class_text([names[i] for i in index.tolist()], device)
            return (self.head.text_down(text) if inner else text,)

        context = ("clip-spm inner text",) if inner else ("clip-spm text",)
        (texts,) = self.clip_memo.map(compute, None, [context] * len(names), ids=names)
        return texts

    def _class_text(self, class_names: list[str], device: torch.device) -> Tensor:
        """The classes' texts in the space (C, W): the frozen text encoder's 16-template means
        (the release's fixed text banks), through the space's text map."""
        class_text = self.text_bank.features(class_names, train=False).detach().float().to(device)
        return self.space.text(class_text)

    @classmethod
    def options(cls) -> tuple[MethodOption, ...]:
        return (
            MethodOption(
                "padm", str, metavar="MODE",
                help="clip-spm: PADM mode for this run, 'transductive' (the release: class anchors average every "
                     "query, queries attend to each other) or 'inductive' (each query alone); overrides the "
                     "trained run's mode, the weights are the same",
            ),
        )

    def load_resources(self, values, *, class_names=None) -> None:
        values = dict(values)
        mode = values.pop("padm", None)
        if values:
            raise ValueError(f"{self.name}: takes no options {sorted(values)}")
        if mode is not None:
            if mode not in PADM_MODES:
                raise ValueError(f"clip-spm: --padm must be one of {PADM_MODES}, got {mode!r}")
            self.config.padm = mode
            self.head.padm.mode = mode

    def optimizer_defaults(self) -> dict[str, Any]:
        return self.config.optimizer_defaults()

    def inference_tags(self) -> dict[str, str]:
        """What a printed result must name: the PADM mode (transductive uses every query)."""
        return {"padm": self.config.padm}

    def _frames_for_encoder(self, inputs: EpisodeInputs) -> EpisodeInputs:
        if self.config.pixel_normalisation == "clip":
            return inputs
        if inputs.features:
            raise ValueError(
                "clip-spm: pixel_normalisation='none' needs frames (the release's un-normalised pixels), "
                "but the episode holds cached features of CLIP-normalised frames; train or evaluate "
                "without the feature cache (--no-feature-cache) or use pixel_normalisation='clip'"
            )
        mean = torch.tensor(self.encoder.mean, dtype=inputs.support.dtype, device=inputs.support.device)
        std = torch.tensor(self.encoder.std, dtype=inputs.support.dtype, device=inputs.support.device)
        shape = (1, 1, 3, 1, 1)
        raw = lambda x: x * std.view(shape) + mean.view(shape)  # noqa: E731  back to [0, 1]
        return dataclasses.replace(inputs, support=raw(inputs.support), query=raw(inputs.query))

    def _auxiliary_loss(self, details: dict[str, Tensor]) -> Tensor:
        cfg = self.config
        text = cfg.text_weight * (details["spm_aux_prompt_query"] + details["spm_aux_token_query"]) + (
            0.5 - cfg.text_weight) * (details["spm_aux_prompt_support"] + details["spm_aux_token_support"])
        consistency = cfg.consist_weight * details["spm_aux_consist_query"] + (
            1.0 - cfg.consist_weight) * details["spm_aux_consist_support"]
        return text + consistency

    def forward(self, inputs: EpisodeInputs) -> MethodOutput:
        check_episode(inputs, method=self.name)  # before the labels index the class names
        support, query = self.encode_episode(self._frames_for_encoder(inputs))
        assert support is not None
        device = query.device
        labels = inputs.support_labels.to(device)
        names = list(inputs.class_names)
        memo = ClipMemo.applies(self, inputs.features, support)
        if memo and isinstance(self.head, ResidualCLIPSPMHead):
            return self._forward_from_memo(support, labels, query, inputs.way, names)
        if memo:
            # Evaluation from the cache: each clip's frames (centring, the grid module, the frame
            # map) and each class's projected text once per evaluation, not once per episode.
            frames = lambda clips: lambda index: (self._frames(clips[index]),)  # noqa: E731
            (f_support,) = self.clip_memo.map(frames(support), support, [("clip-spm frames",)] * support.shape[0])
            (f_query,) = self.clip_memo.map(frames(query), query, [("clip-spm frames",)] * query.shape[0])
            text_bank = self._class_texts_once(names, device, inner=False)
        else:
            f_support, f_query = self._frames(support), self._frames(query)
            text_bank = self._class_text(names, device)
        text_bank = text_bank.to(f_support.dtype)
        train = self.training and inputs.query_labels is not None
        weight = self.head.effective_hsmr_weight()
        need_hsmr = train and not (self.config.hsmr_weight == "fixed" and float(weight) == 0.0)
        need_aux = train and self.config.spm_aux_losses
        details = self.head.forward_details(
            f_support, labels, f_query, inputs.way, text_bank,
            query_labels=inputs.query_labels.to(device) if need_aux else None,
            hsmr=need_hsmr, spm_auxiliary=need_aux,
        )
        logits = details["logits"]
        log_probs = F.log_softmax(logits, dim=-1)
        parts = self._output_parts(log_probs, details)
        loss = None
        if train:
            query_labels = inputs.query_labels.to(device)
            ce_sum = F.cross_entropy(logits, query_labels, reduction="sum")  # release: summed over queries
            loss = ce_sum
            parts["loss_ce_sum"] = ce_sum.detach()
            aux_scale = RELEASE_TASKS_PER_BATCH * RELEASE_AUX_WEIGHT
            if need_hsmr:
                loss = loss + aux_scale * weight * details["hsmr_loss"]
                parts["loss_hsmr"] = details["hsmr_loss"].detach()
                parts["hsmr_weight"] = weight.detach()
            if self.config.spm_aux_losses:
                aux = self._auxiliary_loss(details)
                loss = loss + aux_scale * aux
                parts["loss_spm_aux"] = aux.detach()
        return MethodOutput(log_probs=log_probs, loss=loss, parts=parts)

