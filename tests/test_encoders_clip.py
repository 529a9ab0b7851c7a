"""CLIP backbone (fsar.encoders.clip): construction, modes, features, tokenizer fallback, weights errors.

Behaviour runs on tiny random-init configs of the real HF architecture; one module-scoped full-size ViT-B/32
build checks the exact parameter counts of spec §8.
"""

from __future__ import annotations

import pytest
import torch

from fsar.encoders import ENCODERS, create_encoder
from fsar.encoders.clip import (
    CLIP_MEAN,
    CLIP_STD,
    ClipArchitecture,
    ClipEncoder,
    ClipWeightsError,
    HashTokenizer,
    MemoryEfficientQuickGELU,
)
from fsar.encoders.params import count_parameters, parameter_report

TINY = dict(
    weights="random",
    vision_layers=2,
    width=64,
    heads=4,
    patch_size=8,
    image_size=32,
    text_layers=1,
    text_width=32,
    text_heads=2,
    vocab_size=300,
    projection_dim=48,
)


def tiny(finetune: str = "frozen", **options) -> ClipEncoder:
    return create_encoder("clip-vit-b32", **{**TINY, "finetune": finetune, **options})


def frames(batch: int = 2, num_frames: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, num_frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hf_image_features(encoder: ClipEncoder, video: torch.Tensor) -> torch.Tensor:
    """Reference: HF's own vision model forward + visual projection, frame by frame."""
    batch, num_frames = video.shape[:2]
    pooled = encoder.clip.vision_model(pixel_values=video.flatten(0, 1)).pooler_output
    return encoder.clip.visual_projection(pooled).reshape(batch, num_frames, -1)


# -- registry and attributes ----------------------------------------------------------------------------


def test_registered_names():
    create_encoder  # noqa: B018  (imports the backbone modules)
    assert "clip-vit-b32" in ENCODERS and "clip-vit-b16" in ENCODERS


def test_attributes_and_shapes():
    encoder = tiny()
    assert encoder.name == "clip-vit-b32"
    assert (encoder.feature_dim, encoder.text_dim, encoder.image_size) == (48, 48, 32)
    assert encoder.mean == CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert encoder.std == CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    assert encoder.shared_space is True
    out = encoder.encode_frames(frames(2, 3))
    assert out.shape == (2, 3, 48)
    texts = encoder.encode_text(["a photo of action jumping", "waving", "waving"])
    assert texts.shape == (3, 48)
    assert torch.equal(texts[1], texts[2]) and not torch.allclose(texts[0], texts[1])
    assert encoder.encode_text([]).shape == (0, 48)


def test_b16_uses_patch_16():
    encoder = create_encoder("clip-vit-b16", **{**TINY, "patch_size": 16})
    assert encoder.clip.config.vision_config.patch_size == 16
    # The registered default patch for b16 is 16 when no size option overrides it.
    assert ClipArchitecture(patch_size=16).to_hf_config().vision_config.patch_size == 16


def test_config_override_builds_that_architecture():
    config = ClipArchitecture(
        patch_size=16, image_size=48, width=32, vision_layers=3, heads=2, text_width=32, text_layers=1,
        text_heads=2, vocab_size=100, projection_dim=24,
    ).to_hf_config()
    encoder = create_encoder("clip-vit-b32", weights="random", config=config, finetune="adapters")
    assert len(encoder.clip.vision_model.encoder.layers) == 3 and len(encoder.fgma.lsta_adapters) == 3
    assert (encoder.image_size, encoder.feature_dim) == (48, 24)
    assert encoder.encode_frames(torch.randn(1, 2, 3, 48, 48), torch.randn(1, 24)).shape == (1, 2, 24)
    assert encoder.encode_text(["hello world"]).shape == (1, 24)


def test_frames_equal_hf_projected_class_token():
    encoder = tiny()
    video = frames(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode_frames(video), hf_image_features(encoder, video))


def test_frames_are_per_frame_for_frozen_clip():
    """Plain CLIP encodes frames independently: changing frame 0 leaves frames 1.. unchanged."""
    encoder = tiny()
    video = frames(1, 3)
    changed = video.clone()
    changed[0, 0] += 1.0
    with torch.no_grad():
        a, b = encoder.encode_frames(video), encoder.encode_frames(changed)
    assert not torch.allclose(a[0, 0], b[0, 0])
    torch.testing.assert_close(a[0, 1:], b[0, 1:])


def test_random_weights_are_deterministic_per_seed():
    video = frames(1, 2)
    with torch.no_grad():
        a = tiny(seed=3).encode_frames(video)
        b = tiny(seed=3).encode_frames(video)
        c = tiny(seed=4).encode_frames(video)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_text_features_are_projected_eot_embedding():
    encoder = tiny()
    ids, mask = encoder.tokenizer(["open the door"])
    eot = int(mask.sum()) - 1
    with torch.no_grad():
        hidden = encoder.clip.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = encoder.clip.text_projection(hidden[0, eot])
        got = encoder.encode_text(["open the door"])[0]
    torch.testing.assert_close(got, expected)


def test_encode_text_in_chunks_equals_one_batch(monkeypatch):
    import fsar.encoders.clip as clip_module

    encoder = tiny()
    prompts = [f"action number {i}" for i in range(7)]
    whole = encoder.encode_text(prompts)
    monkeypatch.setattr(clip_module, "TEXT_BATCH", 3)
    torch.testing.assert_close(encoder.encode_text(prompts), whole)


def test_encode_text_rejects_a_bare_string():
    with pytest.raises(ValueError, match="list of strings"):
        tiny().encode_text("jumping")


# -- fine-tuning modes ---------------------------------------------------------------------------------


def _trainable_names(encoder: ClipEncoder) -> set[str]:
    return {name for name, p in encoder.named_parameters() if p.requires_grad}


def test_frozen_mode_trains_nothing_and_builds_no_graph():
    encoder = tiny("frozen")
    assert encoder.is_frozen and not _trainable_names(encoder)
    assert encoder.fgma is None
    assert not encoder.encode_frames(frames(1, 2)).requires_grad


def test_full_mode_trains_the_visual_tower_only():
    encoder = tiny("full")
    assert not encoder.is_frozen
    visual = {n for n, _ in encoder.named_parameters() if n.startswith(("clip.vision_model.", "clip.visual_projection."))}
    assert _trainable_names(encoder) == visual
    out = encoder.encode_frames(frames(2, 2))
    (out.square().sum() + encoder.encode_text(["x"]).sum()).backward()
    for name, p in encoder.named_parameters():
        if name in visual:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # Text features come from a frozen tower without a graph.
    assert not encoder.encode_text(["jump"]).requires_grad


def test_adapters_mode_trains_only_fgma():
    encoder = tiny("adapters")
    assert _trainable_names(encoder) == {n for n, _ in encoder.named_parameters() if n.startswith("fgma.")}
    assert all(not p.requires_grad for p in encoder.clip.parameters())


def test_gradient_checkpointing_gives_same_values_and_grads():
    video, texts = frames(2, 3), torch.randn(2, 48)
    results = []
    for flag in (False, True):
        encoder = tiny("adapters", gradient_checkpointing=flag)
        for p in encoder.fgma.parameters():  # non-zero adapters so every path matters
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(p.numel()))
        out = encoder.encode_frames(video, texts)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in encoder.fgma.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_memory_efficient_quick_gelu_matches_hf():
    from transformers.activations import QuickGELUActivation

    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.equal(MemoryEfficientQuickGELU()(x), QuickGELUActivation()(x))
    torch.autograd.gradcheck(MemoryEfficientQuickGELU(), (x,))
    x32 = torch.randn(3, 5, requires_grad=True)
    (MemoryEfficientQuickGELU()(x32) * torch.arange(15.0).view(3, 5)).sum().backward()
    grad = x32.grad.clone()
    x32.grad = None
    (QuickGELUActivation()(x32) * torch.arange(15.0).view(3, 5)).sum().backward()
    torch.testing.assert_close(grad, x32.grad)
    # Installed in every vision block (the frozen text tower runs without graphs and keeps HF's).
    encoder = tiny()
    assert all(isinstance(l.mlp.activation_fn, MemoryEfficientQuickGELU) for l in encoder.clip.vision_model.encoder.layers)


