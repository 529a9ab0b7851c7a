"""MPMM (fsar.metrics.mpmm): cue scores, per-class standardisation, soft/hard/equal cue selection, α prior,
no learnable parameters, and single-cue equivalence to nearest-prototype classification (spec §10)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fsar.metrics as metrics
from fsar.metrics.mpmm import CUES, MPMM


def episode(way=5, shots=2, n_query=7, frames=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(way * shots, frames, dim, generator=g)
    labels = torch.arange(way).repeat_interleave(shots)
    query = torch.randn(n_query, frames, dim, generator=g)
    support_text = torch.randn(way * shots, dim, generator=g)
    query_text = torch.randn(n_query, dim, generator=g)
    return support, labels, query, support_text, query_text


def prototypes(support, labels, way, support_text=None):
    frames = torch.stack([support[labels == c].mean(0) for c in range(way)])
    text = None if support_text is None else F.normalize(
        torch.stack([support_text[labels == c].mean(0) for c in range(way)]), dim=-1)
    return frames, text


def test_no_learnable_parameters():
    metric = MPMM(cues=CUES, alpha=0.25)
    assert list(metric.parameters()) == []
    assert not any(isinstance(m, torch.nn.Parameter) for m in metric.modules())
    assert metrics.build("mpmm").__class__ is MPMM


def test_cue_scores_follow_their_definitions():
    support, labels, query, s_text, q_text = episode()
    proto_v, proto_t = prototypes(support, labels, 5, s_text)
    metric = MPMM(cues=CUES)
    scores = metric.cue_scores(query, proto_v, q_text, proto_t)
    assert scores.shape == (7, 5, 4)
    cos = lambda a, b: F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # noqa: E731
    otam = metrics.build("otam", lam=0.5, shots="prototype", combine="mean")
    torch.testing.assert_close(scores[..., 0], otam(proto_v, torch.arange(5), query, 5))
    torch.testing.assert_close(scores[..., 1], cos(query.mean(1), proto_v.mean(1)))
    torch.testing.assert_close(scores[..., 2], cos(q_text, proto_t))
    torch.testing.assert_close(scores[..., 3], cos(query.mean(1), proto_t))


def test_standardisation_per_query_and_cue():
    metric = MPMM(cues=("global",))
    scores = torch.randn(3, 5, 2) * 4 + 7
    z = metric.standardise(scores)
    torch.testing.assert_close(z.mean(1), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(3, 2), atol=1e-4, rtol=0)
    # invariant to a shift and positive scale of one cue
    torch.testing.assert_close(metric.standardise(scores * 3 + 1), z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cue", CUES)
def test_single_cue_is_nearest_prototype_classification(cue):
    support, labels, query, s_text, q_text = episode(seed=2)
    proto_v, proto_t = prototypes(support, labels, 5, s_text)
    result = MPMM(cues=(cue,)).match(query, proto_v, q_text, proto_t)
    raw = result.scores[..., 0]
    assert torch.equal(result.log_probs.argmax(-1), raw.argmax(-1))
    z = (raw - raw.mean(1, keepdim=True)) / (raw.std(1, unbiased=False, keepdim=True) + 1e-6)
    torch.testing.assert_close(result.log_probs, F.log_softmax(z / 0.5, dim=-1))
    torch.testing.assert_close(result.weights, torch.ones(7, 1))
    if cue == "global":  # the registered proto metric's nearest prototype
        nearest = metrics.build("proto")(support, labels, query, 5).argmax(-1)
        assert torch.equal(result.log_probs.argmax(-1), nearest)
    if cue == "temporal":
        nearest = metrics.build("otam", lam=0.5, shots="prototype")(support, labels, query, 5).argmax(-1)
        assert torch.equal(result.log_probs.argmax(-1), nearest)


def test_soft_weights_follow_the_margins_and_hard_picks_the_largest():
    scores = torch.tensor([[[5.0, 0.0], [0.0, 0.1], [0.0, 0.09]]])  # cue 0 decisive, cue 1 torn between two
    soft = MPMM(cues=("global", "text"), kappa=0.05).fuse(scores, ("global", "text"))
    p = F.softmax(MPMM(cues=("global",)).standardise(scores) / 0.5, dim=1)
    top = p.topk(2, dim=1).values
    gamma = top[:, 0] - top[:, 1]
    torch.testing.assert_close(soft.weights, F.softmax(gamma / 0.05, dim=-1))
    assert soft.weights[0, 0] > 0.99
    torch.testing.assert_close(soft.log_probs, torch.log((soft.weights[:, None] * p).sum(-1)))
    hard = MPMM(cues=("global", "text"), fusion="hard").fuse(scores, ("global", "text"))
    assert hard.weights.tolist() == [[1.0, 0.0]]
    torch.testing.assert_close(hard.log_probs, p[..., 0].log())
    equal = MPMM(cues=("global", "text"), fusion="equal").fuse(scores, ("global", "text"))
    torch.testing.assert_close(equal.log_probs, torch.log(p.mean(-1)))


def test_alpha_prior_moves_weight_between_text_and_visual_cues():
    scores = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(3))
    cues = ("global", "text")
    plain = MPMM(cues=cues).fuse(scores, cues).weights
    text_heavy = MPMM(cues=cues, alpha=0.9).fuse(scores, cues).weights
    assert (text_heavy[:, 1] > plain[:, 1]).all()
    equal = MPMM(cues=cues, fusion="equal", alpha=0.75).fuse(scores, cues).weights
    torch.testing.assert_close(equal, torch.tensor([[0.25, 0.75]]).expand(4, 2))
    only_text = MPMM(cues=cues, alpha=1.0, fusion="hard").fuse(scores, cues).weights
    assert only_text[:, 1].eq(1).all()
    with pytest.raises(ValueError, match="zero weight"):
        MPMM(cues=("temporal", "global"), alpha=1.0)


def test_metric_form_uses_text_only_when_given_and_refuses_missing_text():
    support, labels, query, s_text, q_text = episode(seed=4)
    auto = MPMM()
    visual = auto(support, labels, query, 5)
    both = auto(support, labels, query, 5, support_text=s_text, query_text=q_text)
    assert visual.shape == both.shape == (7, 5) and not torch.allclose(visual, both)
    torch.testing.assert_close(visual.exp().sum(-1), torch.ones(7))
    with pytest.raises(ValueError, match="need textual features"):
        MPMM(cues=CUES)(support, labels, query, 5)
    with pytest.raises(ValueError, match="both support_text and query_text"):
        auto(support, labels, query, 5, support_text=s_text)
    with pytest.raises(ValueError, match="cues must be"):
        MPMM(cues=("global", "nope"))


def test_gradients_reach_the_inputs_of_every_cue():
    support, labels, query, s_text, q_text = episode(seed=5)
    proto_v, proto_t = prototypes(support, labels, 5, s_text)
    query.requires_grad_(True)
    q_text.requires_grad_(True)
    result = MPMM(cues=CUES).match(query, proto_v, q_text, proto_t)
    F.cross_entropy(result.cue_logits.permute(0, 2, 1).reshape(-1, 5), torch.zeros(28, dtype=torch.long)).backward()
    assert query.grad.abs().sum() > 0 and q_text.grad.abs().sum() > 0


def test_one_class_episode_is_uniform_not_nan():
    result = MPMM(cues=("global",)).match(torch.randn(2, 3, 4), torch.randn(1, 3, 4))
    assert torch.equal(result.log_probs, torch.zeros(2, 1))
