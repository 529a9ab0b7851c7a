"""Training-free baselines: frozen encoder + metric, and the zero-shot text matcher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fsar
from fsar.data.inputs import EpisodeInputs
from fsar.metrics import build
from methods_toys import TINY_CLIP, features_episode, frames_episode, shared_embedded_pair, shared_frozen_clip

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name", ["proto", "otam", "bimhm"])
def test_metric_baselines_are_the_metric_on_frozen_features(name):
    encoder = shared_frozen_clip()
    method = fsar.create_method(name, backbone=encoder)
    assert method.trainable is False and method.trainable_state_dict() == {}
    assert method.config.metric == name and method.backbone_name == "clip-vit-b32"
    episode = frames_episode(way=3, shot=2, queries=2, seed=7)
    method.train()  # nothing trains: still no loss
    out = method(episode)
    assert out.loss is None and out.log_probs.shape == (6, 3)
    with torch.no_grad():
        support, query = encoder.encode_frames(episode.support), encoder.encode_frames(episode.query)
    expected = build(name)(support, episode.support_labels, query, 3)
    torch.testing.assert_close(out.log_probs, F.log_softmax(expected, dim=-1))
    cached = EpisodeInputs(support, episode.support_labels, query, episode.class_names, features=True)
    torch.testing.assert_close(method(cached).log_probs, out.log_probs)


def test_metric_choice_and_trainable_backbones_rejected():
    otam = fsar.create_method("otam", backbone=shared_frozen_clip(), metric="otam_plain")
    assert otam.config.metric == "otam_plain"
    with pytest.raises(ValueError, match="finetune='frozen'"):
        fsar.create_method("proto", backbone="clip-vit-b32", weights="random", encoder_options=TINY_CLIP,
                           finetune="adapters")


def test_zero_shot_matches_query_clips_to_the_template_mean_texts():
    encoder = shared_frozen_clip()
    method = fsar.create_method("zero-shot", backbone=encoder, logit_scale=50.0)
    episode = features_episode(dim=32, way=4, queries=2, seed=1)
    out = method(episode)
    texts = method.text_bank.features(episode.class_names, train=False)
    expected = 50.0 * F.normalize(episode.query.mean(1), dim=-1) @ F.normalize(texts, dim=-1).T
    torch.testing.assert_close(out.log_probs, F.log_softmax(expected, dim=-1))
    # the support set plays no part
    other = EpisodeInputs(torch.randn_like(episode.support), episode.support_labels, episode.query,
                          episode.class_names, features=True)
    torch.testing.assert_close(method(other).log_probs, out.log_probs)
    assert method.trainable is False


def test_zero_shot_is_undefined_without_a_shared_space():
    with pytest.raises(ValueError, match="no shared video-text space"):
        fsar.create_method("zero-shot", backbone=shared_embedded_pair())


@pytest.mark.parametrize("name", ["proto", "otam", "bimhm"])
def test_metric_baselines_run_on_the_embedded_pair(name):
    method = fsar.create_method(name, backbone=shared_embedded_pair())
    out = method(features_episode(dim=1280, way=2, shot=2, queries=1))
    assert out.log_probs.shape == (2, 2)
