"""The ``lga`` method: registry, geometric-mean fusion, AB-MHM over fused stages, descriptions,
losses, ablations, no query-label leakage, learning on a toy temporal task."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F

import fsar
from fsar import metrics
from fsar.lga.segment import cluster_segment
from fsar.metrics.stages import stage_mask
from fsar.methods.lga import LGA, geometric_mean_log_probs
from methods_toys import ToyEncoder, features_episode, frames_episode, tiny_clip

pytestmark = pytest.mark.usefixtures("single_thread")

DIM = 16



def toy_lga(**options) -> LGA:
    torch.manual_seed(0)
    options.setdefault("fusion_heads", 4)
    options.setdefault("fusion_dropout", 0.0)
    return fsar.create_method("lga", backbone=ToyEncoder(feature_dim=DIM, text_dim=DIM), **options)


def episode(**kw):
    kw.setdefault("frames", 8)
    return features_episode(dim=DIM, **kw)


def test_registered_and_config_json():
    assert "lga" in fsar.list_methods()
    method = toy_lga(alpha=0.7, num_stages=3)
    assert isinstance(method, LGA) and method.config.alpha == 0.7
    json.dumps(dataclasses.asdict(method.config))
    assert isinstance(method.metric, metrics.ABMHM)  # the shared fsar.metrics AB-MHM, no copy
    with pytest.raises(ValueError, match="unknown option"):
        toy_lga(stages=3)
    with pytest.raises(ValueError, match="alpha"):
        toy_lga(alpha=1.5)
    with pytest.raises(ValueError, match="segmentation"):
        toy_lga(segmentation="kmeans")


def test_geometric_mean_reference_values():
    p_vv = torch.tensor([[0.8, 0.2]])
    p_vt = torch.tensor([[0.2, 0.8]])
    # α = 0.5: sqrt(.8*.2) for both classes -> uniform after renormalisation
    out = geometric_mean_log_probs(p_vv.log(), p_vt.log(), 0.5).exp()
    assert torch.allclose(out, torch.tensor([[0.5, 0.5]]))
    # α = 0.75: .8^.75 .2^.25 vs .2^.75 .8^.25, renormalised (not the arithmetic mix .65/.35)
    a, b = 0.8**0.75 * 0.2**0.25, 0.2**0.75 * 0.8**0.25
    out = geometric_mean_log_probs(p_vv.log(), p_vt.log(), 0.75).exp()
    assert torch.allclose(out, torch.tensor([[a / (a + b), b / (a + b)]]))
    assert not torch.allclose(out, torch.tensor([[0.65, 0.35]]), atol=1e-3)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_evaluation_combines_vv_and_vt_training_uses_vv_only(alpha):
    method = toy_lga(alpha=alpha)
    ep = episode()
    method.eval()
    out = method(ep)
    expected = F.log_softmax(alpha * out.parts["log_p_vv"] + (1 - alpha) * out.parts["log_p_vt"], -1)
    assert torch.allclose(out.log_probs, expected, atol=1e-6)
    assert out.loss is None
    if alpha == 1.0:
        assert torch.allclose(out.log_probs, out.parts["log_p_vv"], atol=1e-6)
    if alpha == 0.0:
        assert torch.allclose(out.log_probs, out.parts["log_p_vt"], atol=1e-6)
    method.train()
    out = method(ep)
    assert torch.allclose(out.log_probs, out.parts["log_p_vv"])
    assert out.loss is not None and out.loss.requires_grad


def test_vv_is_abmhm_over_concatenated_fused_stages():
    """With the fusion replaced by the identity, V-V equals AB-MHM on the raw clips with the
    CLUSTER-Segment stage masks (overlaps included): the concatenated-stage layout is exact."""
    method = toy_lga(learn_metric_temperature=False, metric_temperature=1.0)
    method.fusion.forward = lambda stages, valid, text=None: stages
    ep = episode(shot=2, way=3, queries=2)
    method.eval()
    out = method(ep)
    masks = stage_mask(cluster_segment(torch.cat([ep.support, ep.query]), 3), 8, overlap=1)
    n_s = ep.support.shape[0]
    direct = metrics.build("abmhm")(
        ep.support, ep.support_labels, ep.query, 3, support_stages=masks[:n_s], query_stages=masks[n_s:]
    )
    assert torch.allclose(out.parts["log_p_vv"], F.log_softmax(direct, -1), atol=1e-5)


def test_query_labels_never_influence_predictions():
    method = toy_lga().eval()
    ep = episode()
    base = method(ep).log_probs
    ep.query_labels = ep.query_labels.flip(0)
    assert torch.equal(method(ep).log_probs, base)
    ep.query_labels = None
    assert torch.equal(method(ep).log_probs, base)


def test_class_order_equivariance():
    """Relabelling the episode permutes the score columns and nothing else."""
    method = toy_lga().eval()
    ep = episode(way=3, shot=1)
    out = method(ep).log_probs
    perm = torch.tensor([2, 0, 1])  # new label of old class c
    inverse = torch.argsort(perm)
    relabelled = dataclasses.replace(
        ep,
        support_labels=perm[ep.support_labels],
        query_labels=perm[ep.query_labels],
        class_names=[ep.class_names[i] for i in inverse],
    )
    out2 = method(relabelled).log_probs
    assert torch.allclose(out2[:, perm], out, atol=1e-5)


def test_query_fusion_gets_no_text():
    method = toy_lga().eval()
    seen = []
    original = method.fusion.forward

    def spy(stages, valid, text=None):
        seen.append(text is not None)
        return original(stages, valid, text)

    method.fusion.forward = spy
    method(episode())
    assert seen == [True, False]  # support with its class's stage texts, query without


def test_descriptions_are_used_and_missing_ones_described_once(caplog):
    ep = episode()
    names = ep.class_names
    given = {n: [f"{n} onset", f"{n} middle", f"{n} end"] for n in names}
    method = toy_lga(descriptions=given).eval()
    base = method(ep)
    changed = dict(given)
    changed[names[0]] = ["x", "y", "z"]
    other = toy_lga(descriptions=changed).eval()
    assert not torch.allclose(other(ep).parts["log_p_vt"], base.parts["log_p_vt"])

    class Counting:
        source = "fake"
        calls: list = []

        def describe(self, name, num_stages):
            self.calls.append(name)
            return [f"{name} {i}" for i in range(num_stages)]

    describer = Counting()
    method = toy_lga(descriptions={names[0]: given[names[0]]}, describer=describer).eval()
    method(ep)
    method(ep)
    assert sorted(describer.calls) == sorted(names[1:])  # once each, only the missing ones

    with caplog.at_level(logging.WARNING):
        method = toy_lga().eval()
        method(ep)
        method(episode(seed=5, names=["other one", "other two", names[0]]))  # classes met later: no new line
    warned = [r for r in caplog.records if "template fallback" in r.getMessage()]
    assert len(warned) == 1 and f"{len(names)} class(es)" in warned[0].getMessage()  # one line, not one per class
    with caplog.at_level(logging.WARNING):  # all classes known up front (fsar eval/train): one line with all
        caplog.clear()
        toy_lga().load_resources({}, class_names=[*names, "other one"])
    assert [r.getMessage() for r in caplog.records if "template fallback" in r.getMessage()] == [
        r.getMessage() for r in caplog.records][:1] and f"{len(names) + 1} class(es)" in caplog.text
    assert method.descriptions[names[0]][0].startswith("the start of")

    with pytest.raises(ValueError, match="must be 3 non-empty strings"):
        toy_lga(descriptions={"a": ["only", "two"]})


def test_contrastive_loss_over_training_classes():
    ep = episode()
    method = toy_lga(contrastive_weight=0.0).train()
    out = method(ep)
    assert torch.allclose(out.loss, out.parts["loss_vv"])
    method = toy_lga(contrastive_weight=2.0).train()
    out = method(ep)
    assert torch.allclose(out.loss, out.parts["loss_vv"] + 2.0 * out.parts["loss_contrastive"])
    method.set_training_classes(ep.class_names + ["extra class a", "extra class b"])
    out_more = method(ep)
    # more negative classes in the softmax -> a larger contrastive loss on the same clips
    assert out_more.parts["loss_contrastive"] > out.parts["loss_contrastive"]
    method.set_training_classes(["something else"] * 1)
    with pytest.raises(ValueError, match="not among the training classes"):
        method(ep)


def test_gradients_reach_fusion_projections_and_temperatures_on_unshared_space():
    torch.manual_seed(0)
    encoder = ToyEncoder(feature_dim=12, text_dim=20, shared_space=False)
    method = fsar.create_method("lga", backbone=encoder, fusion_heads=4, embed_dim=16, start="standard").train()
    out = method(features_episode(dim=12, frames=8))
    out.loss.backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert any(n.startswith("space.text_proj") for n in trainable)
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert not any(p.requires_grad for p in method.encoder.parameters())


def test_ablations_run_and_change_the_model():
    ep = episode()
    full = toy_lga().eval()(ep).log_probs
    no_visual = toy_lga(visual_anatomy=False)
    assert no_visual.stages_used == 1
    out = no_visual.eval()(ep).log_probs
    assert out.shape == full.shape and not torch.allclose(out, full)

    class Exploding:
        source = "never"

        def describe(self, name, num_stages):
            raise AssertionError("textual anatomy is off: no description may be requested")

    no_text = toy_lga(textual_anatomy=False, describer=Exploding()).eval()
    assert not torch.allclose(no_text(ep).log_probs, full)
    uniform = toy_lga(segmentation="uniform").eval()(ep).log_probs
    assert not torch.allclose(uniform, full)
    assert toy_lga(segmentation="tw-finch").eval()(ep).log_probs.shape == full.shape


def test_tiny_clip_frames_end_to_end_gradients_reach_encoder():
    method = fsar.create_method("lga", backbone=tiny_clip("full"), fusion_heads=4).train()
    out = method(frames_episode(frames=8))
    out.loss.backward()
    grads = [p.grad for p in method.encoder.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert method.config.finetune == "full"
    assert toy_lga().config.finetune == "frozen"  # a ready encoder keeps its own mode


class StageTask:
    """Toy cached-feature task shaped like LGA's premise: a class is an *ordered* triple of
    stage patterns drawn from a shared pool (so only order separates some classes), each clip
    has random, uneven stage lengths, and noise on top. Deterministic from the index."""

    def __init__(self, *, dim=DIM, frames=8, noise=0.8, classes=None) -> None:
        g = torch.Generator().manual_seed(1234)
        self.dim, self.frames, self.noise = dim, frames, noise
        pool = 2.0 * torch.randn(4, dim, generator=g)
        orders = [(0, 1, 2), (2, 1, 0), (0, 2, 3), (3, 2, 0), (1, 3, 2), (2, 3, 1)]
        self.classes = classes or [f"action {i}" for i in range(len(orders))]
        self.stages = {name: pool[list(order)] for name, order in zip(self.classes, orders)}

    def clip(self, name, g):
        cuts = torch.randperm(self.frames - 1, generator=g)[:2].sort().values + 1
        lengths = [int(cuts[0]), int(cuts[1] - cuts[0]), int(self.frames - cuts[1])]
        frames = torch.cat([self.stages[name][i].expand(n, -1) for i, n in enumerate(lengths)])
        return frames + self.noise * torch.randn(self.frames, self.dim, generator=g)

    def episode(self, index, *, way=3, queries=2):
        from fsar.data.inputs import EpisodeInputs

        g = torch.Generator().manual_seed(index)
        names = [self.classes[i] for i in torch.randperm(len(self.classes), generator=g)[:way].tolist()]
        return EpisodeInputs(
            support=torch.stack([self.clip(n, g) for n in names]),
            support_labels=torch.arange(way),
            query=torch.stack([self.clip(n, g) for n in names for _ in range(queries)]),
            query_labels=torch.arange(way).repeat_interleave(queries),
            class_names=names,
            features=True,
        )


def test_learns_a_temporal_toy_task():
    """A few dozen episodes of training lift held-out accuracy on an order-defined stage task."""
    task = StageTask()
    method = toy_lga()

    def accuracy():
        method.eval()
        hits = total = 0
        with torch.no_grad():
            for i in range(40):
                ep = task.episode(10_000 + i)
                hits += (method(ep).log_probs.argmax(-1) == ep.query_labels).sum().item()
                total += ep.query_labels.numel()
        return hits / total

    before = accuracy()
    optimiser = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    method.train()
    for i in range(60):
        out = method(task.episode(i))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    after = accuracy()
    assert after > before + 0.1 or after > 0.9, (before, after)
    assert math.isfinite(out.loss.item())


def _backbone(name):
    from methods_toys import TINY_CLIP, shared_embedded_pair, shared_frozen_clip

    from fsar.encoders import create_encoder

    if name == "clip-vit-b32":
        return shared_frozen_clip()
    if name == "clip-vit-b16":
        return create_encoder("clip-vit-b16", weights="random", finetune="frozen", **TINY_CLIP)
    return shared_embedded_pair()


@pytest.mark.parametrize("backbone", ["clip-vit-b32", "clip-vit-b16", "effnet-lite0+minilm"])
def test_every_backbone_frames_or_cached_features(backbone):
    """LGA runs on every registered backbone: CLIP from frames, the embedded pair from features."""
    encoder = _backbone(backbone)
    torch.manual_seed(0)
    method = fsar.create_method("lga", backbone=encoder, fusion_heads=4, embed_dim=32)
    assert method.backbone_name == backbone
    if backbone.startswith("clip"):
        ep = frames_episode(frames=8, size=encoder.image_size)
    else:
        ep = features_episode(dim=encoder.feature_dim, frames=8)
    out = method.train()(ep)
    out.loss.backward()
    if backbone.startswith("clip"):
        assert method.config.start == "standard" and method.fusion.norm_query.weight.grad is not None
    else:  # the training-free start: the fusion's zero-initialised up-projection learns first
        assert method.config.start == "training-free" and method.fusion.up.weight.grad.abs().sum() > 0
    evaluated = method.eval()(ep)
    assert evaluated.log_probs.shape == (ep.query.shape[0], ep.way)
    assert torch.allclose(evaluated.log_probs.exp().sum(-1), torch.ones(ep.query.shape[0]), atol=1e-5)
