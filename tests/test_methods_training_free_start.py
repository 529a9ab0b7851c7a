"""MA-FSAR and CLIP-FSAR start from their training-free core on encoders without a shared space
(and on the grid backbone): untrained, each predicts exactly as its metric on the raw features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fsar
from fsar.methods.grid_temporal import GridTemporalModule, ResidualBottleneck
from fsar.methods.common import class_means
from fsar.methods.text_side import TextSpace
from fsar.metrics import OTAM, build as build_metric
from methods_toys import ToyEncoder, features_episode


class ToyGridEncoder(ToyEncoder):
    """A toy encoder whose features are a flattened grid of ``grid_cells`` tokens of ``token_dim``."""

    def __init__(self, *, cells=4, token_dim=8, text_dim=12):
        super().__init__(feature_dim=cells * token_dim, text_dim=text_dim, shared_space=False)
        self.grid_cells, self.token_dim = cells, token_dim


def _method(encoder, **options):
    options.setdefault("tpcm_heads", 2)
    options.setdefault("tpcm_bottleneck", 16)
    return fsar.create_method("ma-fsar", backbone=encoder, dataset_kind="temporal", **options)


@pytest.mark.parametrize("encoder", [ToyEncoder(feature_dim=24, text_dim=12, shared_space=False), ToyGridEncoder()],
                         ids=["pooled", "grid"])
def test_untrained_method_predicts_exactly_as_otam_on_the_raw_features(encoder):
    method = _method(encoder).eval()
    assert method.config.start == "training-free"
    otam = fsar.create_method("otam", backbone=encoder).eval()
    for seed in range(3):
        episode = features_episode(dim=encoder.feature_dim, way=5, shot=1, queries=3, seed=seed)
        with torch.no_grad():
            out = method(episode)
            reference = OTAM()(episode.support, episode.support_labels, episode.query, episode.way)
            baseline = otam(episode).log_probs
        # the visual branch is OTAM on the raw features, the text branch is uniform ...
        torch.testing.assert_close(out.parts["log_p_q2s"], F.log_softmax(reference, -1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.parts["log_p_q2t"], torch.full((15, 5), -torch.log(torch.tensor(5.0))))
        # ... so every prediction is the training-free baseline's
        assert torch.equal(out.log_probs.argmax(-1), baseline.argmax(-1))


def test_training_moves_every_learned_map_away_from_the_start():
    encoder = ToyGridEncoder()
    method = _method(encoder).train()
    method(features_episode(dim=encoder.feature_dim, way=3, shot=1, queries=2)).loss.backward()
    for name in ("grid_temporal.up.weight", "grid_temporal.static_gate", "space.text_proj.weight", "tpcm.up.weight"):
        grad = dict(method.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in method.encoder.parameters())


def test_standard_start_keeps_the_papers_modules():
    method = _method(ToyEncoder(feature_dim=24, text_dim=12, shared_space=False), start="standard", embed_dim=16)
    assert method.space.dim == 16 and not isinstance(method.tpcm, ResidualBottleneck)
    with pytest.raises(ValueError, match="start must be"):
        _method(ToyEncoder(feature_dim=24, text_dim=12, shared_space=False), start="warm")


def test_grid_temporal_module_is_the_identity_at_start_and_sees_time_order():
    module = GridTemporalModule(cells=4, dim=8, width=6)
    tokens = torch.randn(2, 5, 4, 8)
    torch.testing.assert_close(module(tokens), tokens.flatten(2))
    torch.nn.init.normal_(module.up.weight)
    moved = module.eval()(tokens)
    reversed_in_time = module(tokens.flip(1)).flip(1)
    assert not torch.allclose(moved, reversed_in_time)  # the temporal convolution is order-aware
    with pytest.raises(ValueError, match="tokens must be"):
        module(torch.randn(2, 5, 3, 8))
    # a fully open static gate removes what does not move: a still clip becomes zero, and a moving
    # one becomes its deviation from its own temporal mean (temporal centring)
    for gate, shape in (("shared", ()), ("per-channel", (8,))):
        fresh = GridTemporalModule(cells=4, dim=8, width=6, gate=gate, static_rate=5.0)
        assert fresh.static_gate.shape == shape and float(fresh.static_suppression().detach().abs().max()) == 0.0
        with torch.no_grad():
            fresh.static_gate.fill_(1.0 / 5.0)
        still = torch.randn(1, 1, 4, 8).expand(2, 5, 4, 8)
        torch.testing.assert_close(fresh(still), torch.zeros(2, 5, 32), atol=1e-6, rtol=0)
        torch.testing.assert_close(fresh(tokens), (tokens - tokens.mean(1, keepdim=True)).flatten(2), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="gate must be"):
        GridTemporalModule(cells=4, dim=8, gate="per-cell")
    with pytest.raises(ValueError, match="grid_gate must be"):
        _method(ToyGridEncoder(), grid_gate="per-cell")


def test_the_shared_gate_gets_one_gradient_from_every_cell_and_channel():
    """The shared gate's gradient is the sum of the per-channel gates' gradients (same forward),
    so a step moves it by the agreement of all channels, not by each channel's noise."""
    tokens = torch.randn(3, 6, 4, 8)
    target = torch.randn(3, 6, 32)
    grads = {}
    for gate in ("shared", "per-channel"):
        torch.manual_seed(0)
        module = GridTemporalModule(cells=4, dim=8, width=6, gate=gate, dropout=0.0)
        ((module(tokens) - target) ** 2).sum().backward()
        grads[gate] = module.static_gate.grad
    torch.testing.assert_close(grads["shared"], grads["per-channel"].sum(), rtol=1e-5, atol=1e-6)