# -- tokenizer fallback --------------------------------------------------------------------------------


def test_hash_tokenizer_layout():
    tokenizer = HashTokenizer(vocab_size=49408)
    ids, mask = tokenizer(["A photo of action jumping!", ""])
    assert ids.shape == mask.shape == (2, 77)
    # start id, 6 pieces (a, photo, of, action, jumping, !), end-of-text, zero padding
    assert ids[0, 0] == 49406 and ids[0, 7] == 49407 and int(mask[0].sum()) == 8
    assert (ids[0, 1:7] < 49405).all() and (ids[0, 1:7] >= 1).all()
    assert (ids[0, 8:] == 0).all()
    assert ids[1, :2].tolist() == [49406, 49407]
    # End-of-text is the largest id, as CLIP's pooling (argmax of ids) expects.
    assert ids[0].argmax() == 7
    # Case-insensitive and stable across processes (fixed hash, not Python's salted hash()).
    assert tokenizer.token_id("Jumping".lower()) == tokenizer.token_id("jumping")
    assert tokenizer.token_id("jumping") == 1 + int.from_bytes(
        __import__("hashlib").blake2b(b"jumping", digest_size=8).digest(), "little"
    ) % 49405


def test_hash_tokenizer_truncates_keeping_end_of_text():
    ids, mask = HashTokenizer(vocab_size=300)([" ".join(["word"] * 200)])
    assert int(mask.sum()) == 77 and ids[0, -1] == 299 and ids[0, 0] == 298


