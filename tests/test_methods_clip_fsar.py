"""CLIP-FSAR: full fine-tuning, prototype modulation, OTAM, classification loss over training classes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

import fsar
from fsar.data.inputs import EpisodeInputs
from methods_toys import (
    CLASSES,
    TINY_CLIP,
    TINY_MODULATION,
    features_episode,
    frames_episode,
    shared_embedded_pair,
    shared_frozen_clip,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _clip_fsar(**options):
    options = {**TINY_MODULATION, **options}
    backbone = options.pop("backbone", "clip-vit-b32")
    if isinstance(backbone, str):
        options.setdefault("weights", "random")
        options.setdefault("encoder_options", TINY_CLIP)
    return fsar.create_method("clip-fsar", backbone=backbone, **options)


@pytest.fixture(scope="module")
def full_ft():
    torch.manual_seed(0)
    method = _clip_fsar()
    method.set_training_classes(CLASSES)
    return method


def test_shapes_prediction_is_the_metric_branch_and_config(full_ft):
    full_ft.train()
    out = full_ft(frames_episode(way=3, shot=2))
    assert out.log_probs.shape == (6, 3)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(6))
    torch.testing.assert_close(out.log_probs, out.parts["log_p_q2s"])
    torch.testing.assert_close(out.loss, out.parts["loss_q2s"] + out.parts["loss_classification"])
    cfg = dataclasses.asdict(full_ft.config)
    json.dumps(cfg)
    assert cfg["finetune"] == "full" and cfg["metric"] == "otam_clipfsar"


def test_full_fine_tuning_trains_the_visual_tower_not_the_text_tower(full_ft):
    full_ft.train()
    full_ft.zero_grad(set_to_none=True)
    full_ft(frames_episode(seed=1)).loss.backward()
    grads = dict(full_ft.named_parameters())
    vision = [p for n, p in grads.items() if n.startswith("encoder.clip.vision_model.")]
    text = [p for n, p in grads.items() if n.startswith("encoder.clip.text_model.")]
    assert vision and any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)
    assert text and all(p.grad is None for p in text)
    assert any(p.grad is not None for p in full_ft.modulation.parameters())
    keys = full_ft.trainable_state_dict()
    assert any(k.startswith("encoder.clip.vision_model.") for k in keys)
    assert not any(k.startswith("encoder.clip.text_model.") for k in keys)


def test_classification_loss_is_ce_over_all_training_class_texts():
    encoder = shared_frozen_clip()
    method = _clip_fsar(backbone=encoder, modulation_dropout=0.0, classification_weight=2.0)
    method.set_training_classes(CLASSES)
    method.train()
    episode = features_episode(dim=32, way=3, shot=1, queries=1, names=[CLASSES[4], CLASSES[1], CLASSES[2]])
    out = method(episode)
    texts = method.text_bank.features(CLASSES, train=False)  # 16-template means
    video = torch.cat([episode.support.mean(1), episode.query.mean(1)])
    logits = method.logit_scale() * F.normalize(video, dim=-1) @ F.normalize(texts, dim=-1).T
    expected = F.cross_entropy(logits, torch.tensor([4, 1, 2, 4, 1, 2]))
    torch.testing.assert_close(out.parts["loss_classification"], expected)
    torch.testing.assert_close(out.loss, out.parts["loss_q2s"] + 2.0 * expected)


def test_training_classes_are_required_and_checked():
    method = _clip_fsar(backbone=shared_frozen_clip()).train()
    episode = features_episode(dim=32)
    with pytest.raises(ValueError, match="set_training_classes"):
        method(episode)
    method.set_training_classes(["something else", "another"])
    with pytest.raises(ValueError, match="not among the training classes"):
        method(episode)
    with pytest.raises(ValueError, match="duplicate"):
        method.set_training_classes(["a", "a"])
    # evaluation needs no training classes; classification_weight=0 turns the loss off
    method.eval()
    assert method(episode).loss is None
    off = _clip_fsar(backbone=shared_frozen_clip(), classification_weight=0.0).train()
    out = off(episode)
    torch.testing.assert_close(out.loss, out.parts["loss_q2s"])


def test_malformed_episodes_raise_value_errors():
    method = _clip_fsar(backbone=shared_frozen_clip())
    good = features_episode(dim=32)
    bad = EpisodeInputs(good.support, torch.tensor([0, 1, 5]), good.query, good.class_names, features=True)
    with pytest.raises(ValueError, match="clip-fsar: support_labels"):
        method(bad)


def test_queries_never_see_text():
    method = _clip_fsar(backbone=shared_frozen_clip()).eval()
    calls = []
    hook = method.modulation.register_forward_hook(lambda m, args, out: calls.append(out))
    try:
        base = features_episode(dim=32, seed=2)
        method(base)
        method(EpisodeInputs(base.support, torch.tensor([1, 2, 0]), base.query, ["x y", "z w", "u v"], features=True))
    finally:
        hook.remove()
    support_a, query_a, support_b, query_b = calls
    torch.testing.assert_close(query_a, query_b)
    assert not torch.allclose(support_a, support_b)


def test_cached_features_only_with_a_frozen_encoder(full_ft):
    with pytest.raises(ValueError, match="frozen encoder"):
        full_ft(features_episode(dim=32))


def test_embedded_pair_standard_start_learns_projections():
    method = _clip_fsar(backbone=shared_embedded_pair(), embed_dim=64, training_classes=CLASSES, start="standard")
    assert method.config.finetune == "frozen" and method.space.dim == 64
    method.train()
    out = method(features_episode(dim=1280, way=2, queries=1))
    out.loss.backward()
    assert method.space.visual_proj.weight.grad is not None
    assert method.space.text_proj.weight.grad is not None  # via the classification loss and modulation
    assert all(not k.startswith("encoder.") for k in method.trainable_state_dict())
