"""Paired comparisons: difference, paired interval, sign test and bootstrap p-values."""

from __future__ import annotations

import math

import pytest
import torch

from fsar.engine.compare import (
    ComparisonError,
    check_same_episodes,
    compare_all,
    compare_paired,
    comparison_markdown,
    sign_test_p,
)


def _episodes(p, n=4000, queries=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, queries, generator=g) < p).double().mean(dim=1)


def test_sign_test_is_the_exact_binomial_tail():
    assert sign_test_p(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test_p(5, 5) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(1, 9) == sign_test_p(9, 1)
    # large n: matches the normal approximation of the binomial (continuity corrected)
    z = (5200 - 5000 - 0.5) / math.sqrt(10000 / 4)
    assert sign_test_p(5200, 4800) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.02)


def test_difference_and_paired_interval():
    a, b = _episodes(0.6, seed=1), _episodes(0.5, seed=2)
    c = compare_paired(a, b, name_a="x", name_b="y", bootstrap=2000)
    d = a - b
    assert c.difference == pytest.approx(d.mean().item())
    assert c.ci95 == pytest.approx(1.96 * d.std(correction=0).item() / math.sqrt(d.numel()))
    assert c.wins == int((d > 0).sum()) and c.losses == int((d < 0).sum()) and c.wins + c.losses + c.ties == 4000
    assert c.significant and c.p_sign < 1e-6 and c.p_bootstrap == pytest.approx(1 / 2001)


def test_pairing_removes_shared_episode_difficulty():
    """Two methods that differ by one query in a few episodes: unpaired intervals overlap, the paired one does not."""
    base = _episodes(0.55, seed=3)
    better = base.clone()
    better[::20] = torch.clamp(better[::20] + 0.2, max=1.0)
    c = compare_paired(better, base, bootstrap=1000)
    unpaired = 1.96 * base.std(correction=0).item() / math.sqrt(base.numel())
    assert c.difference < 2 * unpaired  # within each method's own interval ...
    assert c.significant and c.losses == 0  # ... yet certain episode by episode


def test_bootstrap_p_matches_direct_resampling_and_the_normal_approximation():
    a, b = _episodes(0.52, n=3000, seed=4), _episodes(0.5, n=3000, seed=5)
    c = compare_paired(a, b, bootstrap=20000, seed=1)
    d = a - b
    centred = d - d.mean()
    g = torch.Generator().manual_seed(9)
    means = centred[torch.randint(0, d.numel(), (4000, d.numel()), generator=g)].mean(dim=1)
    direct = ((means.abs() >= d.mean().abs()).sum().item() + 1) / 4001
    z = d.mean().item() / (d.std(correction=0).item() / math.sqrt(d.numel()))
    normal = math.erfc(abs(z) / math.sqrt(2))
    assert 0.001 < c.p_bootstrap < 0.999
    assert c.p_bootstrap == pytest.approx(direct, abs=0.03)
    assert c.p_bootstrap == pytest.approx(normal, abs=0.03)


def test_continuous_scores_take_the_resampling_path():
    g = torch.Generator().manual_seed(6)
    a = torch.rand(500, generator=g)
    b = a - 0.05 + 0.01 * torch.randn(500, generator=g)
    c = compare_paired(a, b, bootstrap=500)
    assert c.p_bootstrap == pytest.approx(1 / 501) and c.difference == pytest.approx(0.05, abs=0.002)


def test_identical_methods_and_bad_input():
    a = _episodes(0.5, n=100)
    c = compare_paired(a, a.clone())
    assert (c.difference, c.ci95, c.p_sign, c.p_bootstrap, c.ties) == (0.0, 0.0, 1.0, 1.0, 100)
    assert not c.significant
    with pytest.raises(ComparisonError, match="same episodes"):
        compare_paired(a, a[:50])
    with pytest.raises(ComparisonError, match="no episodes"):
        compare_paired([], [])


def test_all_pairs_and_markdown():
    results = {"m1": _episodes(0.6, n=500, seed=1), "m2": _episodes(0.5, n=500, seed=2), "m3": _episodes(0.5, n=500, seed=3)}
    pairs = compare_all(results, bootstrap=200)
    assert [(p.a, p.b) for p in pairs] == [("m1", "m2"), ("m1", "m3"), ("m2", "m3")]
    text = comparison_markdown(pairs, title="t")
    assert text.count("\n| m") == 3 and "paired 95% CI" in text and "-0.00" not in text


def test_results_drawing_other_episodes_are_refused():
    base = {"way": 5, "shot": 1, "queries": 1, "episodes": 3, "seed": 0, "data": "d", "split_file": None,
            "class_names": ["a", "b"], "episode_accuracies": [1.0, 0.0, 1.0]}
    check_same_episodes({"x": base, "y": dict(base)})
    with pytest.raises(ComparisonError, match="seed"):
        check_same_episodes({"x": base, "y": {**base, "seed": 1}})
    with pytest.raises(ComparisonError, match="per-episode"):
        check_same_episodes({"x": base, "y": {**base, "episode_accuracies": []}})


def test_fsar_eval_compare_pairs_with_an_earlier_result(tmp_path, capsys):
    import json

    from engine_standins import TINY_CLIP

    from fsar.cli import main
    from fsar.data.synth import render_dataset

    data = render_dataset(tmp_path / "synth", classes=5, videos_per_class=3, frames=8, size=32, progress=False)
    common = ["--data", str(data), "--backbone", "clip-vit-b32", "--weights", "random", "-O", TINY_CLIP,
              "-O", "finetune=frozen", "--episodes", "12", "--no-progress"]
    assert main(["eval", "--method", "proto", *common, "--json", str(tmp_path / "proto.json")]) == 0
    first = json.loads((tmp_path / "proto.json").read_text())
    assert len(first["episode_accuracies"]) == 12
    capsys.readouterr()
    assert main(["eval", "--method", "otam", *common, "--json", str(tmp_path / "otam.json"),
                 "--compare", str(tmp_path / "proto.json")]) == 0
    out = capsys.readouterr().out
    assert "paired comparison on the same episodes" in out and "| otam (this run) | proto (" in out
    second = json.loads((tmp_path / "otam.json").read_text())
    expected = compare_paired(second["episode_accuracies"], first["episode_accuracies"])
    assert f"{100 * expected.difference:+.2f}" in out
    assert main(["eval", "--method", "otam", *common, "--seed", "3", "--compare", str(tmp_path / "proto.json")]) == 2
    assert "different episodes" in capsys.readouterr().err
