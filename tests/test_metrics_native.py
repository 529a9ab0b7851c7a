"""The OTAM C kernel (fsar.metrics._native, kernels/matching.c) against the log-domain torch
programme it replaces, its range check and fallback, and its build/cache behaviour."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

import fsar.metrics as metrics
from fsar.metrics import _native
from fsar.metrics import hausdorff as hausdorff_module
from fsar.metrics import otam as otam_module
from fsar.metrics.otam import otam_cum_dist, otam_scaled

needs_compiler = pytest.mark.skipif(
    _native.native_kernels() is None, reason="no C compiler here: OTAM runs on its torch fallback"
)


@pytest.fixture
def torch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run OTAM on the log-domain torch programme only."""
    monkeypatch.setattr(_native, "native_kernels", lambda: None)


def _log_domain(scaled: torch.Tensor, variant: str, transposes: tuple[int, ...], monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as patch:
        patch.setattr(_native, "native_kernels", lambda: None)
        return otam_scaled(scaled, variant=variant, transposes=transposes)


def _random_scaled(shape: tuple[int, ...], lam: float, seed: int, requires_grad: bool = False) -> torch.Tensor:
    distances = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2.0
    return (distances / -lam).requires_grad_(requires_grad)


def test_the_kernel_compiles_where_a_compiler_exists(monkeypatch) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.delenv("FSAR_NATIVE_KERNELS", raising=False)
    _native.native_kernels.cache_clear()
    try:
        assert _native.native_kernels() is not None
    finally:
        _native.native_kernels.cache_clear()


# outer x inner = 91 and 130 pairs: several chunks of 64, the last one partial
@needs_compiler
@pytest.mark.parametrize("shape", [(7, 8, 8, 13), (10, 5, 3, 13), (4, 1, 6, 5), (4, 6, 1, 5), (1, 3, 4, 1)])
@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("transposes", [(0,), (1,), (0, 1)])
def test_kernel_equals_the_log_domain_programme(shape, variant, transposes, monkeypatch) -> None:
    scaled = _random_scaled(shape, 0.3, seed=sum(shape))
    expected = _log_domain(scaled, variant, transposes, monkeypatch)
    fast = otam_module._exp_domain_otam(scaled, variant, transposes)
    assert fast is not None, "the kernel refused an in-range input"
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("transposes", [(0,), (1,), (0, 1)])
def test_kernel_gradients_equal_the_log_domain_ones(variant, transposes, monkeypatch) -> None:
    scaled = _random_scaled((9, 6, 5, 11), 0.4, seed=3, requires_grad=True)
    weights = torch.rand(len(transposes), 99, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = otam_scaled(scaled, variant=variant, transposes=transposes)
    (fast_grad,) = torch.autograd.grad((fast * weights).sum(), scaled)
    slow = _log_domain(scaled, variant, transposes, monkeypatch)
    (slow_grad,) = torch.autograd.grad((slow * weights).sum(), scaled)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-10, atol=1e-12)


@needs_compiler
def test_kernel_gradcheck_float64() -> None:
    scaled = _random_scaled((2, 4, 3, 3), 0.5, seed=5, requires_grad=True)
    torch.autograd.gradcheck(lambda x: otam_scaled(x, transposes=(0, 1)), (scaled,))


@needs_compiler
def test_float32_input_keeps_float64_accuracy_inside_the_kernel(monkeypatch) -> None:
    scaled64 = _random_scaled((5, 8, 8, 7), 0.1, seed=11)
    expected = _log_domain(scaled64, "reference", (0, 1), monkeypatch)
    fast32 = otam_scaled(scaled64.float(), transposes=(0, 1))
    assert fast32.dtype == torch.float32
    torch.testing.assert_close(fast32.double(), expected, rtol=2e-6, atol=1e-5)


@needs_compiler
def test_out_of_range_input_falls_back_to_the_log_domain(monkeypatch) -> None:
    # lam = 0.004 and distances up to 2 over 8 columns: totals far below 1e-280
    scaled = _random_scaled((3, 8, 8, 2), 0.004, seed=2)
    assert otam_module._exp_domain_otam(scaled, "reference", (0, 1)) is None
    result = otam_scaled(scaled, transposes=(0, 1))
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, _log_domain(scaled, "reference", (0, 1), monkeypatch))


@needs_compiler
def test_nan_weights_are_refused_by_the_kernel() -> None:
    scaled = _random_scaled((2, 4, 4, 3), 0.5, seed=4)
    scaled[1, 2, 3, 0] = float("nan")
    assert otam_module._exp_domain_otam(scaled, "reference", (0,)) is None


