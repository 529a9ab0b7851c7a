import json
import math

import pytest
import torch
from engine_standins import TensorEpisodes, TinyMethod

from fsar.engine.evaluate import confidence_interval, evaluate, save_result
from fsar.methods.base import FewShotMethod, MethodOutput


def test_ci95_formula():
    values = [1.0, 0.5, 0.5, 0.0, 1.0]
    mean, ci95, std = confidence_interval(values)
    expected_std = math.sqrt(sum((v - 0.6) ** 2 for v in values) / 5)  # population std, as OTAM/TRX code
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(expected_std)
    assert ci95 == pytest.approx(1.96 * expected_std / math.sqrt(5))
    with pytest.raises(ValueError):
        confidence_interval([])


class AlwaysFirst(FewShotMethod):
    """Predicts episode label 0 for every query; records whether it ever saw query labels."""

    name = "first"

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Identity()
        self.saw_labels = False

    def forward(self, inputs):
        self.saw_labels |= inputs.query_labels is not None
        n = inputs.query.shape[0]
        logits = torch.zeros(n, inputs.way)
        logits[:, 0] = 1.0
        return MethodOutput(log_probs=logits.log_softmax(-1))


def test_per_class_accuracy_and_confusion():
    source = TensorEpisodes(["a", "b", "c", "d"], way=2, queries=3)
    method = AlwaysFirst()
    result = evaluate(method, source, episodes=20, progress=False)
    assert not method.saw_labels  # the engine hides the answers
    assert result.accuracy == pytest.approx(0.5) and result.ci95 == pytest.approx(0.0)
    confusion = torch.tensor(result.confusion)
    assert confusion.sum() == 20 * 2 * 3
    # recompute from the served episodes: label-0 class queries are right, label-1 queries go to class 0
    expected = torch.zeros(4, 4, dtype=torch.int64)
    index = {c: i for i, c in enumerate(source.class_names)}
    for _, _, (first, second) in source.served:
        expected[index[first], index[first]] += 3
        expected[index[second], index[first]] += 3
    assert torch.equal(confusion, expected)
    for name in source.class_names:
        row = expected[index[name]]
        if row.sum():
            assert result.per_class_accuracy[name] == pytest.approx(row[index[name]].item() / row.sum().item())


def test_same_seed_same_episodes_and_result(tmp_path):
    torch.manual_seed(0)
    method = TinyMethod(dropout=0.5)
    a = evaluate(method, TensorEpisodes(list("abcdef"), seed=4), episodes=15, progress=False)
    b = evaluate(method, TensorEpisodes(list("abcdef"), seed=4), episodes=15, progress=False)
    assert a.episode_accuracies == b.episode_accuracies  # eval mode: dropout off, episodes from the seed
    assert method.training  # restored afterwards
    header = dict(method="tiny", backbone="x", way=3, shot=1, queries=2, episodes=15, seed=4)
    record = save_result(a, tmp_path / "r.json", header=header, png_path=tmp_path / "r.png")
    saved = json.loads((tmp_path / "r.json").read_text())
    for key in ("method", "backbone", "way", "shot", "queries", "episodes", "seed", "accuracy", "ci95"):
        assert key in saved
    assert saved == record
    assert 0 <= saved["accuracy"] <= 1 and saved["ci95"] < 1
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_wrong_output_shape_is_an_error():
    class Bad(AlwaysFirst):
        def forward(self, inputs):
            return MethodOutput(log_probs=torch.zeros(1, 1))

    with pytest.raises(ValueError, match="expected \\(n_query, way\\)"):
        evaluate(Bad(), TensorEpisodes(list("abc"), way=2), episodes=1, progress=False)


class BatchingPrototypes(FewShotMethod):
    """Nearest class mean; evaluates chunks of episodes through predict_episodes (one stacked product
    per chunk), recording each chunk's episode shapes and whether any query label reached it."""

    name = "batching"

    def __init__(self, batch: int):
        super().__init__()
        self.encoder = torch.nn.Identity()
        self.batch, self.chunks, self.saw_labels = batch, [], False

    def evaluation_batch(self) -> int:
        return self.batch

    def _logits(self, support, labels, query, way):
        means = torch.stack([support[labels == c].mean(0) for c in range(way)])
        return -torch.cdist(query.flatten(1), means.flatten(1))

    def forward(self, inputs):
        self.saw_labels |= inputs.query_labels is not None
        return MethodOutput(log_probs=self._logits(inputs.support, inputs.support_labels, inputs.query,
                                                   inputs.way).log_softmax(-1))

    def predict_episodes(self, episodes):
        self.chunks.append([(e.way, tuple(e.support.shape)) for e in episodes])
        self.saw_labels |= any(e.query_labels is not None for e in episodes)
        queries = torch.stack([e.query for e in episodes])  # one stacked distance for the chunk
        means = torch.stack([torch.stack([e.support[e.support_labels == c].mean(0) for c in range(e.way)])
                             for e in episodes])
        logits = -torch.cdist(queries.flatten(2), means.flatten(2))
        return list(logits.log_softmax(-1))


class MixedShapes(TensorEpisodes):
    """Episodes 4 and 5 of every 6 are 2-way instead of 3-way: chunks must not mix them."""

    def sample(self, index, *, train):
        self.way = 2 if index % 6 in (4, 5) else 3
        return super().sample(index, train=train)


def test_batched_evaluation_gives_the_one_by_one_records_and_never_mixes_shapes():
    names = ["a", "b", "c", "d", "e"]
    one = evaluate(BatchingPrototypes(1), MixedShapes(names, shot=2, queries=3), episodes=23, progress=False)
    method = BatchingPrototypes(3)
    batched = evaluate(method, MixedShapes(names, shot=2, queries=3), episodes=23, progress=False)
    assert not method.saw_labels
    assert batched.episode_accuracies == one.episode_accuracies  # per episode, in order
    assert batched.confusion == one.confusion and batched.accuracy == one.accuracy
    assert 0 < min(one.episode_accuracies) or max(one.episode_accuracies) < 1  # not a constant answer
    # runs of one shape cut at 3: 0-2, 3 | 4-5 | 6-8, 9 | ...; a chunk of one (3, 9, ..., 22) goes through forward
    assert [len(chunk) for chunk in method.chunks] == [3, 2, 3, 2, 3, 2, 3] and len(one.episode_accuracies) == 23
    assert all(len(set(chunk)) == 1 for chunk in method.chunks)
    assert {chunk[0][0] for chunk in method.chunks} == {2, 3}


def test_a_method_returning_the_wrong_number_of_predictions_is_an_error():
    class Short(BatchingPrototypes):
        def predict_episodes(self, episodes):
            return super().predict_episodes(episodes)[:-1]

    with pytest.raises(ValueError, match="predictions for"):
        evaluate(Short(4), TensorEpisodes(["a", "b", "c"]), episodes=8, progress=False)


def test_episodes_of_frames_are_never_held_back_for_a_chunk():
    class Frames(TensorEpisodes):  # stand-in frames: features=False
        def sample(self, index, *, train):
            from dataclasses import replace

            return replace(super().sample(index, train=train), features=False)

    method = BatchingPrototypes(4)
    one = evaluate(BatchingPrototypes(1), Frames(["a", "b", "c", "d"]), episodes=9, progress=False)
    got = evaluate(method, Frames(["a", "b", "c", "d"]), episodes=9, progress=False)
    assert method.chunks == [] and got.episode_accuracies == one.episode_accuracies
