"""MA-FSAR's FgMA (fsar.encoders.fgma) inside the CLIP encoder: equations, token counts, branches, gradients.

Tiny random-init CLIP (width 64, 2 layers, patch 8, image 32 -> N = 16 patches) unless a test says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsar.encoders import create_encoder
from fsar.encoders.clip import ClipEncoder
from fsar.encoders.fgma import Adapter, FgMA, FgMAConfig
from fsar.encoders.params import count_parameters

from test_encoders_clip import TINY  # one tiny CLIP config for both encoder test files

N = 16  # patches per frame in the tiny config
D_TEXT = 48


def adapted(**options) -> ClipEncoder:
    return create_encoder("clip-vit-b32", **{**TINY, "finetune": "adapters", **options})


def randomise_adapters(encoder: ClipEncoder, std: float = 0.05, seed: int = 0) -> None:
    """Give every adapter non-zero weights (as after training) so each adaptation changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in encoder.fgma.named_parameters():
            if "adapters" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def video(batch: int = 2, num_frames: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, num_frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def texts(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, D_TEXT, generator=torch.Generator().manual_seed(seed))


def plain_clip(encoder: ClipEncoder, frames: torch.Tensor, attention_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: the frozen HF layers alone (optionally with an additive attention bias), class token projected."""
    vision = encoder.clip.vision_model
    batch, num_frames = frames.shape[:2]
    hidden = vision.pre_layrnorm(vision.embeddings(frames.flatten(0, 1)))
    for layer in vision.encoder.layers:
        hidden = layer(hidden, attention_bias)
    return encoder.clip.visual_projection(vision.post_layernorm(hidden[:, 0])).reshape(batch, num_frames, -1)


# -- adapter module --------------------------------------------------------------------------------------


def test_adapter_sizes_and_zero_init():
    adapter = Adapter(768, bottleneck_ratio=0.25, skip=False)
    assert (adapter.fc1.in_features, adapter.fc1.out_features, adapter.fc2.out_features) == (768, 192, 768)
    assert count_parameters(adapter)[0] == 295_872
    x = torch.randn(4, 768)
    assert torch.equal(adapter(x), torch.zeros_like(x))
    assert torch.equal(Adapter(768, skip=True)(x), x)
    with torch.no_grad():
        adapter.fc2.weight.normal_()
    expected = adapter.fc2(F.gelu(adapter.fc1(x)))
    torch.testing.assert_close(adapter(x), expected)


@pytest.mark.parametrize(
    "config, expected",
    [
        (FgMAConfig(gta=False, ja=False), 12 * 295_872 + 393_984),  # +LMA/LSTA: 3.94M (7.10M with TPCM)
        (FgMAConfig(ja=False), 24 * 295_872 + 393_984),  # +GTA
        (FgMAConfig(), 36 * 295_872 + 393_984),  # +JA = full FgMA: 11,045,376 (14.20M with TPCM)
        (FgMAConfig(gta_adapters_per_layer=2), 48 * 295_872 + 393_984),  # 14,595,840 (17.75M with TPCM)
        (FgMAConfig(lma=False), 36 * 295_872),  # double LSTA: no FC_text
    ],
)
def test_full_size_fgma_parameter_counts(config, expected):
    fgma = FgMA(width=768, text_dim=512, num_layers=12, config=config)
    assert count_parameters(fgma) == (expected, expected)


def test_full_fgma_count_literal_reading():
    fgma = FgMA(width=768, text_dim=512, num_layers=12, config=FgMAConfig())
    assert count_parameters(fgma)[0] == 11_045_376
    fgma2 = FgMA(width=768, text_dim=512, num_layers=12, config=FgMAConfig(gta_adapters_per_layer=2))
    assert count_parameters(fgma2)[0] == 14_595_840


def test_fc_text_is_one_shared_module():
    encoder = adapted()
    linears_from_text = [m for m in encoder.fgma.modules() if isinstance(m, torch.nn.Linear) and m.in_features == D_TEXT]
    assert linears_from_text == [encoder.fgma.fc_text]
    assert (encoder.fgma.fc_text.in_features, encoder.fgma.fc_text.out_features) == (D_TEXT, 64)
    assert encoder.fgma.fc_text.bias is not None

    # Every layer appends the very same projected text vector (nothing carried between layers).
    seen = []
    hooks = [
        layer.layer_norm1.register_forward_hook(lambda m, args, out: seen.append(args[0][:, -1].clone()))
        for layer in encoder.clip.vision_model.encoder.layers
    ]
    text = texts(2)
    with torch.no_grad():
        encoder.encode_frames(video(2, 3), text)
        expected = encoder.fgma.fc_text(text).repeat_interleave(3, dim=0)
    for hook in hooks:
        hook.remove()
    spatial = [s for s in seen if s.shape[0] == 6]  # (B*T, D) inputs of the spatial attention's LN1
    assert len(spatial) == 2
    for last_token in spatial:
        torch.testing.assert_close(last_token, expected)


# -- equivalence with plain CLIP at initialisation -----------------------------------------------------


@pytest.mark.parametrize("gta_adapters_per_layer", [1, 2])
def test_masked_fgma_equals_plain_clip_at_init(gta_adapters_per_layer):
    encoder = adapted(mask_appended_tokens=True, gta_adapters_per_layer=gta_adapters_per_layer)
    frames = video(2, 3)
    with torch.no_grad():
        reference = plain_clip(encoder, frames)
        torch.testing.assert_close(encoder.encode_frames(frames, texts(2)), reference)  # support: N+3 tokens
        torch.testing.assert_close(encoder.encode_frames(frames), reference)  # query: N+2 tokens


def test_masked_fgma_differs_once_adapters_learn():
    encoder = adapted(mask_appended_tokens=True)
    randomise_adapters(encoder)
    frames = video(2, 3)
    with torch.no_grad():
        assert not torch.allclose(encoder.encode_frames(frames), plain_clip(encoder, frames), atol=1e-4)


def test_without_appended_tokens_fgma_equals_plain_clip_at_init_even_unmasked():
    """LSTA + JA alone append nothing; their zero-init adapters leave CLIP unchanged."""
    encoder = adapted(gta=False, lma=False)
    frames = video(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode_frames(frames, texts(2)), plain_clip(encoder, frames))


def test_unmasked_temporal_token_doubles_class_token_attention_at_init():
    """What differs without the mask (query branch, GTA on): at init x_TA is an exact copy of the class token,
    so the spatial attention sees the class token twice. That equals plain CLIP with +log(2) added to the
    class-token column of every attention row."""
    encoder = adapted(lma=False)
    frames = video(2, 3)
    bias = torch.zeros(1, 1, N + 1, N + 1)
    bias[..., 0] = math.log(2.0)
    with torch.no_grad():
        got = encoder.encode_frames(frames)
        torch.testing.assert_close(got, plain_clip(encoder, frames, bias))
        assert not torch.allclose(got, plain_clip(encoder, frames), atol=1e-4)


def test_unmasked_text_token_changes_support_at_init():
    """Without the mask the text token takes part in attention: support features depend on the text at init."""
    encoder = adapted(gta=False)
    frames = video(2, 3)
    with torch.no_grad():
        a = encoder.encode_frames(frames, texts(2, seed=1))
        b = encoder.encode_frames(frames, texts(2, seed=2))
        assert not torch.allclose(a, b, atol=1e-4)
        assert not torch.allclose(a, plain_clip(encoder, frames), atol=1e-4)


# -- token counts and GTA over T --------------------------------------------------------------------------


def _record_shapes(encoder: ClipEncoder, frames: torch.Tensor, text: torch.Tensor | None):
    """Shapes entering each block's frozen attention and MLP (via hooks on the HF modules)."""
    attention, mlp = [], []
    hooks = []
    for layer in encoder.clip.vision_model.encoder.layers:
        hooks.append(
            layer.self_attn.register_forward_pre_hook(
                lambda m, args, kwargs: attention.append(tuple(kwargs["hidden_states"].shape)), with_kwargs=True
            )
        )
        hooks.append(layer.mlp.register_forward_pre_hook(lambda m, args: mlp.append(tuple(args[0].shape))))
    with torch.no_grad():
        encoder.encode_frames(frames, text)
    for hook in hooks:
        hook.remove()
    return attention, mlp


@pytest.mark.parametrize(
    "options, support_tokens, query_tokens",
    [
        ({}, N + 3, N + 2),  # LMA: [z; x_TA; text], LSTA: [z; x_TA]
        (dict(lma=False), N + 2, N + 2),  # double LSTA: the support branch gets no text token
        (dict(gta=False, ja=False), N + 2, N + 1),  # +LMA/LSTA only: no temporal token
        (dict(gta=False, lma=False), N + 1, N + 1),
    ],
)
def test_token_counts_per_branch(options, support_tokens, query_tokens):
    encoder = adapted(**options)
    gta = options.get("gta", True)
    for text, tokens in ((texts(2), support_tokens), (None, query_tokens)):
        attention, mlp = _record_shapes(encoder, video(2, 3), text)
        expected_attention = []
        for _ in range(2):  # layers
            if gta:
                expected_attention.append((2, 3, 64))  # GTA: batch = clips, sequence = T frames only
            expected_attention.append((6, tokens, 64))  # spatial attention per frame (B*T rows)
        assert attention == expected_attention
        assert mlp == [(6, N + 1, 64)] * 2  # after Select: the leading N+1 tokens


def test_gta_mixes_frames_of_one_clip_only():
    encoder = adapted(lma=False)
    randomise_adapters(encoder)
    frames = video(2, 4)
    changed = frames.clone()
    changed[0, 0] += 1.0
    with torch.no_grad():
        a, b = encoder.encode_frames(frames), encoder.encode_frames(changed)
    assert not torch.allclose(a[0, 1:], b[0, 1:], atol=1e-5)  # temporal modelling inside clip 0
    torch.testing.assert_close(a[1], b[1])  # never across clips


def test_without_gta_frames_stay_independent():
    encoder = adapted(gta=False, lma=False)
    randomise_adapters(encoder)
    frames = video(1, 4)
    changed = frames.clone()
    changed[0, 0] += 1.0
    with torch.no_grad():
        a, b = encoder.encode_frames(frames), encoder.encode_frames(changed)
    torch.testing.assert_close(a[0, 1:], b[0, 1:])


# -- one block against the paper's equations -----------------------------------------------------------


@pytest.mark.parametrize("gta_adapters_per_layer", [1, 2])
def test_block_matches_equations_4_to_8(gta_adapters_per_layer):
    """A literal, loop-based reading of eqs. 4-8 for one support block, against FgMA.block."""
    encoder = adapted(gta_adapters_per_layer=gta_adapters_per_layer)
    randomise_adapters(encoder)
    fgma, layer = encoder.fgma, encoder.clip.vision_model.encoder.layers[1]
    batch, num_frames, dim = 2, 3, 64
    z = torch.randn(batch * num_frames, N + 1, dim)
    text = texts(batch)
    ln1, attn, ln2, mlp = layer.layer_norm1, layer.self_attn, layer.layer_norm2, layer.mlp

    def msa(x):
        return attn(hidden_states=x[None])[0][0]

    with torch.no_grad():
        got = fgma.block(1, layer, z, num_frames=num_frames, text_token=fgma.text_token(text, num_frames))
        expected = torch.empty_like(z)
        for clip in range(batch):
            rows = slice(clip * num_frames, (clip + 1) * num_frames)
            c = z[rows, 0]  # (T, D) class tokens of this clip
            y = ln1(c)
            if gta_adapters_per_layer == 2:
                y = y + fgma.gta_in_adapters[1].fc2(F.gelu(fgma.gta_in_adapters[1].fc1(y)))
            x_ta = c + fgma.gta_adapters[1](msa(y))  # eq. 4, no skip inside the adapter
            text_token = fgma.fc_text(text[clip])  # eq. 6
            for t in range(num_frames):
                z_ma = torch.cat([z[rows][t], x_ta[t : t + 1], text_token[None]])  # (N+3, D)
                a = msa(ln1(z_ma))
                s = fgma.lsta_adapters[1]
                z_ma = z_ma + a + s.fc2(F.gelu(s.fc1(a)))  # eq. 7, Adapter_S with its skip
                z_sel = z_ma[: N + 1]  # Select
                j = fgma.ja_adapters[1]
                expected[clip * num_frames + t] = (
                    z_sel + mlp(ln2(z_sel)) + 0.5 * j.fc2(F.gelu(j.fc1(ln2(z_sel))))  # eq. 8
                )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_ja_scale_scales_the_joint_adapter():
    outputs = {}
    for r in (0.5, 1.0):
        encoder = adapted(gta=False, lsta=False, lma=False, ja_scale=r)
        randomise_adapters(encoder)
        layer = encoder.clip.vision_model.encoder.layers[0]
        z = torch.randn(4, N + 1, 64, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            plain = layer(z, None)
            outputs[r] = encoder.fgma.block(0, layer, z, num_frames=2, text_token=None) - plain
    torch.testing.assert_close(outputs[1.0], 2 * outputs[0.5])


# -- branches: the query never sees labels ------------------------------------------------------------


def test_query_features_do_not_depend_on_support_texts_or_batch():
    encoder = adapted()
    randomise_adapters(encoder)
    support, queries = video(2, 3, seed=1), video(3, 3, seed=2)
    with torch.no_grad():
        alone = encoder.encode_frames(queries)
        encoder.encode_frames(support, texts(2, seed=3))
        after_support_a = encoder.encode_frames(queries)
        encoder.encode_frames(support, texts(2, seed=4))
        after_support_b = encoder.encode_frames(queries)
        one_by_one = torch.cat([encoder.encode_frames(queries[i : i + 1]) for i in range(3)])
    assert torch.equal(alone, after_support_a) and torch.equal(alone, after_support_b)
    torch.testing.assert_close(alone, one_by_one)


def test_support_features_depend_on_own_text_only():
    encoder = adapted()
    randomise_adapters(encoder)
    support = video(2, 3)
    text_a = texts(2, seed=3)
    text_b = text_a.clone()
    text_b[1] = texts(1, seed=9)[0]  # change the label text of clip 1 only
    with torch.no_grad():
        a, b = encoder.encode_frames(support, text_a), encoder.encode_frames(support, text_b)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1], atol=1e-5)


def test_double_lsta_ignores_texts():
    encoder = adapted(lma=False)
    randomise_adapters(encoder)
    support = video(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode_frames(support, texts(2, 3)), encoder.encode_frames(support))


# -- gradients -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gta_adapters_per_layer", [1, 2])
def test_adapter_gradients_reach_fgma_only(gta_adapters_per_layer):
    """At init and after some training (non-zero adapters), gradients reach FgMA and nothing of CLIP.

    At init GTA's input adapter (AIM style, option 2) sits behind the zero-init GTA output adapter, so its
    gradient is exactly zero until that adapter moves; every other adapter's up-projection gets a gradient.
    """
    encoder = adapted(gta_adapters_per_layer=gta_adapters_per_layer)
    for step in ("init", "trained"):
        if step == "trained":
            randomise_adapters(encoder)
            encoder.zero_grad(set_to_none=True)
        support = encoder.encode_frames(video(2, 3, seed=1), texts(2))
        query = encoder.encode_frames(video(2, 3, seed=2))
        # A loss touching both branches (cosine between query and support frames).
        loss = -F.cosine_similarity(query[:, None], support[None], dim=-1).mean() + support.square().mean()
        loss.backward()
        for name, p in encoder.named_parameters():
            if name.startswith("fgma."):
                assert p.grad is not None, (step, name)
                if step == "init" and name.startswith("fgma.gta_in_adapters"):
                    assert p.grad.abs().sum() == 0, name
                elif name.endswith("fc2.weight") or name.startswith("fgma.fc_text") or step == "trained":
                    assert p.grad.abs().sum() > 0, (step, name)
            else:
                assert not p.requires_grad and p.grad is None, name


def test_query_branch_has_no_path_to_text():
    encoder = adapted()
    randomise_adapters(encoder)
    query = encoder.encode_frames(video(2, 3))
    query.sum().backward()
    assert encoder.fgma.fc_text.weight.grad is None  # the query graph never touches FC_text
    assert encoder.fgma.lsta_adapters[0].fc2.weight.grad is not None


def test_frozen_clip_params_build_no_graph_before_first_adapter():
    """Patch embedding and pre-LN are frozen and the frames need no grad: their outputs carry no graph."""
    encoder = adapted()
    vision = encoder.clip.vision_model
    hidden = vision.pre_layrnorm(vision.embeddings(video(1, 2).flatten(0, 1)))
    assert not hidden.requires_grad
