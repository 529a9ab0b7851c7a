"""The text side shared by the multimodal methods: class texts of an episode, the common
embedding space of video and text, and the cosine video-text logits.

* Class texts come from :class:`fsar.encoders.prompts.ClassTextBank`. In training every
  support clip draws one random prompt template (MA-FSAR §4.3.8); the one draw per clip
  feeds all uses of that clip's text (the FgMA text token, TPCM, the losses). At
  evaluation every class uses the mean of the 16 template embeddings.
* For CLIP (``shared_space``) frame and text features already live in one 512-d space.
  For the embedded pair (EfficientNet 1280-d frames, MiniLM 384-d text) there is no
  shared space, so :class:`TextSpace` learns a visual and a text projection into
  ``embed_dim``; all text-aware parts (TPCM, the text branch) work in that space.
* **Base-feature centring** (fsar's own, in the spirit of SimpleShot's CL2N): with the
  training-free start, :class:`TextSpace` can subtract from every frame the mean frame feature
  of the meta-training clips (on the encoder's features, before any trained module), a
  statistic of the base classes that carries over to new ones.
  It is a buffer estimated once, before the first optimiser step, from training episodes only
  (:meth:`TextSpace.estimate_frame_mean`, called by the engine through
  :meth:`fsar.methods.base.FewShotMethod.prepare_training`), then fixed; it starts at zero, so
  an un-prepared method is exactly its training-free metric on the raw features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fsar.encoders.base import Encoder

__all__ = ["EpisodeText", "TextSpace", "cosine_logits", "episode_text", "text_bank_for"]


@dataclass
class EpisodeText:
    """Raw (encoder-space) text features of one episode.

    per_clip: (n_support, D_text), the text of each support clip's class.
    per_class: (way, D_text), one vector per episode class (the C-way text classifier).
    """

    per_clip: torch.Tensor
    per_class: torch.Tensor


def text_bank_for(encoder: Encoder):
    """A :class:`ClassTextBank` over ``encoder`` (imported lazily: the prompts module
    belongs to the encoders layer)."""
    from fsar.encoders.prompts import ClassTextBank

    return ClassTextBank(encoder)


def episode_text(
    bank,
    class_names: list[str],
    support_labels: torch.Tensor,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> EpisodeText:
    """Class texts for an episode.

    Training: one random template per support clip (``per_clip``); the class vector
    ``per_class[m]`` is the mean of the draws of class m's K support clips, so for
    1-shot it is exactly that clip's draw (one draw shared by every use). Evaluation:
    ``per_class`` is the 16-template mean of each class and ``per_clip`` indexes it.
    """
    way = len(class_names)
    labels = support_labels.tolist()
    if train:
        per_clip = bank.features([class_names[c] for c in labels], train=True, generator=generator)
        per_clip = per_clip.detach().float()
        one_hot = F.one_hot(support_labels.to(per_clip.device), way).to(per_clip.dtype)
        per_class = (one_hot.T @ per_clip) / one_hot.sum(0, keepdim=True).T
    else:
        per_class = bank.features(list(class_names), train=False).detach().float()
        per_clip = per_class[support_labels.to(per_class.device)]
    return EpisodeText(per_clip=per_clip, per_class=per_class)


def cosine_logits(video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``scale · cos(video_i, text_m)``: video (n, D), text (C, D) -> logits (n, C) (eqs. 14/15)."""
    return scale * (F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T)


