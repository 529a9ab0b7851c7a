"""The methods registry: every registered method (``fsar.list_methods()``, so a new method
is covered the moment its module registers it) builds and runs on every backbone, answers
the engine's hooks, and is rebuilt exactly from its saved config."""

from __future__ import annotations

import json

import pytest
import torch

import fsar
from fsar.methods import (
    FewShotMethod,
    MethodOption,
    check_method_options,
    create_method,
    list_methods,
    method_class,
    method_from_config,
    method_options,
)
from methods_toys import CLASSES, TINY_CLIP, features_episode, frames_episode, shared_embedded_pair

pytestmark = pytest.mark.usefixtures("single_thread")

ALL = fsar.list_methods()
#: Small sizes for the tiny test backbones (widths of 32 divide into 4 heads); a method not
#: listed here runs with its defaults.
TINY_OPTIONS = {
    "ma-fsar": dict(tpcm_heads=4),
    "clip-fsar": dict(modulation_heads=4, training_classes=CLASSES),
    "lga": dict(fusion_heads=4),
}
#: Methods that read a video MLLM's named streams (fsar.encoders.mllm): on any other backbone
#: they must refuse, naming what is missing; they run on a tiny random Video-LLaVA instead.
MLLM_METHODS = {
    "fsar-llava": "does not produce the stream",
    "fsar-llava-vision": "does not produce the stream",
    "fsar-llava-caption": "caption_embedding",
}
TINY_MLLM = dict(layers=2, width=32, heads=2, vision_layers=1, vision_width=16)
TINY_FSAR_LLAVA = dict(dim=32, temporal_heads=2, temporal_ffn_dim=64, enhancement_heads=2, refinement_heads=2)
TINY_OPTIONS.update({"fsar-llava": TINY_FSAR_LLAVA, "fsar-llava-vision": TINY_FSAR_LLAVA})
#: Methods that cannot run on the embedded pair, and why (checked: they must refuse clearly).
NOT_ON_EMBEDDED_PAIR = {
    # Zero-shot matching needs frame and text features in one space; the pair has none.
    "zero-shot": "shared video-text space",
}


def build(name: str, backbone, **extra) -> FewShotMethod:
    torch.manual_seed(0)
    options = {**TINY_OPTIONS.get(name, {}), **extra}
    if backbone == "video-llava":
        captions = {"captions": "mllm"} if name == "fsar-llava-caption" else {}
        options.update(weights="random", encoder_options={**TINY_MLLM, **captions})
    elif isinstance(backbone, str):
        options.update(weights="random", encoder_options=TINY_CLIP)
    return create_method(name, backbone=backbone, **options)


def backbone_for(name: str) -> str:
    return "video-llava" if name in MLLM_METHODS else "clip-vit-b32"


def episode_for(name: str):
    if name in MLLM_METHODS:  # the tiny Video-LLaVA takes 8 frames of 28 x 28
        episode = frames_episode(way=2, shot=1, queries=1, frames=8)
        episode.support, episode.query = episode.support[..., :28, :28], episode.query[..., :28, :28]
        return episode
    return frames_episode(way=2, shot=1, queries=1, frames=4)


def test_registered_names():
    assert {"bimhm", "clip-fsar", "lga", "ma-fsar", "otam", "proto", "zero-shot"} <= set(ALL)
    assert list_methods() == sorted(list_methods())
    with pytest.raises(ValueError, match="unknown method 'no-such-method'; available: bimhm"):
        create_method("no-such-method", backbone="clip-vit-b32")
    with pytest.raises(ValueError, match="unknown method"):
        method_class("no-such-method")
    for name in ALL:
        assert issubclass(method_class(name), FewShotMethod)


@pytest.mark.parametrize("backbone", ["clip-vit-b32", "clip-vit-b16"])
@pytest.mark.parametrize("name", ALL)
def test_every_method_runs_on_every_clip_backbone(name, backbone):
    if name in MLLM_METHODS:
        with pytest.raises(ValueError, match=MLLM_METHODS[name]):
            build(name, backbone)
        return
    method = build(name, backbone)
    assert method.backbone_name == backbone and method.name == name
    json.dumps(method.config_dict())
    method.train()
    out = method(frames_episode(way=2, shot=1, queries=1, frames=4))
    assert out.log_probs.shape == (2, 2)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2))
    if method.is_trainable():
        assert out.loss is not None and torch.isfinite(out.loss)
        out.loss.backward()
    else:
        assert out.loss is None and method.trainable_state_dict() == {}


