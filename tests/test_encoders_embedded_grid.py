"""effnet-lite0-grid+minilm: the embedded pair's CNN map kept as a coarse grid of tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsar.encoders import create_encoder, list_encoders
from fsar.encoders.embedded_grid import GridEmbeddedEncoder, cell_mean, grid_tokens


@pytest.fixture(scope="module")
def grid_encoder():
    return create_encoder("effnet-lite0-grid+minilm", weights="random", grid=2)


def test_registered_frozen_and_sized_by_the_grid(grid_encoder):
    assert "effnet-lite0-grid+minilm" in list_encoders()
    assert grid_encoder.grid_cells == 4 and grid_encoder.token_dim == 1280
    assert grid_encoder.feature_dim == 4 * 1280 and grid_encoder.is_frozen
    assert not grid_encoder.shared_space and grid_encoder.text_dim == 384
    with pytest.raises(ValueError, match="grid must be an integer"):
        GridEmbeddedEncoder(weights="random", grid=0)


def test_cells_are_the_pooled_regions_of_the_map_and_their_mean_is_the_global_mean(grid_encoder):
    frames = torch.randn(1, 2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    features = grid_encoder.encode_frames(frames)
    assert features.shape == (1, 2, 4 * 1280)
    tokens = grid_tokens(features, 4)  # (1, 2, 4, 1280)
    with torch.no_grad():
        fmap = grid_encoder.visual.extract_features(frames[0].contiguous(memory_format=torch.channels_last))
    assert fmap.shape[-2:] == (4, 4)  # 128 px / 32
    # row-major cells: cell 1 is the top-right quarter of the map
    torch.testing.assert_close(tokens[0, :, 1], fmap[:, :, :2, 2:].mean((2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens[0, :, 2], fmap[:, :, 2:, :2].mean((2, 3)), rtol=1e-5, atol=1e-5)
    # an evenly divided map: the cell mean is exactly the default pair's global average
    torch.testing.assert_close(cell_mean(features, 4)[0], fmap.mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_grid_one_is_the_default_pair(grid_encoder):
    from fsar.encoders.embedded import EmbeddedEncoder

    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    one = GridEmbeddedEncoder.__new__(GridEmbeddedEncoder)  # the fixture's weights, grid 1
    one.__dict__.update(grid_encoder.__dict__)
    one.grid, one.grid_cells, one.feature_dim = 1, 1, 1280
    with torch.no_grad():
        torch.testing.assert_close(one._pooled(images), EmbeddedEncoder._pooled(grid_encoder, images),
                                   rtol=1e-5, atol=1e-5)


def test_grid_tokens_refuses_a_width_that_does_not_split():
    with pytest.raises(ValueError, match="do not split"):
        grid_tokens(torch.zeros(2, 10), 3)
    assert F.mse_loss(cell_mean(torch.arange(6.0).view(1, 6), 2), torch.tensor([[1.5, 2.5, 3.5]])) == 0