class TextSpace(nn.Module):
    """Puts frame features and text features into one space of width :attr:`dim`.

    Shared space (CLIP): identities, ``dim = feature_dim`` (= text_dim). Otherwise, with
    ``start="standard"``, a learned ``Linear(feature_dim, embed_dim)`` for frames and
    ``Linear(text_dim, embed_dim)`` for texts (default initialisation). With
    ``start="training-free"`` (fsar's start from the training-free core) the frames stay as
    they are (identity, ``dim = feature_dim``), and the text map ``Linear(text_dim,
    feature_dim)`` starts with zero weights and a constant bias: every class text lands on
    the same vector, so the untrained video-text logits are equal for all classes (a uniform
    p_Q2T that cannot change any prediction) while the weights still receive gradients.

    ``base_centring`` (training-free start only): frames become ``x - frame_mean``, with
    ``frame_mean`` (feature_dim,) a buffer of zeros until :meth:`estimate_frame_mean` sets it
    from training clips (on a grid backbone the flattened features are cells x channels, so it
    is one mean per cell and channel). ``frame_count`` records how many frames it averages (0:
    not estimated). Both are listed in :attr:`learned_buffers`, so checkpoints store them.
    """

    STARTS = ("standard", "training-free")

    def __init__(
        self, *, feature_dim: int, text_dim: int, shared_space: bool, embed_dim: int, start: str = "standard",
        base_centring: bool = False,
    ) -> None:
        super().__init__()
        if start not in self.STARTS:
            raise ValueError(f"TextSpace: start must be one of {self.STARTS}, got {start!r}")
        self.shared_space = shared_space
        self.start = start
        if shared_space:
            if feature_dim != text_dim:
                raise ValueError(
                    f"TextSpace: a shared-space encoder must give frame and text features of one "
                    f"width, got {feature_dim} and {text_dim}"
                )
            self.visual_proj: nn.Module = nn.Identity()
            self.text_proj: nn.Module = nn.Identity()
            self.dim = feature_dim
        elif start == "training-free":
            self.visual_proj = nn.Identity()
            self.text_proj = nn.Linear(text_dim, feature_dim)
            nn.init.zeros_(self.text_proj.weight)
            nn.init.constant_(self.text_proj.bias, feature_dim ** -0.5)
            self.dim = feature_dim
        else:
            if embed_dim < 1:
                raise ValueError(f"TextSpace: embed_dim must be positive, got {embed_dim}")
            self.visual_proj = nn.Linear(feature_dim, embed_dim)
            self.text_proj = nn.Linear(text_dim, embed_dim)
            self.dim = embed_dim
        #: buffers that training sets and a checkpoint must store (FewShotMethod.trainable_state_dict)
        self.learned_buffers: tuple[str, ...] = ()
        self.feature_dim = feature_dim
        if base_centring and (shared_space or start != "training-free"):
            raise ValueError("TextSpace: base_centring needs the training-free start on an encoder without a shared space")
        if base_centring:
            self.register_buffer("frame_mean", torch.zeros(feature_dim))
            self.register_buffer("frame_count", torch.zeros((), dtype=torch.float64))
            self.learned_buffers = ("frame_mean", "frame_count")

    @property
    def centres(self) -> bool:
        """Whether frames are centred on the base-class mean (``base_centring``)."""
        return bool(self.learned_buffers)

    @property
    def frame_mean_estimated(self) -> bool:
        return self.centres and float(self.frame_count) > 0

    def centre(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features (..., feature_dim) minus ``frame_mean`` (unchanged without centring)."""
        if self.centres:
            return features - self.frame_mean.to(features.dtype)
        return features

    def frames(self, features: torch.Tensor, *, centred: bool = False) -> torch.Tensor:
        """Encoder features (n, T, feature_dim) -> (n, T, dim), centred first unless ``centred``
        says a method already did (one with a module between the encoder and the space: the
        mean is a statistic of the encoder's features, so it is removed before any module)."""
        if not centred:
            features = self.centre(features)
        return self.visual_proj(features)

    @torch.no_grad()
    def estimate_frame_mean(
        self, clips: Iterable[torch.Tensor], *, reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> int:
        """Set ``frame_mean`` to the mean frame of ``clips`` (each (n, T, feature_dim), the
        encoder's features) and return how many frames it averages.

        Only in training mode, so that evaluation episodes cannot set it by mistake: callers
        hand it training clips (the engine: the run's own first training episodes).
        ``reduce_sum`` sums a float64 tensor over processes (distributed training: every rank
        then holds the same mean). Computed in float64.
        """
        if not self.centres:
            raise RuntimeError("TextSpace: built without base_centring, it has no frame mean to estimate")
        if not self.training:
            raise RuntimeError("TextSpace: the frame mean is estimated from training clips only (call in training mode)")
        total = torch.zeros(self.feature_dim + 1, dtype=torch.float64, device=self.frame_mean.device)
        for clip in clips:
            if clip.dim() != 3 or clip.shape[-1] != self.feature_dim:
                raise ValueError(
                    f"TextSpace: clips must be (n, T, {self.feature_dim}), got {tuple(clip.shape)}"
                )
            rows = clip.detach().reshape(-1, self.feature_dim).to(total.device, torch.float64)
            total[:-1] += rows.sum(0)
            total[-1] += rows.shape[0]
        if reduce_sum is not None:
            total = reduce_sum(total)
        count = float(total[-1])
        if count <= 0:
            raise ValueError("TextSpace: no training frames to estimate the frame mean from")
        self.frame_mean.copy_((total[:-1] / count).to(self.frame_mean.dtype))
        self.frame_count.fill_(count)
        return int(count)

    def text(self, features: torch.Tensor) -> torch.Tensor:
        """(n, text_dim) -> (n, dim)."""
        return self.text_proj(features.to(self._dtype(features)))

    def _dtype(self, features: torch.Tensor) -> torch.dtype:
        if isinstance(self.text_proj, nn.Linear):
            return self.text_proj.weight.dtype
        return features.dtype