def test_a_config_saved_before_the_shared_gate_rebuilds_its_per_channel_gate():
    """Checkpoints written before ``grid_gate`` existed hold a (D,) gate: their saved config (no
    ``grid_gate`` key) must rebuild that shape, while a current config keeps the shared gate."""
    from fsar.methods import method_from_config

    method = fsar.create_method("ma-fsar", backbone="effnet-lite0-grid+minilm", weights="random",
                                dataset_kind="temporal", tpcm_heads=2, tpcm_bottleneck=16, grid_width=8,
                                encoder_options={"grid": 2})
    saved = method.config_dict()
    assert saved["grid_gate"] == "shared" and method.grid_temporal.static_gate.shape == ()
    older = {k: v for k, v in saved.items() if k not in ("grid_gate", "grid_static_rate")}
    rebuilt = method_from_config("ma-fsar", older)
    assert rebuilt.config.grid_gate == "per-channel" and rebuilt.grid_temporal.static_gate.shape == (1280,)
    assert method_from_config("ma-fsar", saved).grid_temporal.static_gate.shape == ()


def _clip_fsar(encoder, **options):
    options.setdefault("modulation_heads", 2)
    options.setdefault("modulation_bottleneck", 16)
    return fsar.create_method("clip-fsar", backbone=encoder, training_classes=CLASSES, **options)


CLASSES = ["pushing something left", "lifting a cup", "waving hand", "opening door", "drinking tea"]


@pytest.mark.parametrize("shot", [1, 3])
@pytest.mark.parametrize("encoder", [ToyEncoder(feature_dim=24, text_dim=12, shared_space=False), ToyGridEncoder()],
                         ids=["pooled", "grid"])
def test_untrained_clip_fsar_predicts_exactly_as_its_metric_on_the_raw_features(encoder, shot):
    method = _clip_fsar(encoder).eval()
    assert method.config.start == "training-free" and method.space.dim == encoder.feature_dim
    metric = build_metric("otam_clipfsar")
    for seed in range(3):
        episode = features_episode(dim=encoder.feature_dim, way=5, shot=shot, queries=2, seed=seed)
        with torch.no_grad():
            out = method(episode)
            prototypes = class_means(episode.support, episode.support_labels, episode.way)
            reference = metric(prototypes, torch.arange(episode.way), episode.query, episode.way)
        torch.testing.assert_close(out.log_probs, F.log_softmax(reference, -1), rtol=1e-5, atol=1e-5)


def test_clip_fsar_training_free_start_trains_its_maps_and_keeps_clip_and_old_configs_as_they_were():
    from fsar.methods import method_from_config

    encoder = ToyEncoder(feature_dim=24, text_dim=12, shared_space=False)
    method = _clip_fsar(encoder).train()
    assert isinstance(method.modulation, ResidualBottleneck) and method.space.centres
    method(features_episode(dim=24, way=3, shot=1, queries=2)).loss.backward()
    for name in ("modulation.up.weight", "space.text_proj.weight"):  # the inner layer: once Up moves
        grad = dict(method.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    standard = _clip_fsar(encoder, start="standard", embed_dim=16)
    assert standard.space.dim == 16 and not isinstance(standard.modulation, ResidualBottleneck)
    clip = _clip_fsar(ToyEncoder(feature_dim=16, text_dim=16, shared_space=True))
    assert clip.config.start == "standard" and not clip.space.centres
    assert not isinstance(clip.modulation, ResidualBottleneck)
    with pytest.raises(ValueError, match="start must be"):
        _clip_fsar(encoder, start="warm")
    # a config saved before clip-fsar had a start rebuilds the random projections it was trained with
    saved = fsar.create_method("clip-fsar", backbone="effnet-lite0+minilm", weights="random",
                               modulation_heads=2, modulation_bottleneck=16).config_dict()
    assert saved["start"] == "training-free" and saved["base_centring"] is True
    older = {k: v for k, v in saved.items() if k not in ("start", "base_centring", "base_centring_clips",
                                                          "modulation_bottleneck")}
    rebuilt = method_from_config("clip-fsar", older)
    assert rebuilt.config.start == "standard" and rebuilt.space.dim == 512 and not rebuilt.space.centres
    assert isinstance(rebuilt.space, TextSpace)
