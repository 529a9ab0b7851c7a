"""TPCM (MA-FSAR eqs. 9-12), its Table 6 alternatives and CLIP-FSAR's prototype modulation."""

from __future__ import annotations

import pytest
import torch

from fsar.methods.tpcm import TPCM, AttentionFFNBlock, PrototypeModulation, build_prototype_module

pytestmark = pytest.mark.usefixtures("single_thread")


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_spec_section_8():
    plain = TPCM(dim=512, pre_ln=False)
    assert _params(plain.block.attn) == 1_050_624  # MHA at width 512 with biases
    assert _params(plain.block.ffn) == 2_099_712  # FFN 512 -> 2048 -> 512
    assert _params(plain) == 3_150_336
    assert _params(TPCM(dim=512, pre_ln=True)) == 3_152_384  # + two LayerNorms


def _manual(block: AttentionFFNBlock, q, kv):
    # eqs. 11-12 without norms/dropout, from the block's own weights
    attended, _ = block.attn(q, kv, kv)
    x = q + attended
    return x + block.ffn(x)


def test_support_form_is_eqs_9_to_12():
    torch.manual_seed(0)
    tpcm = TPCM(dim=16, heads=4, pre_ln=False).eval()
    feats, text = torch.randn(3, 5, 16), torch.randn(3, 16)
    q = feats + text[:, None, :]  # eq. 9
    kv = torch.cat([feats, text[:, None, :]], dim=1)  # eq. 10, (n, T+1, D)
    torch.testing.assert_close(tpcm(feats, text), _manual(tpcm.block, q, kv))


def test_query_form_is_self_attention_with_the_same_weights():
    torch.manual_seed(0)
    tpcm = TPCM(dim=16, heads=4, pre_ln=False).eval()
    feats = torch.randn(4, 5, 16)
    torch.testing.assert_close(tpcm(feats), _manual(tpcm.block, feats, feats))
    # the same module's support form differs only by the text
    assert not torch.allclose(tpcm(feats, torch.randn(4, 16)), tpcm(feats))


def test_pre_ln_normalises_inputs_but_the_residual_keeps_the_text():
    torch.manual_seed(0)
    tpcm = TPCM(dim=8, heads=2, pre_ln=True, dropout=0.0).eval()
    feats, text = torch.randn(2, 3, 8), torch.randn(2, 8)
    block = tpcm.block
    q = feats + text[:, None]
    kv = torch.cat([feats, text[:, None]], 1)
    attended, _ = block.attn(block.norm_attn(q), block.norm_attn(kv), block.norm_attn(kv))
    x = q + attended
    torch.testing.assert_close(tpcm(feats, text), x + block.ffn(block.norm_ffn(x)))


def test_unimodal_ignores_text_and_multimodal_slices_back_to_T():
    torch.manual_seed(0)
    uni = TPCM(dim=8, heads=2, mode="unimodal").eval()
    feats, text = torch.randn(2, 5, 8), torch.randn(2, 8)
    torch.testing.assert_close(uni(feats, text), uni(feats))
    multi = PrototypeModulation(dim=8, heads=2).eval()
    out = multi(feats, text)
    assert out.shape == (2, 5, 8)
    steps = torch.cat([feats, text[:, None]], 1)
    torch.testing.assert_close(out, multi.block(steps, steps)[:, :5])
    torch.testing.assert_close(multi(feats), multi.block(feats, feats))


def test_text_gradient_flows_in_support_form():
    tpcm = TPCM(dim=8, heads=2)
    text = torch.randn(2, 8, requires_grad=True)
    tpcm(torch.randn(2, 3, 8), text).sum().backward()
    assert text.grad is not None and text.grad.abs().sum() > 0


def test_bad_configuration_and_shapes_raise():
    with pytest.raises(ValueError, match="divisible"):
        TPCM(dim=10, heads=4)
    with pytest.raises(ValueError, match="mode"):
        TPCM(dim=8, heads=2, mode="cross")
    with pytest.raises(ValueError, match="prototype_module"):
        build_prototype_module("bogus", dim=8)
    assert build_prototype_module("none", dim=8) is None
    tpcm = TPCM(dim=8, heads=2)
    with pytest.raises(ValueError, match="text must be"):
        tpcm(torch.randn(2, 3, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(n, T, D\)"):
        tpcm(torch.randn(3, 8))
