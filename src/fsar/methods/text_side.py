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
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    STARTS = ("standard", "training-free")

    def __init__(
        self, *, feature_dim: int, text_dim: int, shared_space: bool, embed_dim: int, start: str = "standard"
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

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        """(n, T, feature_dim) -> (n, T, dim)."""
        return self.visual_proj(features)

    def text(self, features: torch.Tensor) -> torch.Tensor:
        """(n, text_dim) -> (n, dim)."""
        return self.text_proj(features.to(self._dtype(features)))

    def _dtype(self, features: torch.Tensor) -> torch.dtype:
        if isinstance(self.text_proj, nn.Linear):
            return self.text_proj.weight.dtype
        return features.dtype
