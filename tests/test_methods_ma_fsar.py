"""MA-FSAR: eqs. 9-17 end to end on tiny real backbones (random CLIP, embedded pair)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import fsar
from fsar.data.inputs import EpisodeInputs
from methods_toys import (
    TINY_CLIP,
    TINY_TPCM,
    ToyEncoder,
    features_episode,
    frames_episode,
    shared_embedded_pair,
    shared_frozen_clip,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _ma_fsar(**options):
    options = {**TINY_TPCM, **options}
    backbone = options.pop("backbone", "clip-vit-b32")
    if isinstance(backbone, str) and backbone.startswith("clip"):
        options.setdefault("weights", "random")
        options.setdefault("encoder_options", TINY_CLIP)
    return fsar.create_method("ma-fsar", backbone=backbone, **options)


@pytest.fixture(scope="module")
def adapted():
    torch.manual_seed(0)
    return _ma_fsar()  # finetune="adapters": FgMA on the tiny CLIP


@pytest.fixture(scope="module")
def frozen_clip():
    return shared_frozen_clip()


def test_shapes_probabilities_and_config(adapted):
    adapted.train()
    out = adapted(frames_episode(way=3, shot=2, queries=2))
    assert out.log_probs.shape == (6, 3)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(6))  # eq. 17 sums to 1
    assert out.loss is not None and out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert set(out.parts) >= {"log_p_q2t", "log_p_q2s", "loss_s2t", "loss_q2t", "loss_q2s"}
    assert adapted.backbone_name == "clip-vit-b32"
    cfg = dataclasses.asdict(adapted.config)
    json.dumps(cfg)
    assert cfg["finetune"] == "adapters" and cfg["metric"] == "otam" and cfg["alpha"] == 0.75
    adapted.eval()
    assert adapted(frames_episode()).loss is None  # no loss at evaluation


def test_gradients_reach_only_trainable_parts(adapted):
    adapted.train()
    adapted.zero_grad(set_to_none=True)
    adapted(frames_episode(seed=1)).loss.backward()
    grads = {n: p.grad for n, p in adapted.named_parameters()}
    clip_weights = [n for n in grads if n.startswith("encoder.clip.")]
    assert clip_weights and all(grads[n] is None for n in clip_weights)  # CLIP stays frozen
    for prefix in ("encoder.fgma.", "tpcm.", "logit_scale."):
        names = [n for n in grads if n.startswith(prefix)]
        assert names and any(grads[n] is not None and grads[n].abs().sum() > 0 for n in names), prefix
    trainable = adapted.trainable_state_dict()
    assert trainable and all(not k.startswith("encoder.clip.") for k in trainable)
    assert set(trainable) == {n for n, p in adapted.named_parameters() if p.requires_grad}


def test_query_path_never_reads_text(adapted, monkeypatch):
    """Query outputs (encoder and TPCM) don't move when class names and support labels change."""
    adapted.eval()
    captured = []
    original = adapted.encoder.encode_frames

    def recording(frames, text_features=None):
        out = original(frames, text_features)
        captured.append((text_features is not None, out))
        return out

    monkeypatch.setattr(adapted.encoder, "encode_frames", recording)
    tpcm_calls = []
    hook = adapted.tpcm.register_forward_hook(lambda m, args, out: tpcm_calls.append((len(args), out)))
    try:
        base = frames_episode(way=3, shot=1, queries=2, seed=3)
        adapted(base)
        changed = EpisodeInputs(
            support=base.support, support_labels=torch.tensor([2, 0, 1]), query=base.query,
            class_names=["juggling balls", "folding paper", "kicking ball"], query_labels=base.query_labels,
        )
        adapted(changed)
    finally:
        hook.remove()
    (s1_text, s1), (q1_text, q1), (s2_text, s2), (q2_text, q2) = captured
    assert s1_text and s2_text and not q1_text and not q2_text
    torch.testing.assert_close(q1, q2)  # query encoder branch: identical
    assert not torch.allclose(s1, s2)  # support branch: reads the (changed) text
    (_, ts1), (_, tq1), (_, ts2), (_, tq2) = tpcm_calls
    torch.testing.assert_close(tq1, tq2)  # query TPCM: identical
    assert not torch.allclose(ts1, ts2)


