"""TRX: original weights load and reproduce the golden logits; vectorised classes; options."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fsar.metrics as metrics
from fsar.metrics.trx import TRX, trx_from_reference

from metrics_reference import REFERENCE


def _reference(case: str):
    path = REFERENCE / f"trx_{case}.npz"
    with np.load(path) as z:
        data = {key: z[key] for key in z.files}
    constructor = json.loads((REFERENCE / f"trx_{case}_constructor.json").read_text())
    with np.load(REFERENCE / f"trx_{case}_state_dict.npz") as z:
        state = {key: z[key] for key in z.files}
    return data, constructor, state


@pytest.mark.parametrize("case", "abc")
def test_reference_weights_reproduce_reference_logits(case: str) -> None:
    z, constructor, state = _reference(case)
    way = json.loads(str(z["meta_json"]))["way"]
    module = trx_from_reference(constructor["constructor_args"], state)
    assert not module.training
    inputs32 = (torch.from_numpy(z["support"]), torch.from_numpy(z["support_labels"]), torch.from_numpy(z["query"]))
    logits32 = module(inputs32[0], inputs32[1], inputs32[2], way)
    np.testing.assert_allclose(logits32.detach().numpy(), z["logits_f64"], rtol=1e-5, atol=1e-4)
    module = module.double()
    support, labels, query = inputs32[0].double(), inputs32[1], inputs32[2].double()
    with torch.no_grad():
        per_card = module.forward_per_cardinality(support, labels, query, way)
        logits = module(support, labels, query, way)
    np.testing.assert_allclose(per_card[0].numpy(), z["logits_card2_f64"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(per_card[1].numpy(), z["logits_card3_f64"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logits.numpy(), z["logits_f64"], rtol=1e-9, atol=1e-9)


def test_reference_loader_rejects_wrong_weights() -> None:
    _, constructor, state = _reference("c")
    with pytest.raises(ValueError, match="shape mismatch"):
        trx_from_reference({**constructor["constructor_args"], "trans_linear_out_dim": 64}, state)
    del state["transformers.1.k_linear.bias"]
    with pytest.raises(ValueError, match="does not fit"):
        trx_from_reference(constructor, state)


def _class_loop(module: TRX, support, labels, query, way):
    """TRX written the original way: explicit tuples, a loop over classes."""
    outs = []
    for tc in module.transformers:
        s, q = tc.pe(support), tc.pe(query)
        tuples = list(itertools.combinations(range(s.shape[1]), tc.cardinality))
        s_t = torch.stack([s[:, list(t)].flatten(1) for t in tuples], 1)
        q_t = torch.stack([q[:, list(t)].flatten(1) for t in tuples], 1)
        s_k, q_k = tc.norm_k(tc.k_linear(s_t)), tc.norm_k(tc.k_linear(q_t))
        s_v, q_v = tc.v_linear(s_t), tc.v_linear(q_t)
        logits = torch.zeros(query.shape[0], way, dtype=support.dtype)
        for c in range(way):
            k_c = s_k[labels == c].reshape(-1, s_k.shape[-1])
            v_c = s_v[labels == c].reshape(-1, s_v.shape[-1])
            attention = torch.softmax(q_k @ k_c.T / math.sqrt(k_c.shape[-1]), -1)
            logits[:, c] = -((q_v - attention @ v_c) ** 2).sum((1, 2)) / len(tuples)
        outs.append(logits)
    return torch.stack(outs).mean(0)


def test_vectorised_classes_equal_the_class_loop_with_unequal_shots(monkeypatch) -> None:
    torch.manual_seed(0)
    module = TRX(feature_dim=12, out_dim=16, seq_len=5, cardinalities=(1, 2, 4)).double().eval()
    generator = torch.Generator().manual_seed(1)
    labels = torch.tensor([2, 0, 1, 0, 0, 2])
    support = torch.randn(6, 5, 12, generator=generator, dtype=torch.float64)
    query = torch.randn(4, 5, 12, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        expected = _class_loop(module, support, labels, query, 3)
        torch.testing.assert_close(module(support, labels, query, 3), expected)
        # memory-bounded path: queries in chunks of one
        monkeypatch.setattr("fsar.metrics.trx.ATTENTION_CHUNK_ELEMENTS", 1)
        torch.testing.assert_close(module(support, labels, query, 3), expected)


def test_properties_and_frame_counts() -> None:
    torch.manual_seed(0)
    module = metrics.build("trx", feature_dim=16, out_dim=32, seq_len=6).double().eval()
    generator = torch.Generator().manual_seed(4)
    labels = torch.arange(3)
    support = torch.randn(3, 6, 16, generator=generator, dtype=torch.float64)
    query = torch.randn(5, 6, 16, generator=generator, dtype=torch.float64)
    assert int(module(support, labels, support[2:3].clone(), 3).argmax()) == 2
    logits = module(support, labels, query, 3)
    assert logits.shape == (5, 3)
    order = torch.tensor([1, 2, 0])
    torch.testing.assert_close(module(support[order], labels[order], query, 3), logits)
    # query clips may be longer or shorter than support clips (up to 1.5 * seq_len)
    assert module(support, labels, query[:, :4], 3).shape == (5, 3)
    assert module(support, labels, torch.randn(2, 9, 16, dtype=torch.float64), 3).shape == (2, 3)
    with pytest.raises(ValueError, match="positional encoding"):
        module(support, labels, torch.randn(2, 10, 16, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="feature sizes"):
        module(support[..., :8], labels, query[..., :8], 3)
    s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
    module(s, labels, q, 3).sum().backward()
    for grad in (s.grad, q.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # dropout on the positional encoding makes training mode stochastic, eval deterministic
    module.train()
    assert not torch.allclose(module(support, labels, query, 3), module(support, labels, query, 3))
