"""FSAR-LLaVA (Xing et al., IJCV 2026): a frozen video MLLM as the knowledge base, MFEM, CTPC and MPMM.

Only the abstract is public; every detail below is the [proposed] instantiation of
``../shared/specs/fsar_llava.md`` (sections 5-7) and sits behind a :class:`FSARLLaVAConfig` switch.

One C-way K-shot episode from the MLLM's streams (:mod:`fsar.encoders.mllm`): per clip the decoder's
per-frame video states H (n, T, D) (``features``) and the last prompt token's state h (n, D): for a
query under the label-free query prompt (``prompt_state``), for a support clip under the support
prompt (b) that names its class (``support_prompt_state``, spec section 4b; ``support_text="query"``
takes the label-free state for supports too), per class the label-only text state u (C, D)
(``label_state``)::

    MFEM      V = TemporalLayer(Linear(LN(H)) + pos)        (n, T, d)     visual branch
              t = MLP(LN(h)),  û = MLP(LN(u)) (shared head) (n, d), (C, d) textual branch
              V <- V + CrossAttn(V, [t]);  t <- t + MLP([t ; mean_T V])   mutual enhancement
    CTPC      P_v^c = mean_k V_{c,k};  P_t^c = norm(β mean_k t_{c,k} + (1 - β) û_c)
              P <- P + Attn(LN(P)) over the episode's C prototypes only (visual: C x T frame tokens,
              textual: C tokens); each query passes the same layers as a set of its own (inductive)
    MPMM      training-free fusion of four cues (fsar.metrics.mpmm)
    loss      Σ_m CE(z_m / τ, y)  [+ w_c · video-text contrastive vs û of the training classes seen]
              [+ w_s · mean cos(mean_T V, t)  (separation regulariser)]

Everything comes from the feature cache (``fsar extract --backbone video-llava``), since the MLLM is
frozen; an episode of frames runs the encoder itself (same streams). The query's label never enters a
forward pass: queries contribute only their own label-free streams (the cache never hands a query its
label-aware stream, and the frames path encodes queries without labels), and the prototypes are built
from the support set, its labels and the episode's class names.

Evaluation from the feature cache (eval mode, no autograd, rows named by the cache) computes every
per-clip part once per evaluation (:class:`~fsar.methods.memo.ClipMemo`): MFEM, a query's whole path,
and the in-projections of CTPC's refinement, which are linear in the clips (:class:`_SetAttention`);
the engine hands it chunks of episodes (:meth:`FSARLLaVA.predict_episodes`), batched into one forward.
The results equal the plain path's up to float rounding (tests).

``fsar-llava-vision`` is the spec's baseline (i): the vision tower's penultimate layer
(``vision_tower`` stream, no LLM) + MFEM's visual branch + OTAM (MPMM's temporal cue alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fsar.data.inputs import EpisodeInputs
from fsar.encoders.base import Encoder
from fsar.methods import METHODS
from fsar.methods.base import MethodOutput
from fsar.methods.common import EncoderMethod, check_episode, class_means, configure_method
from fsar.methods.memo import ClipMemo
from fsar.metrics.mpmm import CUES, MPMM, TEXT_CUES, _check_cues

__all__ = ["CTPC", "CaptionMatching", "FSARLLaVA", "FSARLLaVAConfig", "FSARLLaVAVision", "MFEM"]

VISUAL_STREAMS = ("features", "vision_tower")
#: where the support clips' text states come from: the label-aware support prompt (b), or the query prompt
SUPPORT_TEXTS = ("labelled", "query")
SUPPORT_STREAM = "support_prompt_state"


# ---------------------------------------------------------------------------------------------
# MFEM


class MFEM(nn.Module):
    """Multimodal Feature-Enhanced Module (spec section 5): visual and textual branches, mutual enhancement.

    Args:
        visual_dim, text_dim: input widths (decoder width 4096 for Video-LLaVA-7B; the vision tower's
            1024 for the vision-only baseline). ``text_dim=None`` builds the visual branch only.
        dim: width d of both branches.
        frames: the most frames T the temporal position embedding covers.
        heads, ffn_dim, dropout: the temporal Transformer encoder layer (pre-LN).
        temporal_layer: False skips the temporal layer (position embedding + projection only).
        mutual_enhancement: the cross-attention / MLP exchange between V and t (needs the text branch).
    """

    def __init__(
        self,
        *,
        visual_dim: int,
        text_dim: int | None,
        dim: int = 512,
        frames: int = 8,
        heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        temporal_layer: bool = True,
        mutual_enhancement: bool = True,
        enhancement_heads: int = 8,
    ) -> None:
        super().__init__()
        if mutual_enhancement and text_dim is None:
            raise ValueError("MFEM: mutual_enhancement needs the textual branch (text_dim)")
        self.frames = frames
        self.visual_in = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, dim))
        self.position = nn.Parameter(torch.zeros(frames, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.temporal = (
            nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            if temporal_layer else None
        )
        self.text_head = (
            nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))
            if text_dim is not None else None
        )
        if mutual_enhancement:
            self.cross_norm = nn.LayerNorm(dim)
            self.cross = nn.MultiheadAttention(dim, enhancement_heads, dropout=dropout, batch_first=True)
            self.text_update = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.mutual_enhancement = mutual_enhancement

    def visual(self, states: torch.Tensor) -> torch.Tensor:
        """(n, T, visual_dim) -> (n, T, d)."""
        frames = states.shape[1]
        if frames > self.frames:
            raise ValueError(f"MFEM: clips have T={frames} frames, the position embedding covers {self.frames}")
        x = self.visual_in(states) + self.position[:frames]
        return self.temporal(x) if self.temporal is not None else x

    def text(self, states: torch.Tensor) -> torch.Tensor:
        """(n, text_dim) -> (n, d); the same head maps the label states u to û."""
        if self.text_head is None:
            raise ValueError("MFEM: built without the textual branch")
        return self.text_head(states)

    def forward(self, visual: torch.Tensor, text: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = self.visual(visual)
        if text is None:
            return v, None
        t = self.text(text)
        if self.mutual_enhancement:
            attended, _ = self.cross(self.cross_norm(v), t[:, None], t[:, None], need_weights=False)
            v = v + attended
            t = t + self.text_update(torch.cat([t, v.mean(1)], dim=-1))
        return v, t


# ---------------------------------------------------------------------------------------------
# CTPC


class _SetAttention(nn.Module):
    """x <- x + Attn(LN(x)) over the tokens of one set (pre-LN residual).

    In training it runs ``nn.MultiheadAttention``. In evaluation the same maths runs directly
    (:meth:`attend_projected`), split so that the expensive part can be computed once per clip:
    with ``A = W_in diag(γ)`` and ``c = W_in β + b_in`` (LayerNorm γ, β; in-projection W_in, b_in),
    ``W_in LN(x) + b_in = A (x - μ(x)) / σ(x) + c``, and ``A (x - μ(x))`` is *linear* in x (μ is), so
    the in-projection of a K-shot prototype (a mean of clips) is the mean of its clips'
    :meth:`centred_projection`; only σ(x) (a variance over d) is left per episode.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (sets, n, d)
        if not self.training:
            return self.attend_projected(tokens, self.centred_projection(tokens), self.inverse_scale(tokens))
        x = self.norm(tokens)
        out, _ = self.attention(x, x, x, need_weights=False)
        return tokens + out

    def centred_projection(self, x: torch.Tensor) -> torch.Tensor:
        """``A (x - μ(x))``: (..., d) -> (..., 3d), linear in x."""
        weight = self.attention.in_proj_weight * self.norm.weight
        return F.linear(x - x.mean(-1, keepdim=True), weight)

    def inverse_scale(self, x: torch.Tensor) -> torch.Tensor:
        """``1 / σ(x)``, σ the LayerNorm's ``sqrt(var + eps)``: (..., d) -> (..., 1)."""
        centred = x - x.mean(-1, keepdim=True)  # (Tensor.var is ~10x slower here)
        variance = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square() / x.shape[-1]
        return torch.rsqrt(variance + self.norm.eps)

    def attend_projected(self, tokens: torch.Tensor, projected: torch.Tensor, inverse_scale: torch.Tensor) -> torch.Tensor:
        """``tokens + Attn(LN(tokens))`` from ``projected = centred_projection(tokens)`` and
        ``inverse_scale(tokens)``; tokens (sets, n, d). The attention without dropout (evaluation)."""
        attention = self.attention
        sets, n, dim = tokens.shape
        heads = attention.num_heads
        width = dim // heads
        bias = F.linear(self.norm.bias, attention.in_proj_weight, attention.in_proj_bias)
        # W_in LN(x) + b_in = projected / σ + c, written straight into the heads' layout (3, sets, h, n, d/h)
        terms = (bias.view(3, 1, heads, 1, width), projected.view(sets, n, 3, heads, width).permute(2, 0, 3, 1, 4),
                 inverse_scale.view(1, sets, 1, n, 1))
        if torch.is_grad_enabled():  # (out= takes no autograd)
            qkv = torch.addcmul(*terms)
        else:
            qkv = torch.addcmul(*terms, out=projected.new_empty(3, sets, heads, n, width))
        q, k, v = qkv
        weights = torch.softmax((q @ k.transpose(-1, -2)).mul_(width ** -0.5), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(sets * n, dim)
        # tokens + out_proj(out): the residual added inside the product
        residual = torch.addmm(tokens.reshape(sets * n, dim), out, attention.out_proj.weight.T)
        return residual.add_(attention.out_proj.bias).view(sets, n, dim)


class CTPC(nn.Module):
    """Composite Task-Oriented Prototype Construction (spec section 6).

    Args:
        dim: feature width d.
        beta: weight β of the support states in the composite textual prototype (1 - β: the label state).
        refine: the task-oriented attention over the episode's prototypes.
        heads, dropout: of the two refinement layers (visual, textual).
        text: False builds the visual side only.
    """

    def __init__(self, *, dim: int, beta: float = 0.5, refine: bool = True, heads: int = 8,
                 dropout: float = 0.0, text: bool = True) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"CTPC: beta must be in [0, 1], got {beta}")
        self.beta = float(beta)
        self.refine = refine
        self.visual_refine = _SetAttention(dim, heads, dropout) if refine else None
        self.text_refine = _SetAttention(dim, heads, dropout) if refine and text else None

    def prototypes(
        self,
        visual: torch.Tensor,
        labels: torch.Tensor,
        way: int,
        text: torch.Tensor | None = None,
        label_text: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Support V (n, T, d) [+ t (n, d), û (C, d)] -> P_v (C, T, d) [, P_t (C, d)], refined in the task."""
        proto_v = class_means(visual, labels, way)
        if self.visual_refine is not None:
            c, frames, dim = proto_v.shape
            proto_v = self.visual_refine(proto_v.reshape(1, c * frames, dim)).reshape(c, frames, dim)
        proto_t = None
        if text is not None:
            mean_t = class_means(text, labels, way)
            if label_text is not None:
                mean_t = self.beta * mean_t + (1.0 - self.beta) * label_text
            proto_t = F.normalize(mean_t, dim=-1)
            if self.text_refine is not None:
                proto_t = self.text_refine(proto_t[None])[0]
        return proto_v, proto_t

    def queries(self, visual: torch.Tensor, text: torch.Tensor | None = None):
        """Each query through the same layers as a set of its own: (n_q, T, d) [, (n_q, d)]."""
        if self.visual_refine is not None:
            visual = self.visual_refine(visual)
        if text is not None:
            text = F.normalize(text, dim=-1)
            if self.text_refine is not None:
                text = self.text_refine(text[:, None])[:, 0]
        return visual, text


# ---------------------------------------------------------------------------------------------
# the method


@dataclass
class FSARLLaVAConfig:
    """Resolved FSAR-LLaVA options (JSON-able); every [proposed] detail of the spec is a field."""

    backbone: str = "video-llava"
    weights: str | None = None
    finetune: str = "frozen"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    #: the per-frame visual stream: "features" (decoder states at the video positions) or
    #: "vision_tower" (the vision tower's penultimate layer, baseline (i))
    visual_stream: str = "features"
    #: MFEM
    dim: int = 512
    frames: int = 8
    temporal_layer: bool = True
    temporal_heads: int = 8
    temporal_ffn_dim: int = 2048
    dropout: float = 0.1
    mutual_enhancement: bool = True
    enhancement_heads: int = 8
    #: separation regulariser weight (spec: 0.1 when used; 0 = off)
    separation_weight: float = 0.0
    #: the support clips' text state t: "labelled" = under the support prompt (b) naming the clip's class
    #: (stream support_prompt_state, spec 4b/6), "query" = under the label-free query prompt
    support_text: str = "labelled"
    #: CTPC
    beta: float = 0.5
    use_label_state: bool = True
    task_refinement: bool = True
    #: section 4d: the query's prompt state under a prompt naming the episode's candidate classes (one
    #: MLLM pass per query and episode, so from frames only, never from the cache); off by default
    task_oriented_query: bool = False
    refinement_heads: int = 8
    #: MPMM
    cues: tuple[str, ...] | str = CUES
    fusion: str = "soft"
    tau: float = 0.5
    kappa: float = 0.05
    alpha: float | None = None
    otam_lambda: float = 0.5
    #: training: per-cue cross-entropy + this weight x video-text contrastive (0 = off)
    contrastive_weight: float = 0.5
    contrastive_temperature: float = 0.07

    def validate(self) -> None:
        if self.visual_stream not in VISUAL_STREAMS:
            raise ValueError(f"fsar-llava: visual_stream must be one of {VISUAL_STREAMS}, got {self.visual_stream!r}")
        if self.support_text not in SUPPORT_TEXTS:
            raise ValueError(f"fsar-llava: support_text must be one of {SUPPORT_TEXTS}, got {self.support_text!r}")
        self.cues = _check_cues(self.cues) or CUES
        for name in ("dim", "frames", "temporal_heads", "temporal_ffn_dim", "enhancement_heads", "refinement_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"fsar-llava: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("separation_weight", "contrastive_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"fsar-llava: {name} must be >= 0, got {getattr(self, name)}")
        if not self.contrastive_temperature > 0:
            raise ValueError("fsar-llava: contrastive_temperature must be > 0")
        if self.task_oriented_query and not any(c in TEXT_CUES for c in self.cues):
            raise ValueError("fsar-llava: task_oriented_query changes the query's text state; it needs a textual cue")

    @property
    def needs_text(self) -> bool:
        """Whether the textual branch is built (a text cue, the enhancement or the contrastive term)."""
        return any(c in TEXT_CUES for c in self.cues) or self.mutual_enhancement or self.contrastive_weight > 0

    @property
    def needs_labels(self) -> bool:
        return self.needs_text and (self.use_label_state or self.contrastive_weight > 0)


@METHODS.register("fsar-llava")
class FSARLLaVA(EncoderMethod):
    """FSAR-LLaVA on a frozen video-MLLM backbone; see the module docstring and :class:`FSARLLaVAConfig`."""

    name = "fsar-llava"

    def __init__(
        self,
        *,
        backbone: str | Encoder = "video-llava",
        weights: str | Path | None = None,
        finetune: str | None = None,
        **options: Any,
    ) -> None:
        config, encoder = configure_method(
            FSARLLaVAConfig, method=self.name, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune="frozen", options=options,
        )
        if not encoder.is_frozen:
            raise ValueError(f"{self.name}: the MLLM backbone must be frozen")
        missing = [s for s in self.streams_of(config) if s != "features" and not self._produces(encoder, s)]
        if missing == [SUPPORT_STREAM]:
            raise ValueError(
                f"{self.name}: backbone {encoder.name!r} was built without the label-aware support prompt "
                f"({SUPPORT_STREAM}); build it with support_prompt=True, or set support_text='query'"
            )
        if missing:
            raise ValueError(
                f"{self.name}: backbone {encoder.name!r} does not produce the stream(s) {missing}; use a "
                "video-MLLM backbone such as 'video-llava'"
            )
        super().__init__(encoder)
        self.config = config
        visual_dim = encoder.feature_dim if config.visual_stream == "features" else int(encoder.vision_dim)
        text_dim = encoder.text_dim if config.needs_text else None
        self.mfem = MFEM(
            visual_dim=visual_dim, text_dim=text_dim, dim=config.dim, frames=config.frames,
            heads=config.temporal_heads, ffn_dim=config.temporal_ffn_dim, dropout=config.dropout,
            temporal_layer=config.temporal_layer, mutual_enhancement=config.mutual_enhancement and config.needs_text,
            enhancement_heads=config.enhancement_heads,
        )
        self.ctpc = CTPC(dim=config.dim, beta=config.beta, refine=config.task_refinement,
                         heads=config.refinement_heads, text=config.needs_text)
        self.mpmm = MPMM(cues=config.cues, fusion=config.fusion, tau=config.tau, kappa=config.kappa,
                         alpha=config.alpha, otam_lambda=config.otam_lambda)
        #: raw label states of the training classes met so far (frozen MLLM outputs), for the contrastive term
        self._label_bank: dict[str, torch.Tensor] = {}

    # -- streams ------------------------------------------------------------------------------------
    @staticmethod
    def _produces(encoder: Encoder, stream: str) -> bool:
        names = tuple(getattr(encoder, "clip_stream_names", lambda: ())())
        names += tuple(getattr(encoder, "class_stream_names", lambda: ())())
        return stream in names

    @staticmethod
    def streams_of(config: FSARLLaVAConfig) -> tuple[str, ...]:
        wanted = [config.visual_stream]
        if config.needs_text:
            wanted.append("prompt_state")
            if config.support_text == "labelled":
                wanted.append(SUPPORT_STREAM)
        if config.needs_labels:
            wanted.append("label_state")
        return tuple(wanted)

    def required_streams(self) -> tuple[str, ...]:
        """Extra stream names read from the feature cache (``features`` is the primary one)."""
        return tuple(s for s in self.streams_of(self.config) if s != "features")

    def _episode_streams(self, inputs: EpisodeInputs) -> dict[str, torch.Tensor | None]:
        config = self.config
        if config.task_oriented_query and inputs.features:
            raise ValueError(
                f"{self.name}: task_oriented_query needs one MLLM pass per query and episode, so it cannot come "
                "from the feature cache; run from frames (--no-feature-cache)"
            )
        if not inputs.features:  # frames: the frozen encoder makes every stream now
            with torch.no_grad():
                if config.needs_text and config.support_text == "labelled":  # support clips only: their labels
                    names = [inputs.class_names[int(y)] for y in inputs.support_labels]
                    support = self.encoder.encode_clips(inputs.support, labels=names)
                else:
                    support = self.encoder.encode_clips(inputs.support)
                query = self.encoder.encode_clips(inputs.query)  # never labels
                if config.task_oriented_query:  # names the episode's candidates, never the query's label alone
                    query["prompt_state"] = self.encoder.encode_task_queries(inputs.query, list(inputs.class_names))
                labels = (self.encoder.encode_class_streams(list(inputs.class_names))
                          if config.needs_labels else {})
            get = {"support": support, "query": query, "class": labels}
            fetch = lambda name, role: get[role][name]  # noqa: E731
        else:
            def fetch(name: str, role: str) -> torch.Tensor:
                if name == "features":
                    return inputs.support if role == "support" else inputs.query
                stream = getattr(inputs, "stream", None)
                if stream is None:
                    raise ValueError(f"{self.name}: this fsar's EpisodeInputs carries no named streams ({name!r})")
                return stream(name, role)
        device = next(self.mfem.parameters()).device
        out: dict[str, torch.Tensor | None] = {}
        for role in ("support", "query"):
            out[f"{role}_visual"] = fetch(config.visual_stream, role).to(device).float()
            text = SUPPORT_STREAM if role == "support" and config.support_text == "labelled" else "prompt_state"
            out[f"{role}_text"] = fetch(text, role).to(device).float() if config.needs_text else None
        out["labels"] = fetch("label_state", "class").to(device).float() if config.needs_labels else None
        return out

    def _check_streams(self, inputs: EpisodeInputs, s: dict) -> None:
        n_support, n_query, way = inputs.support_labels.shape[0], inputs.query.shape[0], inputs.way
        checks = [("support_visual", n_support, 3), ("query_visual", n_query, 3), ("support_text", n_support, 2),
                  ("query_text", n_query, 2), ("labels", way, 2)]
        for key, n, rank in checks:
            value = s.get(key)
            if value is not None and (value.dim() != rank or value.shape[0] != n):
                raise ValueError(f"{self.name}: stream {key} has shape {tuple(value.shape)}, expected {n} rows, rank {rank}")

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, inputs: EpisodeInputs, *, generator: torch.Generator | None = None) -> MethodOutput:
        check_episode(inputs, method=self.name)
        if self._memo_applies(inputs):  # evaluation from the cache: per-clip work once, see _predict_memoised
            return self._predict_memoised([inputs], parts=True)[0]
        config = self.config
        s = self._episode_streams(inputs)
        self._check_streams(inputs, s)
        device = s["support_visual"].device
        labels = inputs.support_labels.to(device)
        way = inputs.way

        # the plain path (training, frames, unnamed rows); evaluation from the cache took _predict_memoised
        v_support, t_support = self.mfem(s["support_visual"], s["support_text"])
        v_query, t_query = self.mfem(s["query_visual"], s["query_text"])
        label_text = None
        if s["labels"] is not None and config.use_label_state:
            label_text = self.mfem.text(s["labels"])
        proto_v, proto_t = self.ctpc.prototypes(v_support, labels, way, t_support, label_text)
        q_v, q_t = self.ctpc.queries(v_query, t_query)
        use_text = any(c in TEXT_CUES for c in self.mpmm.cues)
        result = self.mpmm.match(q_v, proto_v, q_t if use_text else None, proto_t if use_text else None)
        parts: dict[str, torch.Tensor] = {"cue_weights": result.weights.detach()}
        for m, cue in enumerate(result.cues):
            parts[f"log_p_{cue}"] = F.log_softmax(result.cue_logits[..., m], dim=-1).detach()

        loss = None
        if self.training and inputs.query_labels is not None:
            query_labels = inputs.query_labels.to(device)
            per_cue = [F.cross_entropy(result.cue_logits[..., m], query_labels) for m in range(len(result.cues))]
            loss = torch.stack(per_cue).sum()
            for cue, value in zip(result.cues, per_cue):
                parts[f"loss_{cue}"] = value.detach()
            if config.contrastive_weight > 0 and s["labels"] is not None:
                contrastive = self._contrastive_loss(inputs, s["labels"], v_support, v_query, query_labels)
                loss = loss + config.contrastive_weight * contrastive
                parts["loss_contrastive"] = contrastive.detach()
            if config.separation_weight > 0 and t_support is not None:
                videos = torch.cat([v_support.mean(1), v_query.mean(1)])
                texts = torch.cat([t_support, t_query])
                separation = F.cosine_similarity(videos, texts, dim=-1).mean()
                loss = loss + config.separation_weight * separation
                parts["loss_separation"] = separation.detach()
        return MethodOutput(log_probs=result.log_probs, loss=loss, parts=parts)

    # -- evaluation from the cache: per-clip work once, episodes batched --------------------------------
    #: episodes per :meth:`predict_episodes` call the evaluation loop hands over (fsar.engine.evaluate)
    EVALUATION_BATCH = 32

    def evaluation_batch(self) -> int:
        return self.EVALUATION_BATCH

    def _memo_applies(self, inputs: EpisodeInputs) -> bool:
        """Evaluation (eval mode, no autograd, CPU) of an episode whose rows the feature cache named."""
        rows = inputs.cached_rows if inputs.features else None
        return (
            rows is not None and not self.config.task_oriented_query
            and ClipMemo.applies(self, True, inputs.support)
            and rows.rows_of(inputs.support) is not None and rows.rows_of(inputs.query) is not None
        )

    def predict_episodes(self, episodes: Sequence[EpisodeInputs]) -> list[torch.Tensor]:
        """Log-probabilities (n_query, way) of each episode, as :meth:`forward` gives them; episodes of
        one shape from named cache rows run as one batched forward (:meth:`_predict_memoised`)."""
        episodes = list(episodes)
        for inputs in episodes:
            check_episode(inputs, method=self.name)
        if len(episodes) > 1 and all(self._memo_applies(e) for e in episodes):
            shapes = {(e.way, tuple(e.support.shape), tuple(e.query.shape)) for e in episodes}
            if len(shapes) == 1:
                return [out.log_probs for out in self._predict_memoised(episodes, parts=False)]
        return [self(e).log_probs for e in episodes]

    def _predict_memoised(self, episodes: Sequence[EpisodeInputs], *, parts: bool) -> list[MethodOutput]:
        """The evaluation forward of episodes of one shape, equal to the plain path up to float rounding.

        Per clip, once per evaluation (:class:`ClipMemo`, by the cache's row names): a support clip's
        MFEM output (V, t; keyed with its class name, which its label-aware text saw) and the
        centred in-projections of CTPC's refinement layers (:class:`_SetAttention`, linear in the clip, so a
        K-shot prototype's is the mean of its clips'); a query's whole path (MFEM and its own-set
        refinement); per class name, the textual head û of its label state (a frozen MLLM output of the
        name under the one label prompt) and its projection. Per
        episode, batched over the episodes: class means, σ of each prototype token, the attention
        over the episode's prototypes, MPMM. No query label is read (the engine removes them).
        """
        config, ctpc = self.config, self.ctpc
        visual_refine, text_refine = ctpc.visual_refine, ctpc.text_refine
        streams = []
        for inputs in episodes:
            s = self._episode_streams(inputs)
            self._check_streams(inputs, s)
            streams.append(s)
        with_text = streams[0]["support_text"] is not None
        use_labels = streams[0]["labels"] is not None and config.use_label_state
        batch, way = len(episodes), episodes[0].way
        n_support, n_query = episodes[0].support.shape[0], episodes[0].query.shape[0]

        def rows_of(key: str, offsets: list[int] | None = None):
            """compute(index) input: rows ``index`` of the episodes' concatenated stream ``key`` (through
            ``offsets`` when the memo's rows are in another order); gathers only the rows asked for."""
            per = [s[key] for s in streams]
            size = per[0].shape[0]

            def gather(index: torch.Tensor) -> torch.Tensor:
                flat = index.tolist() if offsets is None else [offsets[i] for i in index.tolist()]
                return torch.stack([per[i // size][i % size] for i in flat])

            return gather

        # Support clips: V, t and the projections, once per (clip, class name). When every class has the
        # same number of shots K (the field's episodes) the rows go in class order, and each prototype's
        # means come from the memo's tables directly (K = 1: the clip's own rows); else class means.
        label_lists = [e.support_labels.tolist() for e in episodes]
        shots = n_support // way
        ordered = all(sorted(y) == [c for c in range(way) for _ in range(shots)] for y in label_lists)
        support_ids, contexts, offsets, order = [], [], [], list(range(n_support))
        for b, (inputs, y) in enumerate(zip(episodes, label_lists)):
            if ordered:
                order = sorted(range(n_support), key=y.__getitem__)  # stable: shots keep their order
            ids = inputs.cached_rows.rows_of(inputs.support)
            support_ids.extend(ids[i] for i in order)
            contexts.extend(("ctpc support", inputs.class_names[y[i]]) for i in order)
            offsets.extend(b * n_support + i for i in order)  # memo row -> row of the episodes' streams
        support_visual = rows_of("support_visual", offsets)
        support_text = rows_of("support_text", offsets) if with_text else None

        def support_part(index: torch.Tensor) -> tuple[torch.Tensor, ...]:
            v, t = self.mfem(support_visual(index), support_text(index) if with_text else None)
            out = [v] + ([t] if with_text else [])
            if visual_refine is not None:
                out.append(visual_refine.centred_projection(v))
            if with_text and text_refine is not None:
                out.append(text_refine.centred_projection(t))
            return tuple(out)

        if ordered:  # the prototypes' V, t and projections straight from the memo's tables
            support = list(self.clip_memo.group_means(support_part, contexts, ids=support_ids, group=shots))
            support = [t.view(batch, way, *t.shape[1:]) for t in support]
        else:  # class means, batched: M (B, C, n_support), M[b, c, i] = [label_i == c] / n_c
            labels = torch.tensor(label_lists)
            one_hot = (labels[:, None, :] == torch.arange(way)[None, :, None]).float()
            average = one_hot / one_hot.sum(-1, keepdim=True)
            support = [
                torch.bmm(average.to(t), t.view(batch, n_support, -1)).view(batch, way, *t.shape[1:])
                for t in self.clip_memo.map(support_part, None, contexts, ids=support_ids)
            ]
        proto_v = support.pop(0)  # (B, C, T, d): per class, the mean of its clips'
        mean_t = support.pop(0) if with_text else None
        mean_pv = support.pop(0) if visual_refine is not None else None
        mean_pt = support.pop(0) if with_text and text_refine is not None else None

        # query clips: the whole path (each query is a set of its own in CTPC)
        query_visual = rows_of("query_visual")
        query_text = rows_of("query_text") if with_text else None

        def query_part(index: torch.Tensor) -> tuple[torch.Tensor, ...]:
            v, t = self.mfem(query_visual(index), query_text(index) if with_text else None)
            q_v, q_t = ctpc.queries(v, t)
            return (q_v,) if q_t is None else (q_v, q_t)

        query_ids = [i for inputs in episodes for i in inputs.cached_rows.rows_of(inputs.query)]
        query = self.clip_memo.map(query_part, None, [("ctpc query",)] * len(query_ids), ids=query_ids)
        q_v = query[0].view(batch, n_query, *query[0].shape[1:])
        q_t = query[1].view(batch, n_query, -1) if with_text else None

        if visual_refine is not None:
            _, _, frames, dim = proto_v.shape
            tokens = proto_v.reshape(batch, way * frames, dim)
            projected = mean_pv.reshape(batch, way * frames, -1)
            proto_v = visual_refine.attend_projected(tokens, projected, visual_refine.inverse_scale(tokens))
            proto_v = proto_v.view(batch, way, frames, dim)
        proto_t = None
        if with_text:
            mean_p = mean_pt
            if use_labels:
                # û of a class: the frozen MLLM's label state of its name (the one label prompt), through
                # the textual head: once per class name
                label_rows = rows_of("labels")

                def label_part(index: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    u = self.mfem.text(label_rows(index))
                    return (u,) if text_refine is None else (u, text_refine.centred_projection(u))

                names = [name for inputs in episodes for name in inputs.class_names]
                label = self.clip_memo.map(label_part, None, [("label state",)] * len(names), ids=names)
                beta = ctpc.beta
                mean_t = beta * mean_t + (1.0 - beta) * label[0].view(batch, way, -1)
                if mean_p is not None:
                    mean_p = beta * mean_p + (1.0 - beta) * label[1].view(batch, way, -1)
            norm = mean_t.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize
            proto_t = mean_t / norm
            if text_refine is not None:
                proto_t = text_refine.attend_projected(proto_t, mean_p / norm, text_refine.inverse_scale(proto_t))

        use_text = any(c in TEXT_CUES for c in self.mpmm.cues)
        results = self.mpmm.match_episodes(q_v, proto_v, q_t if use_text else None, proto_t if use_text else None)
        outputs = []
        for result in results:
            extra = None
            if parts:
                extra = {"cue_weights": result.weights}
                for m, cue in enumerate(result.cues):
                    extra[f"log_p_{cue}"] = F.log_softmax(result.cue_logits[..., m], dim=-1)
            outputs.append(MethodOutput(log_probs=result.log_probs, parts=extra))
        return outputs

    def _contrastive_loss(self, inputs, label_states, v_support, v_query, query_labels) -> torch.Tensor:
        """Video-text contrastive term: mean_T V of the episode's labelled clips against û of every
        training class met so far (their label states are frozen MLLM outputs, kept by name)."""
        for name, state in zip(inputs.class_names, label_states):
            self._label_bank[name] = state.detach().cpu()
        names = sorted(self._label_bank)
        index = {n: i for i, n in enumerate(names)}
        bank = torch.stack([self._label_bank[n] for n in names]).to(label_states.device)
        u_hat = F.normalize(self.mfem.text(bank), dim=-1)
        episode_to_bank = torch.tensor([index[n] for n in inputs.class_names], device=label_states.device)
        targets = torch.cat([episode_to_bank[inputs.support_labels.to(label_states.device)],
                             episode_to_bank[query_labels]])
        videos = F.normalize(torch.cat([v_support.mean(1), v_query.mean(1)]), dim=-1)
        return F.cross_entropy(videos @ u_hat.T / self.config.contrastive_temperature, targets)


@METHODS.register("fsar-llava-vision")
class FSARLLaVAVision(FSARLLaVA):
    """Baseline (i): vision tower's penultimate layer + MFEM's visual branch + OTAM (MPMM's temporal cue).

    The same module as ``fsar-llava`` with other defaults (any of them can still be overridden)."""

    name = "fsar-llava-vision"
    PRESET = dict(visual_stream="vision_tower", cues=("temporal",), mutual_enhancement=False,
                  contrastive_weight=0.0, use_label_state=False)

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**self.PRESET, **options})


# ---------------------------------------------------------------------------------------------
# baseline (ii): the caption pipeline


@dataclass
class CaptionMatchingConfig:
    """Options of ``fsar-llava-caption`` (JSON-able)."""

    backbone: str = "video-llava"
    weights: str | None = None
    finetune: str = "frozen"
    #: the backbone's options; ``captions`` (the text encoder) defaults to the embedded MiniLM
    encoder_options: dict[str, Any] = field(default_factory=lambda: {"captions": "minilm"})
    #: softmax temperature of the cosine logits
    temperature: float = 0.1

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"fsar-llava-caption: temperature must be > 0, got {self.temperature}")


@METHODS.register("fsar-llava-caption")
class CaptionMatching(EncoderMethod):
    """Baseline (ii), the "feature -> caption -> feature" pipeline the paper argues against.

    The MLLM writes a greedy, length-bounded caption per clip with a label-free prompt; a text
    encoder embeds it (stream ``caption_embedding``, cached by ``fsar extract`` like every stream);
    queries are matched in text space: cosine to each class's mean support-caption embedding.
    Training-free.
    """

    name = "fsar-llava-caption"
    trainable = False

    def __init__(self, *, backbone: str | Encoder = "video-llava", weights: str | Path | None = None,
                 finetune: str | None = None, **options: Any) -> None:
        if isinstance(backbone, Encoder):
            options.setdefault("encoder_options", {})  # a ready encoder brings its own captions setting
        config, encoder = configure_method(
            CaptionMatchingConfig, method=self.name, backbone=backbone, weights=weights, finetune=finetune,
            preferred_finetune="frozen", options=options,
        )
        if not FSARLLaVA._produces(encoder, "caption_embedding"):
            raise ValueError(
                f"{self.name}: backbone {encoder.name!r} gives no 'caption_embedding' stream; build it with "
                "captions='minilm' (or 'mllm')"
            )
        super().__init__(encoder)
        self.config = config

    def required_streams(self) -> tuple[str, ...]:
        return ("caption_embedding",)

    def forward(self, inputs: EpisodeInputs, *, generator: torch.Generator | None = None) -> MethodOutput:
        check_episode(inputs, method=self.name)
        if inputs.features:
            support = inputs.stream("caption_embedding", "support")
            query = inputs.stream("caption_embedding", "query")
        else:
            with torch.no_grad():
                support = self.encoder.encode_clips(inputs.support)["caption_embedding"]
                query = self.encoder.encode_clips(inputs.query)["caption_embedding"]
        labels = inputs.support_labels.to(support.device)
        prototypes = F.normalize(class_means(F.normalize(support.float(), dim=-1), labels, inputs.way), dim=-1)
        logits = F.normalize(query.float(), dim=-1) @ prototypes.T / self.config.temperature
        return MethodOutput(log_probs=F.log_softmax(logits, dim=-1))
