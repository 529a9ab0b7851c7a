"""fsar.metrics.build/available and the episode checks every metric shares."""

from __future__ import annotations

import pytest
import torch

import fsar.metrics as metrics

#: Every registered metric is tested below; a new one joins by registering itself.
NAMES = metrics.available()
#: Metrics that must stay registered (a refactor that drops one fails here).
EXPECTED = {
    "abmhm", "bimhm", "bimhm_hyrsm1shot", "bimhm_hyrsm5shot", "otam", "otam_clipfsar",
    "otam_plain", "proto", "proto_tsn_cos", "proto_tsn_sqeuclid", "trx",
}
#: Constructor options a metric needs to be built at the test's sizes (D = 8, T = 4).
BUILD_OPTIONS = {"trx": {"feature_dim": 8, "out_dim": 8, "seq_len": 4}}
#: Metrics whose logits are not "nearest class wins" without training: TRX scores through
#: randomly initialised projections.
NOT_NEAREST_BY_CONSTRUCTION = {"trx"}


def _build(name: str) -> torch.nn.Module:
    return metrics.build(name, **BUILD_OPTIONS.get(name, {}))


def _episode(seed: int = 0, way: int = 3, shot: int = 2, n_query: int = 4):
    generator = torch.Generator().manual_seed(seed)
    support = torch.randn(way * shot, 4, 8, generator=generator)
    labels = torch.arange(way).repeat_interleave(shot)
    query = torch.randn(n_query, 4, 8, generator=generator)
    return support, labels, query, way


def test_available_and_unknown_name() -> None:
    assert EXPECTED <= set(NAMES), f"missing from the registry: {sorted(EXPECTED - set(NAMES))}"
    assert NAMES == sorted(NAMES)
    with pytest.raises(ValueError, match="unknown metric 'dtw'"):
        metrics.build("dtw")


def test_presets_take_overrides() -> None:
    assert metrics.build("otam_plain").lam == 0.1
    assert metrics.build("otam_clipfsar").lam == 0.5
    assert metrics.build("otam_clipfsar", lam=0.2).lam == 0.2


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_value_error_naming_the_problem(name: str) -> None:
    metric = _build(name)
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(4, 4, 8, generator=generator)
    query = torch.randn(3, 4, 8, generator=generator)
    labels = torch.tensor([0, 1, 0, 1])
    assert metric(support, labels, query, 2).shape == (3, 2)
    cases = [
        ((support, labels, torch.randn(3, 4, 6), 2), "mismatched feature sizes"),
        ((support, torch.tensor([0, 1, 2, 1]), query, 2), r"support_labels outside 0\.\.1: \[2\]"),
        ((support, torch.tensor([0, -1, 0, 1]), query, 2), "outside"),
        ((support, labels, query, 3), r"class\(es\) \[2\] have no support clip"),
        ((support.clone().index_fill_(0, torch.tensor([1]), float("nan")), labels, query, 2), "NaN in support"),
        ((support, labels, query.clone().index_fill_(0, torch.tensor([2]), float("nan")), 2), "NaN in query"),
        ((support, labels, query.clone().index_fill_(0, torch.tensor([2]), float("inf")), 2), "inf in query"),
        ((support, labels[:3], query, 2), "support_labels must have shape"),
        ((support[0], labels, query, 2), "support must have shape"),
        ((support, labels.float(), query, 2), "must be integers"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            metric(*args)


def test_mixed_precision_inputs_are_promoted_and_labels_may_be_int32() -> None:
    generator = torch.Generator().manual_seed(1)
    support = torch.randn(4, 4, 8, generator=generator)
    query = torch.randn(3, 4, 8, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1], dtype=torch.int32)
    for name in ("proto", "otam", "bimhm", "abmhm"):
        logits = metrics.build(name)(support, labels, query, 2)
        expected = metrics.build(name)(support.double(), labels.long(), query, 2)
        assert logits.dtype == torch.float64
        torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("name", NAMES)
def test_class_order_permutes_logit_columns(name: str) -> None:
    """Relabelling the support classes permutes the logits' columns and nothing else."""
    torch.manual_seed(0)
    metric = _build(name).eval()
    support, labels, query, way = _episode()
    permutation = torch.tensor([2, 0, 1])  # class c becomes class permutation[c]
    with torch.no_grad():
        logits = metric(support, labels, query, way)
        relabelled = metric(support, permutation[labels], query, way)
    torch.testing.assert_close(relabelled[:, permutation], logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(NAMES) - NOT_NEAREST_BY_CONSTRUCTION))
def test_a_query_equal_to_a_support_clip_scores_its_class_highest(name: str) -> None:
    metric = _build(name).eval()
    support, labels, query, way = _episode(seed=3, shot=1)
    logits = metric(support, labels, support.clone(), way)  # higher = more likely, everywhere
    assert logits.argmax(1).tolist() == labels.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_support_and_query(name: str) -> None:
    metric = _build(name)
    support, labels, query, way = _episode(seed=5)
    support.requires_grad_(True)
    query.requires_grad_(True)
    metric(support, labels, query, way).sum().backward()
    for tensor in (support, query):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
