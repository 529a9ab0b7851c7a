"""``fsar.explain``: the OTAM path, nearest frames, stages and the picture."""

import itertools
import shutil

import pytest
import torch
from engine_standins import write_tiny_dataset

from fsar.explain import nearest_frames, otam_path
from fsar.metrics.otam import otam_cum_dist
from fsar.recognizer import Recognizer

TINY = {"encoder_options": {"image_size": 32, "patch_size": 16, "width": 32, "vision_layers": 1, "heads": 2,
                            "text_width": 32, "text_layers": 1, "text_heads": 2, "projection_dim": 16,
                            "vocab_size": 64}, "finetune": "frozen"}


def brute_force_otam(d):
    rows, cols = d.shape
    best = float("inf")
    for start in range(rows):
        for steps in itertools.product((0, 1), repeat=cols - 1):
            path = [start]
            for s in steps:
                path.append(path[-1] + s)
            if path[-1] < rows:
                best = min(best, sum(float(d[r, c]) for c, r in enumerate(path)))
    return best


def test_otam_path_is_the_minimum_monotone_alignment_and_the_hard_limit_of_otam():
    g = torch.Generator().manual_seed(0)
    for rows, cols in ((4, 5), (5, 3), (1, 4), (3, 1)):
        d = torch.rand(rows, cols, generator=g, dtype=torch.float64)
        path, cost = otam_path(d)
        assert len(path) == cols and all(b - a in (0, 1) for a, b in zip(path, path[1:]))
        assert cost == pytest.approx(sum(float(d[r, c]) for c, r in enumerate(path)))
        assert cost == pytest.approx(brute_force_otam(d))
        # the soft OTAM total of the paper variant tends to it as λ -> 0
        assert float(otam_cum_dist(d, 1e-4, variant="paper")) == pytest.approx(cost, abs=cols * 1e-3)
    d = torch.ones(4, 6, dtype=torch.float64)
    for c, r in enumerate([0, 1, 1, 2, 3, 3]):
        d[r, c] = 0.0
    assert otam_path(d) == ([0, 1, 1, 2, 3, 3], 0.0)


def test_nearest_frames_respects_the_mask():
    d = torch.tensor([[0.1, 0.5, 0.9], [0.8, 0.2, 0.05]])
    nearest, cost = nearest_frames(d)
    assert nearest == [0, 2]
    assert cost == pytest.approx((0.1 + 0.05) / 2 + (0.1 + 0.2 + 0.05) / 3)
    mask = torch.tensor([[False, True, True], [True, True, False]])
    assert nearest_frames(d, mask)[0] == [1, 1]


@pytest.fixture(scope="module")
def support(tmp_path_factory):
    data = write_tiny_dataset(tmp_path_factory.mktemp("ex") / "tiny", classes=4, clips=3, frames=6)
    folder = data.parent / "support"
    for c in range(3):
        for j in range(2):
            shutil.copytree(data / f"class{c:02d}" / f"clip{j}", folder / f"class{c:02d}" / f"clip{j}")
    return data, folder


@pytest.mark.parametrize("method", ["otam", "bimhm", "lga", "ma-fsar"])
def test_explanation_of_each_alignment_kind(support, method, tmp_path):
    data, folder = support
    torch.manual_seed(0)
    recognizer = Recognizer.from_folder(folder, method=method, backbone="clip-vit-b32", weights="random",
                                        method_options=TINY, num_frames=6, cache_dir=False, device="cpu",
                                        reject=0.9)
    query = data / "class01" / "clip2"
    explanation = recognizer.explain(query, top=2)
    prediction = recognizer.predict(query)
    assert explanation.query == str(query) == explanation.prediction.query
    assert recognizer.explain(query, top=1, name="my clip").query == "my clip"
    assert [m.name for m in explanation.matches] == [n for n, _ in prediction.ranking[:2]]
    assert explanation.prediction.label == prediction.label
    for match in explanation.matches:
        assert match.support_path in recognizer.support_paths(match.name)
        assert [q for q, _ in match.pairs] == list(range(6)) and all(0 <= s < 6 for _, s in match.pairs)
        assert match.support_frames.dtype == torch.uint8 and match.support_frames.shape[0] == 6
    first = explanation.matches[0]
    if method == "otam" or method == "ma-fsar":
        supports = [s for _, s in first.pairs]
        assert all(b - a in (0, 1) for a, b in zip(supports, supports[1:]))
        assert "OTAM" in explanation.alignment
    if method == "lga":
        assert first.query_stages and len(first.query_stages) == 3 and len(first.texts) == 3
        for (q, s) in first.pairs:  # every match stays inside the aligned stage pair
            stage = next(i for i, (a, b) in enumerate(first.query_stages) if a <= q < b)
            a, b = first.support_stages[stage]
            assert a <= s < b
        assert first.text_probability is not None
    if method == "ma-fsar":
        assert "prompt" in first.texts[0] and first.text_probability is not None
    if method in ("otam", "bimhm"):
        assert first.texts == [] and first.text_probability is None
    png = explanation.save(tmp_path / "why.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert explanation.to_dict()["matches"][0]["class"] == first.name
