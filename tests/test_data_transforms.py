"""Clip transforms: geometry, shared randomness across frames, normalisation, flip off by default."""

from __future__ import annotations

import pytest
import torch

from fsar.data.transforms import CLIP_MEAN, CLIP_STD, ClipTransform, TransformConfig, resize_short_side


def column_ramp(t: int = 4, height: int = 20, width: int = 40) -> torch.Tensor:
    """Frames whose red channel is the column index (green: row index)."""
    frames = torch.zeros(t, 3, height, width, dtype=torch.uint8)
    frames[:, 0] = torch.arange(width, dtype=torch.uint8).view(1, 1, width)
    frames[:, 1] = torch.arange(height, dtype=torch.uint8).view(1, height, 1)
    return frames


def unnormalise(x: torch.Tensor, config: TransformConfig) -> torch.Tensor:
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (x * std + mean) * 255.0


def test_eval_normalises_with_the_encoder_statistics():
    config = TransformConfig(image_size=16, resize_short=16)
    frames = torch.full((3, 3, 16, 16), 200, dtype=torch.uint8)
    out = ClipTransform(config, train=False)(frames)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 16, 16)
    expected = (200 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[:, :, 5, 5], expected.expand(3, 3), atol=1e-5)


def test_eval_centre_crop_position():
    config = TransformConfig(image_size=20, resize_short=20)  # no resize: 20x40 -> centre 20x20
    out = unnormalise(ClipTransform(config, train=False)(column_ramp()), config)
    columns = out[0, 0, 0].round()
    assert columns[0] == 10 and columns[-1] == 29
    rows = out[0, 1, :, 0].round()
    assert rows[0] == 0 and rows[-1] == 19


def test_short_side_resize_keeps_aspect_ratio():
    out = resize_short_side(torch.full((2, 3, 30, 60), 77.0), 15)
    assert out.shape == (2, 3, 15, 30)
    assert torch.allclose(out, torch.full_like(out, 77.0))
    config = TransformConfig(image_size=8)  # resize_short default: round(8 * 8 / 7) = 9
    assert config.short_side == 9
    assert ClipTransform(config, train=False)(column_ramp()).shape == (4, 3, 8, 8)


def test_train_crop_is_the_same_for_every_frame_and_random_across_clips():
    config = TransformConfig(image_size=20, resize_short=20, hflip=True, color_jitter=0.4)
    transform = ClipTransform(config, train=True)
    frames = column_ramp(t=6)
    lefts = set()
    for seed in range(12):
        out = transform(frames, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(out, out[:1].expand_as(out)), "spatial/colour randomness must be shared by all frames"
        lefts.add(round(float(unnormalise(out, config)[0, 0, 0].min())))
    assert len(lefts) > 3  # different crops for different clips


def test_train_randomness_reproducible_from_generator():
    config = TransformConfig(image_size=16, resize_short=20, hflip=True, color_jitter=0.3)
    transform = ClipTransform(config, train=True)
    frames = torch.randint(0, 256, (3, 3, 24, 30), dtype=torch.uint8)
    a = transform(frames, generator=torch.Generator().manual_seed(3))
    b = transform(frames, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_hflip_is_off_by_default_and_flips_when_enabled():
    frames = column_ramp(height=20, width=20)
    off = TransformConfig(image_size=20, resize_short=20)
    assert off.hflip is False
    for seed in range(10):
        out = unnormalise(ClipTransform(off, train=True)(frames, generator=torch.Generator().manual_seed(seed)), off)
        assert out[0, 0, 0, 0].round() == 0  # never mirrored: SSv2's left/right classes survive
    on = TransformConfig(image_size=20, resize_short=20, hflip=True)
    firsts = set()
    for seed in range(10):
        out = unnormalise(ClipTransform(on, train=True)(frames, generator=torch.Generator().manual_seed(seed)), on)
        firsts.add(int(out[0, 0, 0, 0].round()))
    assert firsts == {0, 19}


def test_colour_jitter_changes_pixels_only_in_training():
    frames = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    plain = TransformConfig(image_size=16, resize_short=16)
    jitter = TransformConfig(image_size=16, resize_short=16, color_jitter=0.5)
    generator = torch.Generator().manual_seed(0)
    assert not torch.allclose(ClipTransform(jitter, train=True)(frames, generator=generator), ClipTransform(plain, train=True)(frames))
    assert torch.equal(ClipTransform(jitter, train=False)(frames), ClipTransform(plain, train=False)(frames))


def test_key_names_the_eval_pipeline():
    a = ClipTransform(TransformConfig(image_size=112), train=False).key()
    assert a == ClipTransform(TransformConfig(image_size=112, hflip=True, color_jitter=0.2), train=True).key()
    assert a != ClipTransform(TransformConfig(image_size=224), train=False).key()
    assert a != ClipTransform(TransformConfig(image_size=112, mean=(0.5, 0.5, 0.5)), train=False).key()
    assert "112" in a


def test_for_encoder_reads_duck_typed_attributes():
    class FakeEncoder:
        image_size = 96
        mean = (0.1, 0.2, 0.3)
        std = (0.4, 0.5, 0.6)

    config = TransformConfig.for_encoder(FakeEncoder(), hflip=True)
    assert (config.image_size, config.mean, config.std, config.hflip) == (96, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), True)


def test_bad_input_and_config():
    transform = ClipTransform(TransformConfig(image_size=8), train=False)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(2, 3, 10, 10))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        transform(torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="resize_short"):
        TransformConfig(image_size=224, resize_short=200)
    with pytest.raises(ValueError, match="color_jitter"):
        TransformConfig(color_jitter=1.5)
    with pytest.raises(ValueError, match="std"):
        TransformConfig(std=(0.0, 1.0, 1.0))


def test_crop_then_resize_matches_resize_then_crop():
    """The fast path (crop the source window, resize it) agrees with resize-everything-then-crop."""
    height, width = 48, 84
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    smooth = (127 + 60 * torch.sin(xx / 9.0) + 60 * torch.cos(yy / 7.0)).round().to(torch.uint8)
    frames = smooth.expand(2, 3, height, width).contiguous()
    config = TransformConfig(image_size=28, resize_short=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    fast = ClipTransform(config, train=False)(frames) * 255
    full = resize_short_side(frames.float(), 32)  # (2, 3, 32, 56)
    top, left = (32 - 28) // 2, (56 - 28) // 2
    slow = full[:, :, top : top + 28, left : left + 28]
    assert fast.shape == slow.shape
    assert (fast - slow).abs().mean() < 4.0  # grey levels; a wrong window would be off by tens
