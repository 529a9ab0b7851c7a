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


@pytest.mark.parametrize("name", ["ma-fsar", "clip-fsar", "lga", "clip-spm"])
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


@pytest.mark.parametrize("padm", ["transductive", "inductive"])
def test_clip_spm_residual_head_from_memory_gives_the_plain_results(padm):
    """On the grid pair (the residual head behind the grid module): each clip's frames, Down and
    a support's SPM pass a come from memory, the episode's part is computed, the logits are the
    plain path's; trained-looking weights (every zero-started map moved) so every branch counts."""
    from fsar.encoders import create_encoder

    torch.manual_seed(2)
    encoder = create_encoder("effnet-lite0-grid+minilm", weights="random", grid=2)
    method = fsar.create_method("clip-spm", backbone=encoder, padm=padm, heads=2, dim_head=8, mlp_dim=32,
                                prompt_hidden=32, bottleneck=8, grid_width=8)
    with torch.no_grad():
        for name, p in method.named_parameters():
            if p.requires_grad and ("up" in name or "anchor_weight" in name or "text_proj" in name or "gate" in name):
                p.add_(0.05 * torch.randn_like(p))
    method.eval()
    names = ["a", "b", "c", "d"]
    first = _episode(4, names, encoder.feature_dim, shot=1, frames=4)
    order = torch.tensor([2, 0, 3, 1])  # the same clips, supports out of class order, other queries' order
    second = EpisodeInputs(support=first.support[order], support_labels=first.support_labels[order],
                           query=first.query.flip(0), class_names=names, features=True)
    episodes = [_named(first, range(4), range(10, 14)), _named(second, order.tolist(), [13, 12, 11, 10])]
    with torch.enable_grad():
        expected = [method(e).log_probs.detach() for e in episodes]
    with torch.no_grad():
        got = [method(e) for e in episodes]
    for out, plain in zip(got, expected):
        torch.testing.assert_close(out.log_probs, plain, atol=1e-5, rtol=1e-5)
        assert set(out.parts) == {"log_p", "d_spm", "d_padm"}
    assert method.clip_memo.hits >= 8  # the second episode's clips came from memory
    assert not torch.allclose(expected[0], expected[0].mean(-1, keepdim=True))  # not uniform: weights matter


def _summing(calls: list):
    """``summing(batch)``: a ClipMemo compute of each row's sum that logs the rows it was asked for."""
    def summing(batch):
        def compute(index):
            calls.append(index.tolist())
            return (batch[index].sum(dim=(1, 2)),)
        return compute
    return summing


def test_memo_is_exact_and_bounded():
    memo = ClipMemo(max_entries=2)
    calls = []
    summing = _summing(calls)

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


def _named(episode: EpisodeInputs, support_ids, query_ids) -> EpisodeInputs:
    """The episode as a feature cache hands it out: its rows named (CachedRows)."""
    from dataclasses import replace

    from fsar.data.inputs import CachedRows

    return replace(episode, cached_rows=CachedRows.of(episode.support, support_ids, episode.query, query_ids))


@pytest.mark.parametrize("name", ["ma-fsar", "clip-fsar", "lga", "clip-spm"])
def test_rows_named_by_the_cache_are_found_by_name_with_the_plain_results(name):
    torch.manual_seed(1)
    method = fsar.create_method(name, backbone="clip-vit-b32", weights="random", encoder_options=TINY,
                                finetune="frozen")
    method.eval()
    dim = method.encoder.feature_dim
    first = _episode(3, ["a", "b", "c"], dim)
    n_s, n_q = first.support.shape[0], first.query.shape[0]
    # the same clips in another order, under the same names
    order_s, order_q = torch.arange(n_s).flip(0), torch.arange(n_q).flip(0)
    second = EpisodeInputs(support=first.support[order_s], support_labels=first.support_labels[order_s],
                           query=first.query[order_q], class_names=first.class_names, features=True)
    episodes = [_named(first, range(n_s), range(100, 100 + n_q)),
                _named(second, order_s.tolist(), (100 + order_q).tolist())]
    with torch.enable_grad():  # the plain path: no memory at all
        expected = [method(e).log_probs.detach() for e in episodes]
    with torch.no_grad():
        got = [method(e).log_probs for e in episodes]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    keys = list(method.clip_memo._store)  # noqa: SLF001 - how rows were found
    assert keys and all(key[1] == "id" for key in keys)  # by name, never by content
    assert method.clip_memo.hits >= n_s + n_q  # the second episode came from memory