@pytest.mark.parametrize("name", ALL)
def test_every_method_runs_on_the_embedded_pair(name):
    encoder = shared_embedded_pair()
    if name in MLLM_METHODS:
        with pytest.raises(ValueError, match=MLLM_METHODS[name]):
            build(name, encoder)
        return
    if name in NOT_ON_EMBEDDED_PAIR:
        with pytest.raises(ValueError, match=NOT_ON_EMBEDDED_PAIR[name]):
            build(name, encoder)
        return
    method = build(name, encoder).train()
    assert method.uses_cached_features()  # the pair is frozen: episodes may come from the cache
    out = method(features_episode(dim=1280, way=2, shot=1, queries=1, frames=4))
    assert out.log_probs.shape == (2, 2)
    assert (out.loss is not None) == method.is_trainable()
    assert all(not key.startswith("encoder.") for key in method.trainable_state_dict())
    assert not method.encoder.training  # a frozen encoder stays in eval mode while the method trains


@pytest.mark.parametrize("name", sorted(MLLM_METHODS))
def test_every_mllm_method_runs_on_the_tiny_video_llava(name):
    method = build(name, "video-llava").train()
    assert method.backbone_name == "video-llava" and method.name == name and method.uses_cached_features()
    out = method(episode_for(name))
    assert out.log_probs.shape == (2, 2)
    assert (out.loss is not None) == method.is_trainable()
    assert all(not key.startswith("encoder.") for key in method.trainable_state_dict())


@pytest.mark.parametrize("name", ALL)
def test_every_method_is_rebuilt_exactly_from_its_saved_config(name):
    method = build(name, backbone_for(name))
    saved = json.loads(json.dumps(method.config_dict()))
    torch.manual_seed(1)  # other initial weights: only the structure must match
    rebuilt = method_from_config(name, saved)
    assert type(rebuilt) is type(method) and rebuilt.config_dict() == saved
    assert {k: v.shape for k, v in rebuilt.trainable_state_dict().items()} == {
        k: v.shape for k, v in method.trainable_state_dict().items()
    }
    # with the same tensors, the same answer
    rebuilt.load_state_dict(method.state_dict())
    episode = episode_for(name)
    torch.testing.assert_close(rebuilt.eval()(episode).log_probs, method.eval()(episode).log_probs)


@pytest.mark.parametrize("name", ALL)
def test_every_method_answers_the_engine_hooks(name):
    method = build(name, backbone_for(name))
    streams = method.required_streams()
    assert isinstance(streams, tuple) and all(isinstance(s, str) and s for s in streams)
    assert method.uses_cached_features() == method.encoder.is_frozen
    assert method.is_trainable() == (method.trainable and any(p.requires_grad for p in method.parameters()))
    # One implementation of the training classes for every method.
    assert type(method).set_training_classes is FewShotMethod.set_training_classes
    method.set_training_classes(["b", "a"])
    assert method.training_classes == ["b", "a"] and method.training_class_index == {"b": 0, "a": 1}
    with pytest.raises(ValueError, match=f"{name}: set_training_classes got duplicate"):
        method.set_training_classes(["a", "a"])
    options = method_class(name).options()
    assert all(isinstance(o, MethodOption) for o in options)
    assert len({o.name for o in options}) == len(options)
    if not options:
        with pytest.raises(ValueError, match="takes no options"):
            method.load_resources({"anything": 1})


def test_method_options_are_checked_against_the_method_that_declares_them():
    assert "lga" in method_options() and "ma-fsar" not in method_options()
    check_method_options("lga", {"descriptions": "d.json", "llm_timeout": 3.0})
    with pytest.raises(ValueError, match="--descriptions is an option of method 'lga', not of 'ma-fsar'"):
        check_method_options("ma-fsar", {"descriptions": "d.json"})
    with pytest.raises(ValueError, match="--no-such is no option of method 'lga'"):
        check_method_options("lga", {"no_such": 1})


@pytest.mark.parametrize("name", ["ma-fsar", "clip-fsar", "otam"])
def test_unknown_metric_fails_before_building_the_encoder(name, monkeypatch):
    import fsar.encoders

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder was built before the options were checked")

    monkeypatch.setattr(fsar.encoders, "create_encoder", refuse)
    with pytest.raises(ValueError, match="unknown metric 'otma'"):
        create_method(name, backbone="clip-vit-b32", metric="otma")
