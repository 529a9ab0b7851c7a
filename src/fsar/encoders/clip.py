"""OpenAI CLIP (ViT-B/32, ViT-B/16) through ``transformers``, optionally with MA-FSAR's FgMA adapters.

Registered backbones: ``clip-vit-b32`` and ``clip-vit-b16``::

    create_encoder("clip-vit-b32", weights="/models/clip-vit-base-patch32")   # local folder
    create_encoder("clip-vit-b32", weights="openai/clip-vit-base-patch32")    # hub id (needs network once)
    create_encoder("clip-vit-b32", weights="random")                          # exact architecture, random init
    create_encoder("clip-vit-b32", weights="random", finetune="adapters", vision_layers=2, width=64, heads=2,
                   patch_size=8, image_size=32, text_layers=1, text_width=32, text_heads=2)  # tiny test build

``weights=None`` means the official hub id of the backbone. Real weights come with their ``CLIPTokenizer``
(from the same folder or hub id). With ``weights="random"`` no tokenizer files exist offline, so
:class:`HashTokenizer` stands in: a deterministic word-hashing tokenizer with CLIP's layout
(start token, word ids, end-of-text token, zero padding to 77). Its ids carry no meaning for a trained
model; it only exercises the real code path.

Fine-tuning modes (``finetune=``):
    * ``frozen``: nothing trains (features can be cached).
    * ``full``: the whole visual tower (embeddings, blocks, post-LN, visual projection) trains.
    * ``adapters``: MA-FSAR's FgMA (:mod:`fsar.encoders.fgma`) trains; every CLIP weight stays frozen.
The text tower is frozen in every mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from fsar.encoders import ENCODERS
from fsar.encoders.base import Encoder
from fsar.encoders.fgma import FgMA, FgMAConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77
TEXT_BATCH = 256  # texts per text-tower forward in encode_text
FINETUNE_MODES = ("frozen", "full", "adapters")
HUB_IDS = {
    "clip-vit-b32": "openai/clip-vit-base-patch32",
    "clip-vit-b16": "openai/clip-vit-base-patch16",
}
PATCH_SIZES = {"clip-vit-b32": 32, "clip-vit-b16": 16}


class ClipWeightsError(ValueError):
    """CLIP weights could not be found or loaded."""


@dataclass(frozen=True)
class ClipArchitecture:
    """Sizes of a CLIP ViT model; the defaults are OpenAI's ViT-B/32 (openai/clip-vit-base-patch32).

    ``mlp_dim`` / ``text_mlp_dim`` of None mean 4x the width, as in CLIP.
    """

    patch_size: int = 32
    image_size: int = 224
    width: int = 768
    vision_layers: int = 12
    heads: int = 12
    mlp_dim: int | None = None
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp_dim: int | None = None
    vocab_size: int = 49408
    context_length: int = CONTEXT_LENGTH
    projection_dim: int = 512

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ClipArchitecture: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads or self.text_width % self.text_heads:
            raise ValueError("ClipArchitecture: width must be divisible by heads (vision and text)")
        if self.vocab_size < 4:
            raise ValueError(f"ClipArchitecture: vocab_size must be >= 4, got {self.vocab_size}")

    def to_hf_config(self):
        """The matching ``transformers.CLIPConfig`` (quick_gelu, SDPA attention)."""
        from transformers import CLIPConfig

        config = CLIPConfig(
            text_config=dict(
                hidden_size=self.text_width,
                intermediate_size=self.text_mlp_dim or 4 * self.text_width,
                num_hidden_layers=self.text_layers,
                num_attention_heads=self.text_heads,
                vocab_size=self.vocab_size,
                max_position_embeddings=self.context_length,
                hidden_act="quick_gelu",
                # HashTokenizer's layout: the last two ids are start / end of text, like CLIP's BPE vocab.
                bos_token_id=self.vocab_size - 2,
                eos_token_id=self.vocab_size - 1,
                pad_token_id=0,
                projection_dim=self.projection_dim,
            ),
            vision_config=dict(
                hidden_size=self.width,
                intermediate_size=self.mlp_dim or 4 * self.width,
                num_hidden_layers=self.vision_layers,
                num_attention_heads=self.heads,
                patch_size=self.patch_size,
                image_size=self.image_size,
                hidden_act="quick_gelu",
                projection_dim=self.projection_dim,
            ),
            projection_dim=self.projection_dim,
        )
        config._attn_implementation = "sdpa"
        return config


class _QuickGELUFunction(torch.autograd.Function):
    """``x * sigmoid(1.702 x)`` saving only ``x`` for backward (the sigmoid is recomputed).

    HF's ``QuickGELUActivation`` saves both the (N+1, 3072) input and its sigmoid in every block; this halves
    that, the largest activation of a CLIP block, at the cost of one extra sigmoid in backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sigmoid(1.702 * x).mul_(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(1.702 * x)
        return grad * sig * (1.0 + 1.702 * x * (1.0 - sig))


class MemoryEfficientQuickGELU(nn.Module):
    """Drop-in for HF's ``QuickGELUActivation`` (same values) with lower activation memory in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuickGELUFunction.apply(x)


class HashTokenizer:
    """Offline stand-in for ``CLIPTokenizer`` when CLIP has random weights (no tokenizer files here).

    Lower-cases, splits into words and punctuation, maps each piece to ``1 + hash % (vocab - 3)`` with a
    fixed hash (blake2b, stable across processes), and lays ids out like CLIP: start id (vocab-2), words,
    end-of-text id (vocab-1, the largest id), zero padding to ``context_length``. Long texts are cut so
    the end-of-text id is always present.
    """

    _WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

    def __init__(self, vocab_size: int, context_length: int = CONTEXT_LENGTH) -> None:
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.bos_id = vocab_size - 2
        self.eot_id = vocab_size - 1

    def token_id(self, piece: str) -> int:
        digest = hashlib.blake2b(piece.encode("utf-8"), digest_size=8).digest()
        return 1 + int.from_bytes(digest, "little") % (self.vocab_size - 3)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids (N, context_length) long, attention_mask (N, context_length) long."""
        ids = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, text in enumerate(texts):
            pieces = self._WORDS.findall(text.lower())[: self.context_length - 2]
            seq = [self.bos_id, *(self.token_id(p) for p in pieces), self.eot_id]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return ids, mask


def _hf_tokenizer(source: str) -> Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(source)

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = tokenizer(
            texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt"
        )
        return batch["input_ids"], batch["attention_mask"]

    return tokenize


def _looks_like_path(weights: str) -> bool:
    """Hub ids are ``owner/name``; anything else with a path shape is meant as a local folder."""
    return (
        weights.startswith(("/", ".", "~"))
        or "\\" in weights
        or weights.count("/") != 1
        or Path(weights).expanduser().exists()
    )


def _weights_help(name: str) -> str:
    return (
        f"pass weights= a local folder holding a Hugging Face CLIP checkpoint (config.json, model weights, "
        f"tokenizer files), or a hub id such as {HUB_IDS[name]!r} (downloaded once, needs network), "
        f"or 'random' for the exact architecture with random weights (tests, benchmarks)"
    )


def load_pretrained_clip(name: str, weights: str):
    """Load ``(CLIPModel, tokenizer)`` from a local folder or a hub id; :class:`ClipWeightsError` if not possible."""
    from transformers import CLIPModel

    if _looks_like_path(weights):
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise ClipWeightsError(
                f"{name}: CLIP weights folder {str(folder)!r} does not exist or is not a folder; "
                + _weights_help(name)
            )
        source = str(folder)
    else:
        source = weights
    try:
        model = CLIPModel.from_pretrained(source, attn_implementation="sdpa")
        tokenizer = _hf_tokenizer(source)
    except Exception as error:  # hub/network/format errors of many kinds: one clear message
        raise ClipWeightsError(
            f"{name}: could not load CLIP weights from {source!r} ({type(error).__name__}: {error}); "
            + _weights_help(name)
        ) from error
    patch = model.config.vision_config.patch_size
    if patch != PATCH_SIZES[name]:
        raise ClipWeightsError(
            f"{name}: weights {source!r} are a patch-{patch} CLIP, but {name} needs patch {PATCH_SIZES[name]}"
        )
    return model, tokenizer


def checkpoint_files(source: str) -> tuple[Path, ...]:
    """The weight files ``CLIPModel.from_pretrained(source)`` read: a folder's (or the hub cache
    snapshot's) ``*.safetensors``, else its ``*.bin``; ``()`` when they cannot be located (the
    weights fingerprint then samples the tensors alone)."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        try:
            from transformers.utils import cached_file

            resolved = None
            for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
                resolved = cached_file(source, name, local_files_only=True, _raise_exceptions_for_missing_entries=False)
                if resolved:
                    break
        except Exception:  # no cache entry, an offline hub error ...: fingerprint without files
            return ()
        if not resolved:
            return ()
        folder = Path(resolved).parent
    for pattern in ("*.safetensors", "*.bin"):
        files = tuple(sorted(p for p in folder.glob(pattern) if p.is_file()))
        if files:
            return files
    return ()


def build_random_clip(architecture: ClipArchitecture, *, seed: int | None = 0, config=None):
    """``(CLIPModel, HashTokenizer)`` with random weights; deterministic for a given ``seed``.

    ``config`` (a ``transformers.CLIPConfig``) overrides ``architecture`` entirely.
    """
    from transformers import CLIPModel

    if config is None:
        config = architecture.to_hf_config()
    else:
        config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = CLIPModel(config)
    tokenizer = HashTokenizer(config.text_config.vocab_size, config.text_config.max_position_embeddings)
    return model, tokenizer


class ClipEncoder(Encoder):
    """CLIP frame and text encoder for fsar; see the module docstring for weights and modes.

    ``encode_frames`` returns, per frame, the class token after the last block, post-LayerNorm and the
    visual projection (B, T, 512). ``encode_text`` returns the projected end-of-text embedding (N, 512)
    of the frozen text tower. In ``adapters`` mode the support branch passes the clips' class-text features
    to ``encode_frames`` (LMA); queries pass none.

    Streams (feature cache): ``features`` (B, T, 512) only; no extra clip or class streams, empty ``stream_key``.

    Attributes beyond :class:`Encoder`: ``clip`` (the HF ``CLIPModel``), ``fgma`` (:class:`FgMA` or None),
    ``finetune``, ``gradient_checkpointing`` (recompute each block in backward; saves activation memory),
    ``logit_scale_init`` (CLIP's learned softmax temperature, exp(logit_scale)).
    """

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module,
        tokenizer: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
        finetune: str = "frozen",
        fgma: FgMAConfig | None = None,
        gradient_checkpointing: bool = False,
        weight_files: tuple[Path, ...] = (),
    ) -> None:
        super().__init__()
        self._weight_files = tuple(Path(p) for p in weight_files)
        if finetune not in FINETUNE_MODES:
            raise ValueError(f"ClipEncoder: finetune must be one of {FINETUNE_MODES}, got {finetune!r}")
        if fgma is not None and finetune != "adapters":
            raise ValueError(f"ClipEncoder: FgMA options need finetune='adapters', got finetune={finetune!r}")
        self.clip = model
        self.tokenizer = tokenizer
        self.finetune = finetune
        self.gradient_checkpointing = gradient_checkpointing
        vision = model.config.vision_config

        self.name = name
        self.feature_dim = model.config.projection_dim
        self.text_dim = model.config.projection_dim
        self.image_size = vision.image_size
        self.mean = CLIP_MEAN
        self.std = CLIP_STD
        self.shared_space = True
        self.logit_scale_init = float(model.logit_scale.detach().exp())

        for layer in model.vision_model.encoder.layers:
            if type(layer.mlp.activation_fn).__name__ == "QuickGELUActivation":
                layer.mlp.activation_fn = MemoryEfficientQuickGELU()

        model.requires_grad_(False)
        if finetune == "full":
            model.vision_model.requires_grad_(True)
            model.visual_projection.requires_grad_(True)
        self.fgma: FgMA | None = None
        if finetune == "adapters":
            self.fgma = FgMA(
                width=vision.hidden_size,
                text_dim=self.text_dim,
                num_layers=vision.num_hidden_layers,
                config=fgma or FgMAConfig(),
            )

    def weight_files(self) -> tuple[Path, ...]:
        """The checkpoint files the CLIP weights were loaded from; ``()`` for random weights."""
        return self._weight_files

    # -- text ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``texts`` -> projected end-of-text embeddings (N, 512) of the frozen text tower."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{type(self).__name__}.encode_text expects a list of strings, got {texts!r:.80}")
        device = self.clip.logit_scale.device
        if not texts:
            return torch.zeros(0, self.text_dim, device=device)
        input_ids, attention_mask = self.tokenizer(list(texts))
        chunks = []
        for start in range(0, len(texts), TEXT_BATCH):  # bounded memory for long prompt lists
            out = self.clip.text_model(
                input_ids=input_ids[start : start + TEXT_BATCH].to(device),
                attention_mask=attention_mask[start : start + TEXT_BATCH].to(device),
            )
            chunks.append(self.clip.text_projection(out.pooler_output))
        return torch.cat(chunks)

    # -- frames -------------------------------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor, text_features: torch.Tensor | None) -> None:
        cls = type(self).__name__
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"{cls}.encode_frames expects frames (B, T, 3, H, W), got {tuple(frames.shape)}")
        if frames.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"{cls} ({self.name}) expects {self.image_size}x{self.image_size} frames, "
                f"got {tuple(frames.shape[-2:])}"
            )
        if text_features is not None and (
            text_features.dim() != 2 or text_features.shape != (frames.shape[0], self.text_dim)
        ):
            raise ValueError(
                f"{cls}.encode_frames: text_features must be (B={frames.shape[0]}, {self.text_dim}), "
                f"got {tuple(text_features.shape)}"
            )

    def encode_frames(self, frames: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """``frames`` (B, T, 3, H, W), CLIP-normalised -> per-frame features (B, T, 512).

        ``text_features`` (B, 512): the support clips' class-text features, used by LMA in ``adapters``
        mode (ignored otherwise, and when ``lma`` is off). Query clips pass None.
        """
        self._check_frames(frames, text_features)
        batch, num_frames = frames.shape[:2]
        vision = self.clip.vision_model
        pixels = frames.reshape(batch * num_frames, *frames.shape[2:])
        hidden = vision.pre_layrnorm(vision.embeddings(pixels))  # (B*T, N+1, D)

        text_token = None
        if self.fgma is not None:
            text_token = self.fgma.text_token(text_features, num_frames)

        use_checkpoint = self.gradient_checkpointing and torch.is_grad_enabled()
        for index, layer in enumerate(vision.encoder.layers):
            if self.fgma is None:
                step: Callable[..., torch.Tensor] = self._plain_block
                args: tuple[Any, ...] = (layer, hidden)
            else:
                step = self._adapted_block
                args = (index, layer, hidden, num_frames, text_token)
            hidden = checkpoint(step, *args, use_reentrant=False) if use_checkpoint else step(*args)

        cls_tokens = vision.post_layernorm(hidden[:, 0, :])
        return self.clip.visual_projection(cls_tokens).reshape(batch, num_frames, -1)

    @staticmethod
    def _plain_block(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return layer(hidden, None)

    def _adapted_block(
        self, index: int, layer: nn.Module, hidden: torch.Tensor, num_frames: int, text_token: torch.Tensor | None
    ) -> torch.Tensor:
        return self.fgma.block(index, layer, hidden, num_frames=num_frames, text_token=text_token)


_ARCH_FIELDS = {f.name for f in dataclasses.fields(ClipArchitecture)}
_FGMA_FIELDS = {f.name for f in dataclasses.fields(FgMAConfig)}


def build_clip_encoder(
    name: str,
    *,
    weights: str | None = None,
    finetune: str = "frozen",
    config=None,
    seed: int | None = 0,
    gradient_checkpointing: bool = False,
    **options: Any,
) -> ClipEncoder:
    """Build ``clip-vit-b32`` / ``clip-vit-b16``.

    Args:
        weights: local folder, hub id, ``"random"``, or None (the official hub id).
        finetune: ``frozen`` | ``full`` | ``adapters``.
        config: a ``transformers.CLIPConfig`` to build with random weights (overrides size options).
        seed: RNG seed of the random weights (``weights="random"``); None = torch's global RNG.
        gradient_checkpointing: recompute blocks in backward (less memory, ~1/3 more compute).
        options: architecture sizes for random builds (:class:`ClipArchitecture` fields:
            ``vision_layers``, ``width``, ``heads``, ``mlp_dim``, ``patch_size``, ``image_size``,
            ``text_layers``, ``text_width``, ``text_heads``, ``text_mlp_dim``, ``vocab_size``,
            ``projection_dim``) and FgMA switches (:class:`FgMAConfig` fields: ``gta``, ``lsta``, ``lma``,
            ``ja``, ``gta_adapters_per_layer``, ``bottleneck_ratio``, ``ja_scale``,
            ``mask_appended_tokens``; only with ``finetune="adapters"``).
    """
    unknown = set(options) - _ARCH_FIELDS - _FGMA_FIELDS
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {sorted(unknown)}; known: {sorted(_ARCH_FIELDS | _FGMA_FIELDS)}"
        )
    arch_options = {k: v for k, v in options.items() if k in _ARCH_FIELDS}
    fgma_options = {k: v for k, v in options.items() if k in _FGMA_FIELDS}
    if fgma_options and finetune != "adapters":
        raise ValueError(f"{name}: FgMA options {sorted(fgma_options)} need finetune='adapters'")
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"{name}: finetune must be one of {FINETUNE_MODES}, got {finetune!r}")

    fgma = FgMAConfig(**fgma_options) if finetune == "adapters" else None  # validate before the slow build
    if weights == "random":
        architecture = ClipArchitecture(**{"patch_size": PATCH_SIZES[name], **arch_options})
        model, tokenizer = build_random_clip(architecture, seed=seed, config=config)
    else:
        if arch_options or config is not None:
            raise ValueError(
                f"{name}: architecture options {sorted(arch_options) or ['config']} only apply to "
                f"weights='random'; pretrained weights bring their own config"
            )
        model, tokenizer = load_pretrained_clip(name, weights or HUB_IDS[name])
    files = () if weights == "random" else checkpoint_files(weights or HUB_IDS[name])
    return ClipEncoder(
        name=name,
        model=model,
        tokenizer=tokenizer,
        finetune=finetune,
        fgma=fgma,
        gradient_checkpointing=gradient_checkpointing,
        weight_files=files,
    )


@ENCODERS.register("clip-vit-b32")
def clip_vit_b32(**options: Any) -> ClipEncoder:
    """OpenAI CLIP ViT-B/32 (MA-FSAR's ablation backbone); see :func:`build_clip_encoder`."""
    return build_clip_encoder("clip-vit-b32", **options)


@ENCODERS.register("clip-vit-b16")
def clip_vit_b16(**options: Any) -> ClipEncoder:
    """OpenAI CLIP ViT-B/16 (MA-FSAR's main-results backbone); see :func:`build_clip_encoder`."""
    return build_clip_encoder("clip-vit-b16", **options)