def test_eq_16_loss_and_eq_17_prediction_from_the_parts(frozen_clip):
    method = _ma_fsar(backbone=frozen_clip, alpha=0.3).train()
    out = method(features_episode(dim=32, way=3, shot=2))
    p = out.parts
    torch.testing.assert_close(out.loss, 0.3 * 0.5 * (p["loss_s2t"] + p["loss_q2t"]) + 0.7 * p["loss_q2s"])
    torch.testing.assert_close(out.log_probs.exp(), 0.3 * p["log_p_q2t"].exp() + 0.7 * p["log_p_q2s"].exp())


def test_alpha_one_is_the_zero_shot_text_matcher(frozen_clip):
    episode = features_episode(dim=32, way=4, shot=1, queries=3, seed=5)
    text_only = _ma_fsar(backbone=frozen_clip, alpha=1.0).eval()
    zero_shot = fsar.create_method("zero-shot", backbone=frozen_clip).eval()
    torch.testing.assert_close(text_only(episode).log_probs, zero_shot(episode).log_probs)
    # and in training only the text branch receives gradient (TPCM gets none)
    text_only.train()
    text_only(episode).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in text_only.tpcm.parameters())
    assert text_only.logit_scale.log_value.grad is not None


def test_alpha_zero_is_visual_only(frozen_clip):
    method = _ma_fsar(backbone=frozen_clip, alpha=0.0).train()
    out = method(features_episode(dim=32, seed=2))
    torch.testing.assert_close(out.log_probs, out.parts["log_p_q2s"])
    torch.testing.assert_close(out.loss, out.parts["loss_q2s"])
    out.loss.backward()
    assert method.logit_scale.log_value.grad is None or float(method.logit_scale.log_value.grad) == 0.0


def test_alpha_defaults_and_validation(frozen_clip):
    frozen = _ma_fsar(backbone=frozen_clip)
    assert frozen.alpha == 0.75 and frozen.config.finetune == "frozen"  # the ready encoder's own mode
    assert _ma_fsar(backbone=frozen_clip, dataset_kind="temporal").alpha == 0.25
    assert _ma_fsar(backbone=frozen_clip, dataset_kind="temporal", alpha=0.5).alpha == 0.5
    with pytest.raises(ValueError, match="dataset_kind"):
        _ma_fsar(backbone=frozen_clip, dataset_kind="motion")
    with pytest.raises(ValueError, match="alpha"):
        _ma_fsar(backbone=frozen_clip, alpha=1.5)
    with pytest.raises(ValueError, match="unknown option"):
        _ma_fsar(backbone=frozen_clip, alhpa=0.5)


def test_k_shot_prototypes_feed_the_metric_and_raw_mode_passes_clips(frozen_clip):
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, support, support_labels, query, way):
            seen.append((tuple(support.shape), support_labels.tolist()))
            return -torch.cdist(query.mean(1), support.mean(1))[:, :way]

    episode = features_episode(dim=32, way=3, shot=3)
    _ma_fsar(backbone=frozen_clip, metric=Spy()).eval()(episode)
    _ma_fsar(backbone=frozen_clip, metric=Spy(), shots="metric").eval()(episode)
    assert seen[0] == ((3, 4, 32), [0, 1, 2])
    assert seen[1] == ((9, 4, 32), episode.support_labels.tolist())


@pytest.mark.parametrize("metric", ["otam", "bimhm", "proto", "trx"])
def test_any_metric_plugs_in(frozen_clip, metric):
    method = _ma_fsar(backbone=frozen_clip, metric=metric).train()
    out = method(features_episode(dim=32, way=3, shot=2))
    assert out.log_probs.shape == (6, 3) and torch.isfinite(out.loss)


