"""LGA Fine-grained Multimodal Fusion: shapes, masking, text conditioning, prototype layout."""

from __future__ import annotations

import pytest
import torch

from fsar.lga.fusion import StageFusion, concat_stages
from fsar.lga.segment import gather_stages
from fsar.metrics.stages import stage_mask


def packed(batch=3, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch, 8, dim, generator=g)
    bounds = torch.tensor([[0, 2, 6, 8], [0, 3, 5, 8], [0, 1, 2, 8]])[:batch]
    stages, valid = gather_stages(frames, stage_mask(bounds, 8, overlap=1))
    return stages, valid


def fusion(dim=16, **kw):
    torch.manual_seed(0)
    return StageFusion(dim, heads=4, dropout=0.0, **kw).eval()


def test_shapes_and_padded_slots_are_zero():
    stages, valid = packed()
    text = torch.randn(3, 3, 16)
    out = fusion()(stages, valid, text)
    assert out.shape == stages.shape
    assert (out[~valid] == 0).all() and (out[valid].abs().sum(-1) > 0).all()


def test_padding_content_never_leaks():
    stages, valid = packed()
    module = fusion()
    noisy = stages.clone()
    noisy[~valid] = 1e3 * torch.randn(int((~valid).sum()), 16)
    assert torch.allclose(module(stages, valid), module(noisy, valid), atol=1e-5)


def test_no_text_equals_zero_text_and_text_changes_support():
    stages, valid = packed()
    module = fusion()
    visual = module(stages, valid)
    assert torch.allclose(visual, module(stages, valid, torch.zeros(3, 3, 16)), atol=1e-6)
    text = torch.randn(3, 3, 16)
    conditioned = module(stages, valid, text)
    assert not torch.allclose(visual[valid], conditioned[valid], atol=1e-3)


def test_stage_text_only_enters_its_own_stage_query_but_attention_is_global():
    stages, valid = packed(batch=1)
    module = fusion(residual="visual")
    base_text = torch.zeros(1, 3, 16)
    text = base_text.clone()
    text[0, 2] = 3 * torch.randn(16)  # change only the completion text
    a, b = module(stages, valid, base_text), module(stages, valid, text)
    changed = (a - b).abs().sum(-1) > 1e-6  # (1, L, n)
    assert not changed[0, :2].any()  # stages 0 and 1 unaffected
    assert changed[0, 2][valid[0, 2]].all()
    # ... and every stage reads the whole video: perturbing a frame of stage 0 moves stage 2.
    moved = stages.clone()
    moved[0, 0, 0] += 5.0 * torch.randn(16)  # (a constant shift would vanish in LayerNorm)
    delta = (module(stages, valid) - module(moved, valid)).abs().sum(-1)
    assert (delta[0, 2][valid[0, 2]] > 1e-6).all()


def test_query_residual_keeps_text_visual_residual_does_not():
    """residual='query' is f~ = Q + ...; with identity-free attention (zero out-proj) f~ = Q (+FFN)."""
    stages, valid = packed(batch=1)
    text = torch.randn(1, 3, 16)
    for residual, expected in (("query", stages + text[:, :, None]), ("visual", stages)):
        module = fusion(residual=residual)
        with torch.no_grad():
            module.attention.out_proj.weight.zero_()
            module.attention.out_proj.bias.zero_()
            module.ffn[-2].weight.zero_()
            module.ffn[-2].bias.zero_()
        out = module(stages, valid, text)
        assert torch.allclose(out[valid], expected[valid], atol=1e-6)


def test_gradients_reach_features_text_and_all_parameters():
    stages, valid = packed()
    stages.requires_grad_()
    text = torch.randn(3, 3, 16, requires_grad=True)
    module = fusion()
    module(stages, valid, text).square().sum().backward()
    assert stages.grad[valid].abs().sum() > 0 and (stages.grad[~valid] == 0).all()
    assert text.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_bad_inputs():
    stages, valid = packed()
    with pytest.raises(ValueError, match="divisible"):
        StageFusion(10, heads=4)
    with pytest.raises(ValueError, match="stage_text"):
        fusion()(stages, valid, torch.randn(3, 16))
    with pytest.raises(ValueError, match="stage_valid"):
        fusion()(stages, valid[:, :2])
    with pytest.raises(ValueError, match="at least one valid"):
        fusion()(stages, torch.zeros_like(valid))
    with pytest.raises(ValueError, match="residual"):
        StageFusion(16, heads=4, residual="text")


def test_concat_stages_prototype_layout():
    stages, valid = packed()
    sequence, membership = concat_stages(stages, valid)
    n_max = stages.shape[2]
    assert sequence.shape == (3, 3 * n_max, 16) and membership.shape == (3, 3, 3 * n_max)
    # the prototype is the stages, concatenated in order; each stage owns its valid slots only
    for b in range(3):
        for i in range(3):
            owned = membership[b, i].nonzero().flatten()
            assert owned.tolist() == (i * n_max + valid[b, i].nonzero().flatten()).tolist()
            assert torch.equal(sequence[b, owned], stages[b, i][valid[b, i]])
    assert membership.sum((1, 2)).tolist() == valid.sum((1, 2)).tolist()
    assert (membership.sum(1) <= 1).all()  # no slot in two stages


@pytest.mark.parametrize("residual", ["query", "visual"])
def test_the_feed_forward_on_valid_slots_only_equals_it_on_every_slot(residual):
    """The FFN runs on valid slots only (a speed-up): the same as running it on the padded layout
    and zeroing the padded slots afterwards, values and gradients."""
    stages, valid = packed()
    stages = stages.double().requires_grad_(True)
    text = torch.randn(3, 3, 16, dtype=torch.float64)
    module = fusion(residual=residual).double()
    fast = module(stages, valid, text)
    batch, num_stages, n_max, dim = stages.shape
    context = stages.reshape(batch, num_stages * n_max, dim)
    query = (stages + text[:, :, None, :]).reshape(batch, num_stages * n_max, dim)
    padding = ~valid.reshape(batch, num_stages * n_max)
    normed = module.norm_context(context)
    attended, _ = module.attention(module.norm_query(query), normed, normed, key_padding_mask=padding,
                                   need_weights=False)
    fused = (query if residual == "query" else context) + attended
    plain = (fused + module.ffn(module.norm_ffn(fused))).masked_fill(padding[..., None], 0.0)
    plain = plain.reshape(stages.shape)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), stages)
    (grad_plain,) = torch.autograd.grad(plain.square().sum(), stages)
    torch.testing.assert_close(grad_fast, grad_plain, rtol=1e-10, atol=1e-12)
