"""Evaluation from the cache computes each clip's part once (fsar.methods.memo), with the same results."""

from __future__ import annotations

import pytest
import torch
import yaml
from engine_standins import TINY_CLIP

import fsar
from fsar.data.inputs import EpisodeInputs
from fsar.methods.memo import ClipMemo

TINY = yaml.safe_load(TINY_CLIP.split("=", 1)[1])


def _episode(seed, names, dim, shot=2, frames=4):
    g = torch.Generator().manual_seed(seed)
    way = len(names)
    return EpisodeInputs(
        support=torch.randn(way * shot, frames, dim, generator=g),
        support_labels=torch.arange(way).repeat_interleave(shot),
        query=torch.randn(way, frames, dim, generator=g),
        class_names=list(names),
        features=True,
    )


@pytest.mark.parametrize("name", ["ma-fsar", "clip-fsar", "lga"])
def test_memo_gives_the_uncached_results_and_forgets_on_mode_change(name):
    torch.manual_seed(0)
    method = fsar.create_method(name, backbone="clip-vit-b32", weights="random", encoder_options=TINY,
                                finetune="frozen")
    method.eval()
    dim = method.encoder.feature_dim
    first = _episode(0, ["a", "b", "c"], dim)
    # the same clips again, other classes around them and another order: rows must be looked up by content
    second = EpisodeInputs(support=first.support.flip(0), support_labels=first.support_labels.flip(0),
                           query=first.query.flip(0), class_names=first.class_names, features=True)
    with torch.enable_grad():  # autograd on: the memo stays out of it
        expected = [method(e).log_probs.detach() for e in (first, second)]
    assert len(method.clip_memo) == 0
    with torch.no_grad():
        got = [method(e).log_probs for e in (first, second)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))
    assert method.clip_memo.hits >= first.support.shape[0] + first.query.shape[0]  # second episode from memory
    with torch.no_grad():  # changed weights after a mode switch are seen
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.5)
    method.train()
    method.eval()
    assert len(method.clip_memo) == 0
    with torch.no_grad():
        changed = method(first).log_probs
    with torch.enable_grad():
        assert torch.allclose(changed, method(first).log_probs.detach(), atol=1e-6)
    assert not torch.allclose(changed, got[0])


def test_memo_is_exact_and_bounded():
    memo = ClipMemo(max_entries=2)
    calls = []

    def summing(batch):
        def compute(index):
            calls.append(index.tolist())
            return (batch[index].sum(dim=(1, 2)),)
        return compute

    clips = torch.randn(3, 10, 20)
    near = clips.clone()
    sampled = set(torch.linspace(0, 199, 64).round().long().tolist())
    hidden = next(i for i in range(200) if i not in sampled)
    near[0].view(-1)[hidden] += 1.0  # the same 64 key values, another clip: must be recomputed
    (out,) = memo.map(summing(clips), clips, ["x"] * 3)
    (again,) = memo.map(summing(near), near, ["x"] * 3)
    assert calls == [[0, 1, 2], [0, 2]]  # row 0 differs inside; row 2 was not stored (bound of 2)
    assert torch.allclose(again, near.sum(dim=(1, 2))) and torch.allclose(out, clips.sum(dim=(1, 2)))
    memo.map(summing(clips), clips[:1], ["y"])  # the context is part of the key
    assert calls[-1] == [0]
    assert not ClipMemo.applies(torch.nn.Linear(1, 1).train(), True, clips)
