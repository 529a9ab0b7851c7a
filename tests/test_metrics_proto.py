"""Prototype / TSN heads: golden files of CNN_TSN, default prototype cosine, properties."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import fsar.metrics as metrics
from fsar.metrics.proto import PrototypeMetric

from metrics_reference import load_reference as _load
from metrics_reference import reference_episode as _episode


@pytest.mark.parametrize("case", "abc")
@pytest.mark.parametrize("preset, atol32", [("proto_tsn_cos", 1e-5), ("proto_tsn_sqeuclid", 1e-4)])
def test_presets_match_reference_files(preset: str, atol32: float, case: str) -> None:
    z = _load(f"{preset}_{case}")
    metric = metrics.build(preset)
    np.testing.assert_allclose(metric(*_episode(z)).numpy(), z["logits_f64"], rtol=1e-9, atol=1e-12)
    logits32 = metric(*_episode(z, torch.float32)).numpy()
    np.testing.assert_allclose(logits32, z["logits_f64"], rtol=1e-5, atol=atol32)


def _random_episode(way=3, shot=2, n_query=4, frames=6, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(way).repeat(shot)
    support = torch.randn(way * shot, frames, dim, generator=generator, dtype=torch.float64)
    query = torch.randn(n_query, frames, dim, generator=generator, dtype=torch.float64)
    return support, labels, query, way


def test_default_is_cosine_to_the_mean_prototype() -> None:
    support, labels, query, way = _random_episode(shot=3)
    logits = metrics.build("proto")(support, labels, query, way)
    prototypes = torch.stack([support[labels == c].mean((0, 1)) for c in range(way)])
    expected = torch.nn.functional.cosine_similarity(query.mean(1)[:, None], prototypes[None], dim=-1)
    torch.testing.assert_close(logits, expected)
    # the mean of per-clip cosines (TSN head) is a different quantity
    per_clip = PrototypeMetric(shots="distance")(support, labels, query, way)
    assert not torch.allclose(per_clip, logits)
    sq = PrototypeMetric(distance="sqeuclid")(support, labels, query, way)
    torch.testing.assert_close(sq, -((query.mean(1)[:, None] - prototypes[None]) ** 2).sum(-1))


@pytest.mark.parametrize("name", ["proto", "proto_tsn_cos", "proto_tsn_sqeuclid"])
def test_properties_identity_reversal_permutation_gradients(name: str) -> None:
    support, labels, query, way = _random_episode(shot=1, seed=3)
    metric = metrics.build(name)
    probe = support[1:2].clone()
    assert int(metric(support, labels, probe, way).argmax()) == int(labels[1])
    logits = metric(support, labels, query, way)
    torch.testing.assert_close(metric(support, labels, query.flip(1), way), logits)  # order-free
    order = torch.tensor([2, 0, 1])
    torch.testing.assert_close(metric(support[order], labels[order], query, way), logits)
    s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
    metric(s, labels, q, way).sum().backward()
    for grad in (s.grad, q.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="distance"):
        PrototypeMetric(distance="l1")
    with pytest.raises(ValueError, match="shots"):
        PrototypeMetric(shots="median")
