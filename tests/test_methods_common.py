"""Shared method plumbing: episode checks, K-shot means, eq. 17 mixing, scales, encoder handling."""

from __future__ import annotations

import math

import pytest
import torch

from fsar.data.inputs import EpisodeInputs
from fsar.methods.common import (
    EncoderMethod,
    Scale,
    check_episode,
    class_means,
    default_finetune,
    resolve_finetune,
    make_config,
    mix_log_probs,
    resolve_encoder,
)
from fsar.methods.base import MethodOutput
from fsar.methods.ma_fsar import MAFSARConfig
from methods_toys import ToyEncoder, features_episode, frames_episode

pytestmark = pytest.mark.usefixtures("single_thread")


def test_class_means_average_each_class():
    feats = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3)
    labels = torch.tensor([1, 0, 1, 2, 0])
    means = class_means(feats, labels, 3)
    torch.testing.assert_close(means[0], (feats[1] + feats[4]) / 2)
    torch.testing.assert_close(means[1], (feats[0] + feats[2]) / 2)
    torch.testing.assert_close(means[2], feats[3])


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [2, 0, 3, 1]])
def test_one_shot_class_means_are_the_clips_exactly_with_the_averaging_gradients(labels):
    """One shot per class takes a shortcut (no product over the features): the same values and
    gradients as the averaging product, bit for bit; labels in class order give the clips themselves."""
    from fsar.metrics._common import shot_average_matrix

    labels = torch.tensor(labels)
    feats = torch.randn(4, 3, 5, requires_grad=True)
    means = class_means(feats, labels, 4)
    expected = (shot_average_matrix(labels, 4, feats.dtype).T @ feats.flatten(1)).view(4, 3, 5)
    assert torch.equal(means, expected)
    weights = torch.randn(4, 3, 5)
    (grad,) = torch.autograd.grad((means * weights).sum(), feats)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), feats)
    assert torch.equal(grad, expected_grad)
    assert (means.data_ptr() == feats.data_ptr()) == (labels.tolist() == [0, 1, 2, 3])


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.75, 1.0])
def test_mix_log_probs_is_log_of_eq_17(alpha):
    torch.manual_seed(0)
    a, b = torch.randn(4, 5).log_softmax(-1), torch.randn(4, 5).log_softmax(-1)
    mixed = mix_log_probs(a, b, alpha)
    torch.testing.assert_close(mixed.exp(), alpha * a.exp() + (1 - alpha) * b.exp())
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(4))


def test_scale_learnable_fixed_and_capped():
    learn = Scale(100.0, learnable=True, max_value=100.0)
    assert isinstance(learn.log_value, torch.nn.Parameter)
    assert float(learn().detach()) == pytest.approx(100.0)
    with torch.no_grad():
        learn.log_value.add_(1.0)
    assert float(learn().detach()) == pytest.approx(100.0)  # capped like CLIP
    fixed = Scale(2.0, learnable=False)
    assert not any(True for _ in fixed.parameters())
    assert float(fixed()) == pytest.approx(2.0)
    assert math.isclose(float(fixed.log_value), math.log(2.0), rel_tol=1e-6)
    with pytest.raises(ValueError):
        Scale(0.0, learnable=False)


def test_check_episode_rejects_malformed_input():
    ok = features_episode(dim=4)
    check_episode(ok, method="m")
    missing = EpisodeInputs(ok.support[:2], torch.tensor([0, 1]), ok.query, ok.class_names, features=True)
    with pytest.raises(ValueError, match="no support clip"):
        check_episode(missing, method="m")
    bad_label = EpisodeInputs(ok.support, torch.tensor([0, 1, 3]), ok.query, ok.class_names, features=True)
    with pytest.raises(ValueError, match="0..2"):
        check_episode(bad_label, method="m")
    with pytest.raises(ValueError, match="frames"):
        check_episode(EpisodeInputs(ok.support, ok.support_labels, ok.query, ok.class_names), method="m")
    bad_query = EpisodeInputs(ok.support, ok.support_labels, ok.query, ok.class_names, torch.tensor([0]), True)
    with pytest.raises(ValueError, match="query_labels"):
        check_episode(bad_query, method="m")
    other_t = EpisodeInputs(ok.support, ok.support_labels, ok.query[:, :2], ok.class_names, features=True)
    with pytest.raises(ValueError, match="number of frames"):
        check_episode(other_t, method="m")


def test_default_finetune_only_adapts_clip():
    assert default_finetune("clip-vit-b16", "adapters") == "adapters"
    assert default_finetune("effnet-lite0+minilm", "adapters") == "frozen"
    assert default_finetune(ToyEncoder(), "full") == "frozen"


def test_a_ready_encoder_keeps_its_own_finetune_mode():
    assert resolve_finetune("clip-vit-b32", None, "adapters", method="m") == "adapters"
    assert resolve_finetune("clip-vit-b32", "full", "adapters", method="m") == "full"
    assert resolve_finetune(ToyEncoder(), None, "adapters", method="m") == "frozen"
    assert resolve_finetune(ToyEncoder(adapters=True), None, "full", method="m") == "trainable"
    with pytest.raises(ValueError, match="ready encoder"):
        resolve_finetune(ToyEncoder(), "adapters", "adapters", method="m")


def test_resolve_encoder_rejects_options_with_a_ready_encoder():
    enc = ToyEncoder()
    assert resolve_encoder(enc, weights=None, finetune="frozen", encoder_options=None, method="m") is enc
    with pytest.raises(ValueError, match="registry name"):
        resolve_encoder(enc, weights="random", finetune="frozen", encoder_options=None, method="m")
    with pytest.raises(TypeError):
        resolve_encoder(3, weights=None, finetune="frozen", encoder_options=None, method="m")


def test_make_config_names_unknown_options():
    with pytest.raises(ValueError, match="unknown option.*'alpah'"):
        make_config(MAFSARConfig, method="ma-fsar", backbone="x", alpah=0.5)


class _Passthrough(EncoderMethod):
    name = "passthrough"

    def forward(self, inputs):
        support, query = self.encode_episode(inputs, support_text=torch.zeros(inputs.support.shape[0], 16))
        return MethodOutput(log_probs=torch.zeros(query.shape[0], inputs.way))


def test_encoder_method_features_need_a_frozen_encoder_and_matching_dims():
    frozen = _Passthrough(ToyEncoder())
    frozen(features_episode(dim=16))
    with pytest.raises(ValueError, match="D=8"):
        frozen(features_episode(dim=8))
    adapted = _Passthrough(ToyEncoder(adapters=True))
    with pytest.raises(ValueError, match="frozen encoder"):
        adapted(features_episode(dim=16))
    # frames: only the support branch receives text
    adapted.encoder.calls.clear()
    adapted(frames_episode(size=8))
    assert adapted.encoder.calls == [True, False]


def test_frozen_encoder_stays_in_eval_mode():
    method = _Passthrough(ToyEncoder())
    method.train()
    assert method.training and not method.encoder.training
    adapted = _Passthrough(ToyEncoder(adapters=True)).train()
    assert adapted.encoder.training
