"""LGA and CLIP-SPM start from their training-free core on encoders without a shared space (the
embedded pairs, pooled and grid): untrained, they predict exactly as their own matching metric on
the raw features (AB-MHM on CLUSTER-Segment stage packs; the release's OTAM preset), the weights
that start at zero learn, and CLIP keeps the paper's / the release's modules."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F

import fsar
from fsar import metrics
from fsar.lga.fusion import ResidualStageFusion, StageFusion
from fsar.lga.segment import gather_stages, segment
from fsar.methods import method_from_config
from fsar.methods.clip_spm import CLIPSPMHead, ResidualCLIPSPMHead
from fsar.metrics.otam import OTAM
from fsar.metrics.stages import stage_mask
from methods_toys import ToyEncoder, features_episode, shared_embedded_pair, shared_frozen_clip

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_LGA = dict(fusion_heads=2, fusion_bottleneck=8, grid_width=8)
TINY_SPM = dict(heads=2, dim_head=8, mlp_dim=32, prompt_hidden=32, bottleneck=8, grid_width=8)


@functools.lru_cache(maxsize=None)
def grid_pair():
    """``effnet-lite0-grid+minilm`` with random weights and a 2 x 2 grid (4 x 1280-d tokens)."""
    from fsar.encoders import create_encoder

    return create_encoder("effnet-lite0-grid+minilm", weights="random", grid=2)


def _encoder(kind):
    return shared_embedded_pair() if kind == "pooled" else grid_pair()


def _episode(encoder, *, way=5, shot=1, queries=2, seed=0):
    episode = features_episode(dim=encoder.feature_dim, way=way, shot=shot, queries=queries, frames=8, seed=seed)
    return episode


def _raw_abmhm(method, episode):
    """AB-MHM on the CLUSTER-Segment stage packs of the raw features (LGA's training-free core)."""
    raw = torch.cat([episode.support, episode.query])
    membership = stage_mask(segment(raw, method.config.num_stages, "cluster"), raw.shape[1],
                            overlap=method.config.overlap)
    stages, valid = gather_stages(raw, membership)
    n = episode.support.shape[0]
    abmhm = metrics.build("abmhm", num_stages=method.config.num_stages)
    return abmhm.stage_packs(stages[:n], valid[:n], episode.support_labels, stages[n:], valid[n:], episode.way)


def _release_otam(episode):
    """The release's OTAM (fsar's otam_clipfsar preset) on the raw features: logits = -distance."""
    otam = OTAM(lam=0.5, variant="reference", directions="both", combine="sum", shots="prototype", cosine="peer")
    return otam(episode.support, episode.support_labels, episode.query, episode.way)


# ---------------------------------------------------------------------------------------------
# LGA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pooled", "grid"])
def test_untrained_lga_predicts_as_abmhm_on_the_raw_stages(kind):
    encoder = _encoder(kind)
    torch.manual_seed(0)
    method = fsar.create_method("lga", backbone=encoder, **TINY_LGA)
    assert method.config.start == "training-free" and method.space.dim == encoder.feature_dim
    assert isinstance(method.fusion, ResidualStageFusion)
    assert method.config.alpha == 1.0  # no shared space: evaluation predicts with V-V alone
    assert (method.grid_temporal is not None) == (kind == "grid")
    for shot, seed in ((1, 0), (2, 1)):
        episode = _episode(encoder, shot=shot, seed=seed)
        reference = _raw_abmhm(method, episode)
        uniform = torch.full((episode.query.shape[0], episode.way), -torch.log(torch.tensor(5.0)))
        with torch.no_grad():
            evaluated = method.eval()(episode)  # the memoised evaluation path
            trained = method.train()(episode)  # the training path (dropout inside the zero branch)
        for out in (evaluated, trained):
            torch.testing.assert_close(out.parts["log_p_vv"], F.log_softmax(reference / 0.1, -1), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.parts["log_p_vt"], uniform)  # every class's stage texts are one vector
            assert torch.equal(out.log_probs.argmax(-1), reference.argmax(-1))


def test_lga_weights_that_start_at_zero_learn_from_the_first_backward():
    method = fsar.create_method("lga", backbone=grid_pair(), **TINY_LGA).train()
    method(_episode(grid_pair(), way=3)).loss.backward()
    named = dict(method.named_parameters())
    for name in ("fusion.up.weight", "grid_temporal.up.weight", "grid_temporal.static_gate",
                 "space.text_proj.weight", "metric_temperature.log_value"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    assert all(p.grad is None for p in method.encoder.parameters())
    assert float(named["fusion.up.weight"].detach().abs().max()) == 0.0  # it did start at zero
    # one step later the inner fusion (behind the up-projection) learns too
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    optimiser.step()
    optimiser.zero_grad()
    method(_episode(grid_pair(), way=3, seed=1)).loss.backward()
    for name in ("fusion.down.weight", "fusion.text_down.weight", "fusion.fusion.attention.in_proj_weight"):
        assert named[name].grad.abs().sum() > 0, name


def test_lga_standard_start_keeps_the_papers_modules_and_old_configs_load_as_standard():
    encoder = ToyEncoder(feature_dim=24, text_dim=12, shared_space=False)
    standard = fsar.create_method("lga", backbone=encoder, fusion_heads=2, embed_dim=16, start="standard")
    assert standard.space.dim == 16 and isinstance(standard.fusion, StageFusion) and standard.grid_temporal is None
    assert standard.config.alpha == 0.5
    clip = fsar.create_method("lga", backbone=shared_frozen_clip(), fusion_heads=2)
    assert clip.config.start == "standard" and isinstance(clip.fusion, StageFusion) and clip.config.alpha == 0.5
    explicit = fsar.create_method("lga", backbone=shared_embedded_pair(), alpha=0.5, **TINY_LGA)
    assert explicit.config.start == "training-free" and explicit.config.alpha == 0.5
    with pytest.raises(ValueError, match="start must be"):
        fsar.create_method("lga", backbone=encoder, start="warm")
    saved = fsar.create_method("lga", backbone=shared_embedded_pair(), **TINY_LGA).config_dict()
    assert saved["start"] == "training-free"  # recorded resolved
    older = {k: v for k, v in saved.items() if k not in ("start", "fusion_bottleneck", "alpha")}
    assert saved["alpha"] == 1.0 and method_from_config("lga", {**older, "alpha": 0.5}).config.start == "standard"
    assert method_from_config("lga", older).config.alpha == 0.5
    assert isinstance(method_from_config("lga", saved).fusion, ResidualStageFusion)


# ---------------------------------------------------------------------------------------------
# CLIP-SPM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padm", ["transductive", "inductive"])
@pytest.mark.parametrize("kind", ["pooled", "grid"])
def test_untrained_clip_spm_predicts_as_the_release_otam_on_the_raw_features(kind, padm):
    encoder = _encoder(kind)
    torch.manual_seed(0)
    method = fsar.create_method("clip-spm", backbone=encoder, padm=padm, **TINY_SPM)
    assert method.config.start == "training-free" and isinstance(method.head, ResidualCLIPSPMHead)
    assert (method.grid_temporal is not None) == (kind == "grid")
    for shot, seed in ((1, 0), (2, 1)):
        episode = _episode(encoder, shot=shot, seed=seed)
        reference = _release_otam(episode)
        for mode in ("eval", "train"):
            getattr(method, mode)()
            with torch.no_grad():
                out = method(episode)
            # logits -(0.5 d_spm + d_padm) = -1.5 OTAM: the same softmax as 1.5 x the metric's logits
            torch.testing.assert_close(out.log_probs, F.log_softmax(1.5 * reference, -1), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.parts["d_spm"], -reference, rtol=1e-5, atol=1e-5)
            assert torch.equal(out.log_probs.argmax(-1), reference.argmax(-1))


def test_clip_spm_weights_that_start_at_zero_learn_and_the_text_follows_one_step_later():
    method = fsar.create_method("clip-spm", backbone=grid_pair(), **TINY_SPM).train()
    named = dict(method.named_parameters())
    zero_started = ("head.up_spm.weight", "head.up_padm.weight", "head.anchor_weight", "grid_temporal.up.weight",
                    "grid_temporal.static_gate")
    assert all(float(named[n].detach().abs().max()) == 0.0 for n in zero_started)
    method(_episode(grid_pair(), way=3)).loss.backward()
    for name in zero_started:
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    assert all(p.grad is None for p in method.encoder.parameters())
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    optimiser.step()
    optimiser.zero_grad()
    method(_episode(grid_pair(), way=3, seed=1)).loss.backward()
    # the class texts enter only inside the residual branches: they learn once those are open
    for name in ("space.text_proj.weight", "head.text_down.weight", "head.core.prompt_generator.hidden.weight",
                 "head.core.padm.context.to_q.weight"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name


def test_clip_spm_on_clip_is_the_release_head_and_old_configs_load_as_standard():
    clip = fsar.create_method("clip-spm", backbone=shared_frozen_clip(), heads=2, dim_head=8, mlp_dim=32,
                              prompt_hidden=32)
    assert clip.config.start == "standard" and type(clip.head) is CLIPSPMHead and clip.grid_temporal is None
    with pytest.raises(ValueError, match="start must be one of"):
        fsar.create_method("clip-spm", backbone=shared_frozen_clip(), start="zero")
    saved = fsar.create_method("clip-spm", backbone=shared_embedded_pair(), **TINY_SPM).config_dict()
    assert saved["start"] == "training-free"
    older = {k: v for k, v in saved.items() if k not in ("start", "bottleneck")}
    rebuilt = method_from_config("clip-spm", older)
    assert rebuilt.config.start == "standard" and type(rebuilt.head) is CLIPSPMHead
    assert rebuilt.head.dim == rebuilt.config.embed_dim
    # the --padm option reaches the residual head's PADM too
    method = method_from_config("clip-spm", saved)
    method.load_resources({"padm": "inductive"})
    assert method.head.padm_mode == "inductive"


def test_clip_spm_auxiliary_terms_run_in_the_residual_head():
    method = fsar.create_method("clip-spm", backbone=shared_embedded_pair(), spm_aux_losses=True, **TINY_SPM).train()
    out = method(_episode(shared_embedded_pair(), way=3))
    assert torch.isfinite(out.loss) and out.parts["loss_spm_aux"] > 0 and out.parts["loss_hsmr"] > 0


# ---------------------------------------------------------------------------------------------
# base-feature centring (both methods)
# ---------------------------------------------------------------------------------------------


def _centred(episode, mean):
    return dataclasses.replace(episode, support=episode.support - mean, query=episode.query - mean)


@pytest.mark.parametrize("name", ["lga", "clip-spm"])
def test_after_base_centring_the_untrained_method_is_its_metric_on_the_centred_features(name):
    """prepare_training sets the base-class frame mean from training episodes; the untrained
    method then predicts as its metric on the features minus that mean (the stage boundaries of
    LGA still come from the encoder's own frames)."""
    encoder = shared_embedded_pair()
    torch.manual_seed(0)
    method = fsar.create_method(name, backbone=encoder, **(TINY_LGA if name == "lga" else TINY_SPM))
    assert method.config.base_centring and method.space.centres
    training = [_episode(encoder, way=3, seed=10 + s) for s in range(2)]
    for e in training:
        e.support, e.query = e.support + 2.0, e.query + 2.0
    with torch.no_grad():
        assert method.train().prepare_training(iter(training))["base_centring_frames"] > 0
    mean = method.space.frame_mean
    assert mean.abs().min() > 1.0  # the training frames' mean, near the +2 shift
    episode = _episode(encoder, seed=3)
    with torch.no_grad():
        out = method.eval()(episode)
    if name == "lga":
        raw = torch.cat([episode.support, episode.query])
        membership = stage_mask(segment(raw, 3, "cluster"), raw.shape[1], overlap=method.config.overlap)
        stages, valid = gather_stages(raw - mean, membership)
        n = episode.support.shape[0]
        reference = metrics.build("abmhm", num_stages=3).stage_packs(
            stages[:n], valid[:n], episode.support_labels, stages[n:], valid[n:], episode.way)
        torch.testing.assert_close(out.parts["log_p_vv"], F.log_softmax(reference / 0.1, -1), rtol=1e-5, atol=1e-5)
    else:
        reference = _release_otam(_centred(episode, mean))
        torch.testing.assert_close(out.log_probs, F.log_softmax(1.5 * reference, -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(out.log_probs.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("name", ["lga", "clip-spm"])
def test_the_grid_module_sees_centred_tokens(name):
    """The base-class mean is a statistic of the encoder's features: it is removed before the grid
    temporal module (as in ma-fsar), whatever that module has learned."""
    from fsar.encoders.embedded_grid import grid_tokens

    method = fsar.create_method(name, backbone=grid_pair(), **(TINY_LGA if name == "lga" else TINY_SPM)).eval()
    with torch.no_grad():
        method.space.frame_mean.normal_()
        method.space.frame_count.fill_(1.0)
        torch.nn.init.normal_(method.grid_temporal.up.weight)
        clips = torch.randn(2, 8, grid_pair().feature_dim)
        expected = method.grid_temporal(grid_tokens(clips - method.space.frame_mean, 4))
        torch.testing.assert_close(method._frames(clips), expected)
