"""Episode class texts (random template per clip in training, 16-template mean at evaluation)
and the common video-text space."""

from __future__ import annotations

import pytest
import torch

from fsar.encoders.prompts import TEMPLATES, ClassTextBank
from fsar.methods.text_side import TextSpace, cosine_logits, episode_text
from methods_toys import ToyEncoder

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def bank():
    return ClassTextBank(ToyEncoder(text_dim=8))


def test_training_draws_one_template_per_clip_and_class_vectors_average_them(bank):
    names = ["waving hand", "opening door"]
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    text = episode_text(bank, names, labels, train=True, generator=torch.Generator().manual_seed(0))
    assert text.per_clip.shape == (6, 8) and text.per_class.shape == (2, 8)
    per_template = bank.template_features(names)  # (2, 16, 8)
    assert per_template.shape[1] == len(TEMPLATES)
    for row, label in zip(text.per_clip, labels.tolist()):
        assert torch.isclose(per_template[label], row).all(-1).any()  # one of that class's templates
    torch.testing.assert_close(text.per_class[0], text.per_clip[:3].mean(0))
    torch.testing.assert_close(text.per_class[1], text.per_clip[3:].mean(0))


def test_one_shot_training_shares_the_draw_between_clip_and_class(bank):
    text = episode_text(bank, ["a", "b", "c"], torch.tensor([2, 0, 1]), train=True)
    torch.testing.assert_close(text.per_class[torch.tensor([2, 0, 1])], text.per_clip)


def test_evaluation_uses_the_template_mean(bank):
    names = ["waving hand", "opening door"]
    labels = torch.tensor([1, 0, 1])
    text = episode_text(bank, names, labels, train=False)
    torch.testing.assert_close(text.per_class, bank.template_features(names).mean(1))
    torch.testing.assert_close(text.per_clip, text.per_class[labels])


def test_text_space_identity_for_shared_space_and_projections_otherwise():
    shared = TextSpace(feature_dim=32, text_dim=32, shared_space=True, embed_dim=512)
    x = torch.randn(2, 4, 32)
    assert shared.dim == 32 and shared.frames(x) is x
    assert not list(shared.parameters())
    learned = TextSpace(feature_dim=1280, text_dim=384, shared_space=False, embed_dim=64)
    assert learned.dim == 64
    assert learned.frames(torch.randn(2, 4, 1280)).shape == (2, 4, 64)
    assert learned.text(torch.randn(3, 384)).shape == (3, 64)
    with pytest.raises(ValueError, match="one width"):
        TextSpace(feature_dim=32, text_dim=16, shared_space=True, embed_dim=8)


def test_cosine_logits_are_scaled_cosines():
    video, text = torch.randn(3, 5), torch.randn(4, 5)
    logits = cosine_logits(video, text, 10.0)
    expected = 10.0 * torch.nn.functional.cosine_similarity(video[:, None], text[None], dim=-1)
    torch.testing.assert_close(logits, expected)