# -- errors --------------------------------------------------------------------------------------------


def test_missing_local_folder_names_both_options(tmp_path):
    missing = tmp_path / "no" / "clip-folder"
    with pytest.raises(ClipWeightsError) as error:
        create_encoder("clip-vit-b32", weights=str(missing))
    message = str(error.value)
    assert str(missing) in message and "hub id" in message and "'random'" in message
    assert isinstance(error.value, ValueError)


def test_file_instead_of_folder_is_an_error(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(ClipWeightsError, match="not a folder"):
        create_encoder("clip-vit-b16", weights=str(file))


def test_folder_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ClipWeightsError, match="could not load"):
        create_encoder("clip-vit-b32", weights=str(tmp_path))


@pytest.mark.parametrize(
    "options, pattern",
    [
        (dict(weights="random", finetune="partial"), "finetune"),
        (dict(weights="random", colour=3), "unknown option"),
        (dict(weights="random", gta=False), "finetune='adapters'"),
        (dict(weights="/nonexistent/clip", width=64), "only apply to weights='random'"),
        (dict(weights="random", finetune="adapters", gta=False, lsta=False, lma=False, ja=False, **{
            k: v for k, v in TINY.items() if k != "weights"}), "every adaptation"),
        (dict(weights="random", finetune="adapters", gta_adapters_per_layer=3), "gta_adapters_per_layer"),
        (dict(weights="random", image_size=30, patch_size=8), "multiple of patch_size"),
    ],
)
def test_bad_options(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        create_encoder("clip-vit-b32", **options)


def test_bad_inputs():
    encoder = tiny("adapters")
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        encoder.encode_frames(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="32x32"):
        encoder.encode_frames(torch.randn(1, 2, 3, 64, 64))
    with pytest.raises(ValueError, match="text_features"):
        encoder.encode_frames(frames(2, 2), torch.randn(3, 48))


def test_local_folder_roundtrip(tmp_path):
    """A Hugging Face checkpoint folder (saved model + CLIP BPE tokenizer files) loads as a user's would."""
    import json

    from transformers import CLIPModel

    arch = ClipArchitecture(
        patch_size=32, image_size=64, width=32, vision_layers=1, heads=2, text_width=32, text_layers=1,
        text_heads=2, vocab_size=64, projection_dim=16,
    )
    model = CLIPModel(arch.to_hf_config())
    model.save_pretrained(tmp_path)
    # Minimal byte-level BPE vocabulary: letters (word-final and inner), two merges, the special tokens.
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(letters)})
    vocab.update({"ju": 52, "jump</w>": 53, "<|startoftext|>": 62, "<|endoftext|>": 63})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nj u\n")
    encoder = create_encoder("clip-vit-b32", weights=str(tmp_path))
    ids, mask = encoder.tokenizer(["jump"])
    assert ids.shape == (1, 77) and ids[0, 0] == 62 and 63 in ids[0, : int(mask.sum())].tolist()
    assert encoder.encode_text(["jump", "a b"]).shape == (2, 16)
    video = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode_frames(video), hf_image_features(encoder, video))
    # A patch-32 folder is not a ViT-B/16.
    with pytest.raises(ClipWeightsError, match="patch 16"):
        create_encoder("clip-vit-b16", weights=str(tmp_path))
    # The weights fingerprint samples the checkpoint file: a copy of the folder gives the same one.
    import shutil

    from fsar.encoders.cache import weights_fingerprint

    assert encoder.weight_files() == (tmp_path / "model.safetensors",)
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy)
    assert weights_fingerprint(create_encoder("clip-vit-b32", weights=str(copy))) == weights_fingerprint(encoder)
    assert tiny().weight_files() == ()