@pytest.mark.parametrize("preset", ["otam_plain", "otam_clipfsar"])
def test_heads_agree_with_and_without_the_kernel(preset: str, monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(10, 8, 64, generator=generator)
    query = torch.randn(6, 8, 64, generator=generator)
    labels = torch.arange(5).repeat(2)
    metric = metrics.build(preset)
    native = metric(support, labels, query, 5)
    with monkeypatch.context() as patch:
        patch.setattr(_native, "native_kernels", lambda: None)
        fallback = metric(support, labels, query, 5)
    torch.testing.assert_close(native, fallback, rtol=1e-5, atol=1e-5)


def test_otam_cum_dist_runs_without_the_kernel(torch_only) -> None:
    d = torch.rand(3, 4, 5, dtype=torch.float64)
    value = otam_cum_dist(d, 0.2)
    assert value.shape == (3,) and torch.isfinite(value).all()


def test_disabled_by_environment(monkeypatch) -> None:
    monkeypatch.setenv("FSAR_NATIVE_KERNELS", "0")
    _native.native_kernels.cache_clear()
    try:
        assert _native.native_kernels() is None
    finally:
        monkeypatch.delenv("FSAR_NATIVE_KERNELS")
        _native.native_kernels.cache_clear()


def test_a_failing_compiler_gives_one_warning_and_the_fallback(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.delenv("FSAR_NATIVE_KERNELS", raising=False)
    monkeypatch.setenv("FSAR_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    _native.native_kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="fsar.metrics._native"):
            assert _native.native_kernels() is None
        assert "without their C kernels" in caplog.text
        assert not list((tmp_path / "cache").glob("*.so")), "a failed build must not leave a library behind"
    finally:
        _native.native_kernels.cache_clear()


@needs_compiler
def test_build_goes_to_the_cache_directory_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FSAR_KERNEL_CACHE", str(tmp_path))
    _native.native_kernels.cache_clear()
    try:
        assert _native.native_kernels() is not None
        libraries = list(tmp_path.glob("matching-*.so"))
        assert len(libraries) == 1
        stamp = libraries[0].stat().st_mtime_ns
        _native.native_kernels.cache_clear()
        assert _native.native_kernels() is not None
        assert libraries[0].stat().st_mtime_ns == stamp, "a cached library was rebuilt"
        assert not [p for p in tmp_path.iterdir() if p not in libraries], "temporary files left behind"
    finally:
        _native.native_kernels.cache_clear()


def _episode(n_query: int, t_query: int, way: int, shots: int, t_support: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    support = torch.randn(way * shots, t_support, 32, generator=generator) + 0.3
    query = torch.randn(n_query, t_query, 32, generator=generator) + 0.3
    labels = torch.randperm(way * shots, generator=generator) % way  # shuffled, every class present
    return support, labels, query, way


def _without_kernels(function, *args):
    """``function(*args)`` on the torch paths only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_native, "native_kernels", lambda: None)
        return function(*args)


def _logits_and_gradients(metric, episode, weights):
    support, labels, query, way = episode
    logits = metric(support, labels, query, way)
    return logits, torch.autograd.grad((logits * weights).sum(), (support, query))


# 7 queries x 13 supports = 91 pairs (a partial last chunk); 2 x 70 (one query's supports span
# two chunks); a single query frame; different frame counts
EPISODES = [(7, 8, 13, 1, 8), (2, 5, 14, 5, 3), (3, 1, 4, 1, 6)]


@needs_compiler
@pytest.mark.parametrize("episode_shape", EPISODES)
@pytest.mark.parametrize(
    "options",
    [
        {"cosine": "peer", "combine": "sum", "lam": 0.1},
        {"cosine": "exact", "variant": "paper", "lam": 0.3},
        {"shots": "prototype", "lam": 0.5, "cosine": "peer"},
        {"directions": "query_to_support"},
        {"directions": "support_to_query", "variant": "paper"},
    ],
)
def test_fused_otam_head_equals_the_general_path(episode_shape, options) -> None:
    n_query, t_query, way, shots, t_support = episode_shape
    episode = _episode(n_query, t_query, way, shots, t_support, seed=sum(episode_shape))
    metric = metrics.build("otam", **options)
    with torch.no_grad():
        assert otam_module._fused_cosine_otam(
            episode[2], episode[0], cosine=metric.cosine, lam=metric.lam, variant=metric.variant,
            transposes=metric._transposes(), combine=1.0, labels=episode[1], way=way,
        ) is not None
        fused = metric(*episode)
        general = _without_kernels(metric, *episode)
    torch.testing.assert_close(fused, general, rtol=1e-5, atol=2e-5)


@needs_compiler
def test_fused_otam_steps_aside_when_it_does_not_apply() -> None:
    query, targets = torch.randn(3, 4, 8), torch.randn(5, 4, 8)
    common = dict(cosine="peer", variant="reference", transposes=(0,), combine=1.0, labels=None, way=5)
    fused = otam_module._fused_cosine_otam
    assert fused(query.double(), targets.double(), lam=0.5, **common) is None
    with_grad = fused(query.requires_grad_(), targets, lam=0.5, **common)
    assert with_grad is not None and "FusedCosineOTAM" in type(with_grad.grad_fn).__name__
    # lam = 0.01: opposite frames give -d/lam = -200, below float32's normal exp range
    opposite = torch.cat([query.detach(), -query.detach()])
    assert fused(opposite, query.detach(), lam=0.01, **{**common, "way": 3}) is None
    nan_query = query.detach().clone()
    nan_query[0, 0, 0] = float("nan")
    assert fused(nan_query, targets, lam=0.5, **common) is None


@needs_compiler
def test_head_falls_back_correctly_when_weights_leave_float32_range(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(4)
    support = torch.randn(6, 8, 16, generator=generator)
    query = torch.cat([support[:2], -support[:2]])
    labels = torch.arange(3).repeat(2)
    metric = metrics.build("otam", lam=0.01)
    with torch.no_grad():
        logits = metric(support, labels, query, 3)
        with monkeypatch.context() as patch:
            patch.setattr(_native, "native_kernels", lambda: None)
            expected = metric(support, labels, query, 3)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)


@needs_compiler
@pytest.mark.parametrize("episode_shape", EPISODES)
@pytest.mark.parametrize("options", [{}, {"reduction": "sum", "shots": "distance"}, {"shots": "distance"}])
def test_fused_bimhm_head_equals_the_general_path(episode_shape, options) -> None:
    n_query, t_query, way, shots, t_support = episode_shape
    support, labels, query, way = _episode(n_query, t_query, way, shots, t_support, seed=7 + sum(episode_shape))
    query[0, 0] = 0.0  # a zero frame: F.normalize's clamp on both paths
    episode = (support, labels, query, way)
    metric = metrics.build("bimhm", **options)
    with torch.no_grad():
        assert hausdorff_module._fused_bimhm(
            query, support, reduction=metric.reduction, labels=labels, way=way
        ) is not None
        fused = metric(*episode)
        general = _without_kernels(metric, *episode)
    torch.testing.assert_close(fused, general, rtol=1e-5, atol=1e-5)


@needs_compiler
def test_fused_bimhm_leaves_non_finite_features_to_the_torch_path() -> None:
    query, targets = torch.randn(3, 4, 8), torch.randn(2, 4, 8)
    query[1, 3, 2] = float("nan")
    common = dict(reduction="sum", labels=None, way=2)
    assert hausdorff_module._fused_bimhm(query, targets, **common) is None
    with pytest.raises(ValueError, match="NaN in query"):
        metrics.build("bimhm_hyrsm1shot")(targets, torch.arange(2), query, 2)
    assert hausdorff_module._fused_bimhm(torch.randn(3, 4, 8).requires_grad_(), targets, **common) is None
    assert hausdorff_module._fused_bimhm(query.double(), targets.double(), **common) is None


@needs_compiler
@pytest.mark.parametrize("options", [{}, {"shots": "prototype", "cosine": "peer", "combine": "sum", "lam": 0.5},
                                     {"directions": "support_to_query", "variant": "paper"}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_otam_head_gradients_through_the_kernel_equal_the_log_domain_ones(options, dtype) -> None:
    support, labels, query, way = _episode(5, 6, 4, 2, 7, seed=12)
    support, query = support.to(dtype).requires_grad_(), query.to(dtype).requires_grad_()
    metric = metrics.build("otam", **options)
    weights = torch.rand(5, way, dtype=dtype, generator=torch.Generator().manual_seed(2))
    episode = (support, labels, query, way)
    logits, grads = _logits_and_gradients(metric, episode, weights)
    expected_logits, expected = _without_kernels(_logits_and_gradients, metric, episode, weights)
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(logits, expected_logits, **tolerance)
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, **tolerance)


@needs_compiler
@pytest.mark.parametrize("episode_shape", EPISODES)
@pytest.mark.parametrize("options", [{"cosine": "peer", "lam": 0.1}, {"variant": "paper", "shots": "prototype"},
                                     {"directions": "support_to_query", "combine": "sum"}])
def test_fused_otam_gradients_equal_the_log_domain_ones(episode_shape, options) -> None:
    n_query, t_query, way, shots, t_support = episode_shape
    support, labels, query, way = _episode(n_query, t_query, way, shots, t_support, seed=3 + sum(episode_shape))
    support, query = support.requires_grad_(), query.requires_grad_()
    metric = metrics.build("otam", **options)
    weights = torch.rand(n_query, way, generator=torch.Generator().manual_seed(5))
    episode = (support, labels, query, way)
    logits, grads = _logits_and_gradients(metric, episode, weights)
    assert "FusedCosineOTAM" in type(logits.grad_fn).__name__
    expected_logits, expected = _without_kernels(_logits_and_gradients, metric, episode, weights)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=2e-5)
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, rtol=1e-3, atol=1e-5)
