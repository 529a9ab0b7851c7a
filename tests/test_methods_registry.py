"""The methods registry: every method of this package builds and runs on every backbone."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import fsar
from fsar.methods import create_method, list_methods
from methods_toys import single_thread  # noqa: F401  (autouse fixture)
from methods_toys import CLASSES, TINY_CLIP, features_episode, frames_episode, shared_embedded_pair

OURS = ["bimhm", "clip-fsar", "ma-fsar", "otam", "proto", "zero-shot"]
TINY_HEADS = {"ma-fsar": dict(tpcm_heads=4), "clip-fsar": dict(modulation_heads=4, training_classes=CLASSES)}


def test_registered_names():
    assert set(OURS) <= set(fsar.list_methods())
    assert list_methods() == sorted(list_methods())
    with pytest.raises(ValueError, match="unknown method"):
        create_method("no-such-method", backbone="clip-vit-b32")


@pytest.mark.parametrize("backbone", ["clip-vit-b32", "clip-vit-b16"])
@pytest.mark.parametrize("name", OURS)
def test_every_method_runs_on_every_clip_backbone(name, backbone):
    torch.manual_seed(0)
    method = create_method(name, backbone=backbone, weights="random", encoder_options=TINY_CLIP,
                           **TINY_HEADS.get(name, {}))
    assert method.backbone_name == backbone and method.name == name
    json.dumps(dataclasses.asdict(method.config))
    method.train()
    out = method(frames_episode(way=2, shot=1, queries=1, frames=3))
    assert out.log_probs.shape == (2, 2)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2))
    if method.trainable:
        assert out.loss is not None and torch.isfinite(out.loss)
        out.loss.backward()
    else:
        assert out.loss is None and method.trainable_state_dict() == {}


@pytest.mark.parametrize("name", OURS)
def test_every_method_runs_on_the_embedded_pair(name):
    encoder = shared_embedded_pair()
    if name == "zero-shot":
        with pytest.raises(ValueError, match="shared video-text space"):
            create_method(name, backbone=encoder)
        return
    method = create_method(name, backbone=encoder, **TINY_HEADS.get(name, {})).train()
    out = method(features_episode(dim=1280, way=2, shot=1, queries=1))
    assert out.log_probs.shape == (2, 2)
    assert (out.loss is not None) == method.trainable
    assert all(not key.startswith("encoder.") for key in method.trainable_state_dict())


@pytest.mark.parametrize("name", ["ma-fsar", "clip-fsar", "otam"])
def test_unknown_metric_fails_before_building_the_encoder(name, monkeypatch):
    import fsar.encoders

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder was built before the options were checked")

    monkeypatch.setattr(fsar.encoders, "create_encoder", refuse)
    with pytest.raises(ValueError, match="unknown metric 'otma'"):
        create_method(name, backbone="clip-vit-b32", metric="otma")