# -- full size (spec §8) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_b32() -> ClipEncoder:
    return create_encoder("clip-vit-b32", weights="random", finetune="adapters")


def test_full_size_b32_parameter_counts(full_b32):
    clip = full_b32.clip
    assert count_parameters(clip) == (151_277_313, 0)
    visual = count_parameters(clip.vision_model)[0] + count_parameters(clip.visual_projection)[0]
    assert visual == 87_849_216
    rows = {name: (total, trainable) for name, total, trainable in parameter_report(full_b32)}
    assert rows["fgma.gta_adapters"] == rows["fgma.lsta_adapters"] == rows["fgma.ja_adapters"] == (
        12 * 295_872,
        12 * 295_872,
    )
    assert rows["fgma.fc_text"] == (393_984, 393_984)
    assert rows["total"] == (151_277_313 + 11_045_376, 11_045_376)
    cfg = clip.config
    assert (cfg.vision_config.hidden_size, cfg.vision_config.num_hidden_layers, cfg.vision_config.num_attention_heads,
            cfg.vision_config.intermediate_size, cfg.vision_config.patch_size, cfg.vision_config.image_size) == (
        768, 12, 12, 3072, 32, 224)
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers, cfg.text_config.num_attention_heads,
            cfg.text_config.intermediate_size, cfg.text_config.vocab_size,
            cfg.text_config.max_position_embeddings) == (512, 12, 8, 2048, 49408, 77)
    assert cfg.vision_config.hidden_act == cfg.text_config.hidden_act == "quick_gelu"
    assert cfg.projection_dim == 512


def test_full_size_b32_forward(full_b32):
    video = torch.randn(1, 2, 3, 224, 224)
    with torch.no_grad():
        text = full_b32.encode_text(["a photo of action running"])
        assert text.shape == (1, 512)
        support = full_b32.encode_frames(video, text)
        query = full_b32.encode_frames(video)
    assert support.shape == query.shape == (1, 2, 512)
    assert torch.isfinite(support).all() and not torch.allclose(support, query)


def test_full_size_b16_counts_on_meta_device():
    """ViT-B/16 sizes (spec §8) without spending time on random init: build on the meta device."""
    from transformers import CLIPModel

    with torch.device("meta"):
        model = CLIPModel(ClipArchitecture(patch_size=16).to_hf_config())
    assert count_parameters(model)[0] == 149_620_737
    visual = count_parameters(model.vision_model)[0] + count_parameters(model.visual_projection)[0]
    assert visual == 86_192_640