def test_a_name_describes_only_the_unmodified_tensor_it_was_given_for():
    memo = ClipMemo()
    calls = []
    summing = _summing(calls)

    clips = torch.randn(3, 4, 5)
    episode = _named(EpisodeInputs(support=clips, support_labels=torch.arange(3), query=clips[:1],
                                   class_names=["a", "b", "c"], features=True), [7, 8, 9], [7])
    rows = episode.cached_rows
    assert rows.rows_of(clips) == (7, 8, 9) and rows.rows_of(clips.clone()) is None
    memo.note(clips, rows.rows_of(clips))
    (out,) = memo.map(summing(clips), clips, ["x"] * 3)
    torch.testing.assert_close(out, clips.sum(dim=(1, 2)))
    clips[0] += 1.0  # modified in place after naming: neither the episode nor the memo trusts the names
    assert rows.rows_of(clips) is None
    (changed,) = memo.map(summing(clips), clips, ["x"] * 3)
    torch.testing.assert_close(changed, clips.sum(dim=(1, 2)))
    assert calls == [[0, 1, 2], [0, 1, 2]]  # recomputed by content, not served by name
    (again,) = memo.map(summing(clips), clips, ["x"] * 3)
    assert calls[-1] == [0, 1, 2] and len(calls) == 2  # now found by content
    torch.testing.assert_close(again, changed)
    with pytest.raises(ValueError, match="2 ids for 3 rows"):
        memo.note(clips, [1, 2])


def test_outputs_of_other_shapes_under_one_call_and_beyond_the_bound():
    memo = ClipMemo(max_entries=3)
    compute_of = lambda batch: (lambda index: (batch[index].mean(1), batch[index]))  # noqa: E731
    short, long = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    memo.map(compute_of(short), None, ["s", "s"], ids=[1, 2])
    memo.map(compute_of(long), None, ["l", "l"], ids=[3, 4])  # the second row is beyond the bound
    assert len(memo) == 3
    mean, rows = memo.map(compute_of(long), None, ["l", "l"], ids=[3, 4])
    torch.testing.assert_close(rows, long)
    torch.testing.assert_close(mean, long.mean(1))
    assert memo.misses == 5  # row 4 was not kept, so it was computed again


def test_group_means_average_the_stored_rows_of_each_group_and_compute_each_row_once():
    memo = ClipMemo(max_entries=5)
    clips = torch.randn(6, 3, 4)  # clip i is named i
    calls = []

    def compute_for(ids):
        def compute(index):  # index: positions in this call's rows
            calls.append([ids[i] for i in index.tolist()])
            rows = clips[torch.tensor(ids)[index]]
            return rows * 2, rows.sum(-1)

        return compute

    ids = [4, 0, 1, 5, 2, 1]  # three groups of two: (4, 0), (1, 5), (2, 1)
    doubled, sums = memo.group_means(compute_for(ids), ["c"] * 6, ids=ids, group=2)
    expected = clips[ids].view(3, 2, 3, 4)
    torch.testing.assert_close(doubled, (2 * expected).mean(1))
    torch.testing.assert_close(sums, expected.sum(-1).mean(1))
    assert calls == [[4, 0, 1, 5, 2]]  # clip 1 once, though it appears twice
    # again: served from the tables, nothing computed
    again = memo.group_means(compute_for(ids), ["c"] * 6, ids=ids, group=2)
    assert len(calls) == 1 and all(torch.equal(a, b) for a, b in zip(again, (doubled, sums)))
    # beyond the bound (5 stored, a sixth clip): computed, not kept, averaged all the same
    beyond = memo.group_means(compute_for([3, 4]), ["c"] * 2, ids=[3, 4], group=2)
    torch.testing.assert_close(beyond[0], (2 * clips[[3, 4]]).mean(0, keepdim=True))
    assert calls[-1] == [3] and len(memo) == 5
    with pytest.raises(ValueError, match="groups of 4"):
        memo.group_means(compute_for(ids), ["c"] * 6, ids=ids, group=4)