@pytest.mark.parametrize("module", ["none", "unimodal", "multimodal"])
def test_prototype_module_ablations(frozen_clip, module):
    method = _ma_fsar(backbone=frozen_clip, prototype_module=module, tpcm_pre_ln=False).eval()
    assert (method.tpcm is None) == (module == "none")
    assert method(features_episode(dim=32)).log_probs.shape == (6, 3)


def test_malformed_episodes_raise_value_errors(frozen_clip):
    method = _ma_fsar(backbone=frozen_clip)
    good = features_episode(dim=32)
    bad = EpisodeInputs(good.support, torch.tensor([0, 1, 5]), good.query, good.class_names, features=True)
    with pytest.raises(ValueError, match="ma-fsar: support_labels"):
        method(bad)


def test_cached_features_rejected_when_the_encoder_adapts(adapted):
    with pytest.raises(ValueError, match="frozen encoder"):
        adapted(features_episode(dim=32))


def test_frozen_clip_features_equal_frames(frozen_clip):
    method = _ma_fsar(backbone=frozen_clip).eval()
    episode = frames_episode(seed=4)
    with torch.no_grad():
        cached = EpisodeInputs(
            support=frozen_clip.encode_frames(episode.support), support_labels=episode.support_labels,
            query=frozen_clip.encode_frames(episode.query), class_names=episode.class_names, features=True,
        )
        torch.testing.assert_close(method(episode).log_probs, method(cached).log_probs)


def test_learned_projections_without_a_shared_space():
    method = _ma_fsar(backbone=ToyEncoder(feature_dim=24, text_dim=12, shared_space=False), embed_dim=16,
                      start="standard")
    assert method.space.dim == 16
    assert method.space.visual_proj.in_features == 24 and method.space.text_proj.in_features == 12
    method.train()
    method(features_episode(dim=24)).loss.backward()
    assert method.space.visual_proj.weight.grad is not None and method.space.text_proj.weight.grad is not None
    assert all(p.grad is None for p in method.encoder.parameters())


def test_embedded_pair_runs_on_cached_features_and_frames():
    method = fsar.create_method("ma-fsar", backbone=shared_embedded_pair())
    # the embedded pair starts from the training-free core: frames stay 1280-d
    assert method.config.finetune == "frozen" and method.config.start == "training-free"
    assert method.space.dim == 1280
    assert all(not k.startswith("encoder.") for k in method.trainable_state_dict())
    method.train()
    out = method(features_episode(dim=1280, way=2, shot=1, queries=1))
    assert out.log_probs.shape == (2, 2) and torch.isfinite(out.loss)
    method.eval()
    with torch.no_grad():
        out = method(frames_episode(way=2, shot=1, queries=1, frames=2, size=32))
    assert out.log_probs.shape == (2, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "finetune, tunable",
    [("frozen", 3_150_336), ("full", 87_849_216 + 3_150_336)],  # spec §8 exact checks (Table 4)
)
def test_parameter_counts_of_the_full_size_model(finetune, tunable):
    """Full-size CLIP ViT-B/32 (random weights): total = 151.28M + TPCM = 154.43M; tunable
    3.15M (frozen CLIP + TPCM) or 91.00M (fine-tuned visual-only). +1 is the logit scale."""
    method = fsar.create_method("ma-fsar", backbone="clip-vit-b32", weights="random", finetune=finetune,
                                tpcm_pre_ln=False)
    total = sum(p.numel() for p in method.parameters())
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    assert total == 151_277_313 + 3_150_336 + 1
    assert trainable == tunable + 1


def test_old_prototype_option_still_builds_with_a_warning(frozen_clip, caplog):
    """Checkpoints written before the one K-shot vocabulary saved prototype=mean|raw."""
    with caplog.at_level("WARNING"):
        old = _ma_fsar(backbone=frozen_clip, prototype="raw")
    assert old.config.shots == "metric"
    assert "prototype='raw' is deprecated; use shots='metric'" in caplog.text
    assert _ma_fsar(backbone=frozen_clip, prototype="mean").config.shots == "prototype"
    with pytest.raises(ValueError, match="shots must be one of"):
        _ma_fsar(backbone=frozen_clip, shots="raw")
