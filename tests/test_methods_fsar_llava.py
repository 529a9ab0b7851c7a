"""FSAR-LLaVA (fsar.methods.fsar_llava): MFEM / CTPC / MPMM shapes, the composite prototype, inductive
inference, no query-label leakage, frozen MLLM with only MFEM + CTPC training, the cache path equal to
the frames path, and the vision-tower baseline. Runs on the tiny saved Video-LLaVA of tiny_video_llava."""

from __future__ import annotations

from copy import deepcopy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fsar.data.inputs import EpisodeInputs, MissingStreamError
from fsar.methods import create_method
from fsar.methods.fsar_llava import CTPC, MFEM, FSARLLaVA
from tiny_video_llava import clips, tiny_encoder, tiny_folder

SMALL = dict(dim=32, temporal_heads=2, temporal_ffn_dim=64, enhancement_heads=2, refinement_heads=2, dropout=0.0)
NAMES = ["moving something from left to right", "bouncing something", "shaking something", "covering something"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_encoder(tiny_folder(tmp_path_factory))


@pytest.fixture(scope="module")
def episodes(encoder):
    """(frames episode, the same episode as cached streams): the MLLM runs once per module."""
    episode = frames_episode(seed=5)
    return episode, feature_episode(encoder, episode)


def copy(episode: EpisodeInputs) -> EpisodeInputs:
    return dataclasses.replace(
        episode, support_streams=dict(episode.support_streams), query_streams=dict(episode.query_streams),
        class_streams=dict(episode.class_streams),
    )


def method(encoder, name="fsar-llava", seed=0, **options) -> FSARLLaVA:
    torch.manual_seed(seed)
    return create_method(name, backbone=encoder, **{**SMALL, **options})


def frames_episode(way=3, shot=2, queries=2, seed=0) -> EpisodeInputs:
    support = clips(way * shot, seed=seed)
    query = clips(way * queries, seed=seed + 100)
    return EpisodeInputs(
        support=support, support_labels=torch.arange(way).repeat_interleave(shot), query=query,
        class_names=NAMES[:way], query_labels=torch.arange(way).repeat_interleave(queries),
    )


def feature_episode(encoder, episode: EpisodeInputs) -> EpisodeInputs:
    """The same episode as the feature cache would hand it (streams extracted by the encoder; the
    label-aware support stream for support clips only, as the cache does)."""
    names = [episode.class_names[int(y)] for y in episode.support_labels]
    s, q = encoder.encode_clips(episode.support, labels=names), encoder.encode_clips(episode.query)
    return EpisodeInputs(
        support=s.pop("features"), support_labels=episode.support_labels, query=q.pop("features"),
        class_names=episode.class_names, query_labels=episode.query_labels, features=True,
        support_streams=s, query_streams=q, class_streams=encoder.encode_class_streams(episode.class_names),
    )


# -- modules -------------------------------------------------------------------------------------------------


def test_mfem_shapes_and_branches():
    mfem = MFEM(visual_dim=40, text_dim=24, dim=16, frames=8, heads=2, ffn_dim=32, enhancement_heads=2, dropout=0.0)
    v, t = mfem(torch.randn(5, 8, 40), torch.randn(5, 24))
    assert v.shape == (5, 8, 16) and t.shape == (5, 16) and mfem.text(torch.randn(3, 24)).shape == (3, 16)
    plain = MFEM(visual_dim=40, text_dim=24, dim=16, heads=2, ffn_dim=32, mutual_enhancement=False, dropout=0.0)
    plain.load_state_dict(mfem.state_dict(), strict=False)
    x, h = torch.randn(2, 8, 40), torch.randn(2, 24)
    assert not torch.allclose(mfem(x, h)[0], plain(x, h)[0])  # the enhancement changes V ...
    torch.testing.assert_close(mfem.visual(x), plain.visual(x))  # ... on top of the same visual branch
    visual_only = MFEM(visual_dim=40, text_dim=None, dim=16, heads=2, ffn_dim=32, mutual_enhancement=False)
    assert visual_only.text_head is None and visual_only(x, None)[1] is None
    with pytest.raises(ValueError, match="position embedding covers 8"):
        mfem.visual(torch.randn(1, 9, 40))
    with pytest.raises(ValueError, match="textual branch"):
        MFEM(visual_dim=40, text_dim=None)


def test_ctpc_composite_prototype_and_k_shot_means():
    ctpc = CTPC(dim=6, beta=0.3, refine=False)
    v, t, u = torch.randn(4, 3, 6), torch.randn(4, 6), torch.randn(2, 6)
    labels = torch.tensor([0, 1, 0, 1])
    proto_v, proto_t = ctpc.prototypes(v, labels, 2, t, u)
    torch.testing.assert_close(proto_v, torch.stack([v[[0, 2]].mean(0), v[[1, 3]].mean(0)]))
    expected = F.normalize(0.3 * torch.stack([t[[0, 2]].mean(0), t[[1, 3]].mean(0)]) + 0.7 * u, dim=-1)
    torch.testing.assert_close(proto_t, expected)
    one_shot = ctpc.prototypes(v[:2], labels[:2], 2, t[:2], u)[1]  # K = 1: the special case
    torch.testing.assert_close(one_shot, F.normalize(0.3 * t[:2] + 0.7 * u, dim=-1))


def test_ctpc_refinement_depends_on_the_other_prototypes_only():
    torch.manual_seed(0)
    ctpc = CTPC(dim=8, heads=2).eval()
    v, t, u = torch.randn(3, 4, 8), torch.randn(3, 8), torch.randn(3, 8)
    labels = torch.arange(3)
    a_v, a_t = ctpc.prototypes(v, labels, 3, t, u)
    v2 = v.clone()
    v2[2] = torch.randn(4, 8)  # (a constant shift would vanish in the LayerNorm)
    b_v, b_t = ctpc.prototypes(v2, labels, 3, t, u)
    assert not torch.allclose(a_v[0], b_v[0])  # class 0's prototype sees class 2 (task-oriented)
    q_v, q_t = ctpc.queries(torch.randn(2, 4, 8), torch.randn(2, 8))
    assert q_v.shape == (2, 4, 8) and q_t.shape == (2, 8)


# -- the method on the tiny MLLM ----------------------------------------------------------------------------


def test_forward_shapes_loss_and_gradients_reach_only_mfem_and_ctpc(encoder):
    model = method(encoder).train()
    out = model(frames_episode())
    assert out.log_probs.shape == (6, 3)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(6))
    assert out.loss is not None and torch.isfinite(out.loss)
    assert {"loss_temporal", "loss_global", "loss_text", "loss_cross", "loss_contrastive"} <= set(out.parts)
    out.loss.backward()
    trainable = dict(model.named_parameters())
    assert all(n.startswith(("mfem.", "ctpc.")) for n, p in trainable.items() if p.requires_grad)
    assert all(p.grad is None for p in model.encoder.parameters())
    without_grad = [n for n, p in trainable.items() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not without_grad
    assert list(model.mpmm.parameters()) == []
    assert set(model.trainable_state_dict()) == {n for n, p in trainable.items() if p.requires_grad}


def test_frozen_mllm_parameter_count_is_unchanged(encoder, episodes):
    before = sum(p.numel() for p in encoder.parameters())
    model = method(encoder).train()
    model(episodes[1]).loss.backward()
    assert sum(p.numel() for p in encoder.parameters()) == before
    assert not any(p.requires_grad for p in encoder.parameters()) and not model.encoder.model.training


def test_query_labels_never_change_the_prediction(encoder, episodes):
    model = method(encoder).eval()
    episode = copy(episodes[1])
    a = model(episode).log_probs
    episode.query_labels = episode.query_labels.flip(0)
    assert torch.equal(a, model(episode).log_probs)
    episode.query_labels = None
    assert torch.equal(a, model(episode).log_probs)


def test_inference_is_inductive(encoder, episodes):
    model = method(encoder).eval()
    episode = copy(episodes[1])
    a = model(episode).log_probs
    episode.query = episode.query.clone()
    episode.query[0] = torch.randn_like(episode.query[0])
    episode.query_streams = {k: v.clone() for k, v in episode.query_streams.items()}
    episode.query_streams["prompt_state"][0] = torch.randn_like(episode.query_streams["prompt_state"][0])
    b = model(episode).log_probs
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1:], b[1:])


def test_cache_path_equals_frames_path_and_names_its_streams(encoder, episodes):
    model = method(encoder).eval()
    assert model.required_streams() == ("prompt_state", "support_prompt_state", "label_state")
    episode, cached = episodes
    torch.testing.assert_close(model(cached).log_probs, model(episode).log_probs)
    cached = copy(cached)
    cached.query_streams.pop("prompt_state")
    with pytest.raises(MissingStreamError, match="prompt_state"):
        model(cached)


def test_vision_tower_baseline_uses_the_vision_stream_and_otam_only(encoder, episodes):
    model = method(encoder, "fsar-llava-vision").eval()
    assert model.name == "fsar-llava-vision" and model.required_streams() == ("vision_tower",)
    assert model.mfem.text_head is None and model.mpmm.cues == ("temporal",)
    assert model.mfem.visual_in[1].in_features == encoder.vision_dim
    episode, cached = episodes
    torch.testing.assert_close(model(cached).log_probs, model(episode).log_probs)
    cached = copy(cached)
    cached.support_streams["vision_tower"] = torch.randn_like(cached.support_streams["vision_tower"])
    assert not torch.allclose(model(cached).log_probs, model(episode).log_probs)


def test_switches_and_bad_options(encoder, episodes):
    visual_only = method(encoder, cues="temporal,global", mutual_enhancement=False, contrastive_weight=0.0)
    assert visual_only.required_streams() == () and visual_only.mfem.text_head is None
    no_label = method(encoder, use_label_state=False, contrastive_weight=0.0)
    assert no_label.required_streams() == ("prompt_state", "support_prompt_state")
    label_free = method(encoder, support_text="query")
    assert label_free.required_streams() == ("prompt_state", "label_state")
    separated = method(encoder, separation_weight=0.1).train()
    assert "loss_separation" in separated(episodes[1]).parts
    hard = method(encoder, fusion="hard").eval()(episodes[1])
    assert set(hard.parts["cue_weights"].unique().tolist()) <= {0.0, 1.0}
    for bad, message in ((dict(visual_stream="pixels"), "visual_stream"), (dict(cues="colour"), "cues"),
                         (dict(beta=2.0), "beta"), (dict(widht=3), "unknown option"),
                         (dict(support_text="label"), "support_text")):
        with pytest.raises(ValueError, match=message):
            method(encoder, **bad)


def test_backbone_without_mllm_streams_is_refused():
    from fsar.encoders import create_encoder

    clip = create_encoder("clip-vit-b32", weights="random", vision_layers=1, width=32, heads=2, patch_size=8,
                          image_size=16, text_layers=1, text_width=16, text_heads=2, vocab_size=64,
                          projection_dim=16)
    with pytest.raises(ValueError, match="does not produce the stream"):
        create_method("fsar-llava", backbone=clip, **SMALL)


def test_training_from_streams_lowers_the_loss(encoder):
    """A few optimiser steps on class-structured streams: the per-cue loss must fall."""
    g = torch.Generator().manual_seed(0)
    way, shot, queries, frames, width = 3, 2, 3, 8, encoder.feature_dim
    centres = torch.randn(way, width, generator=g) * 2

    def episode():
        labels_s = torch.arange(way).repeat_interleave(shot)
        labels_q = torch.arange(way).repeat_interleave(queries)
        make = lambda y: centres[y][:, None] + torch.randn(len(y), frames, width, generator=g)  # noqa: E731
        text = lambda y: centres[y] + torch.randn(len(y), width, generator=g)  # noqa: E731
        return EpisodeInputs(
            support=make(labels_s), support_labels=labels_s, query=make(labels_q), class_names=NAMES[:3],
            query_labels=labels_q, features=True,
            support_streams={"prompt_state": text(labels_s), "support_prompt_state": text(labels_s)},
            query_streams={"prompt_state": text(labels_q)}, class_streams={"label_state": centres.clone()},
        )

    model = method(encoder).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(12):
        loss = model(episode()).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_trainable_parameters_at_the_real_sizes():
    """MFEM + CTPC at Video-LLaVA-7B's width (4096 -> d 512, T 8): the count the spec estimates at ~9M."""
    d, D, T, ffn = 512, 4096, 8, 2048
    linear = lambda i, o: i * o + o  # noqa: E731
    mha = 4 * d * d + 4 * d
    mfem = (2 * D + linear(D, d)) + T * d + (mha + linear(d, ffn) + linear(ffn, d) + 4 * d) \
        + (2 * D + linear(D, d) + linear(d, d)) + (2 * d + mha + linear(2 * d, d) + linear(d, d))
    ctpc = 2 * (2 * d + mha)
    built_mfem = MFEM(visual_dim=D, text_dim=D, dim=d, frames=T, heads=8, ffn_dim=ffn)
    built_ctpc = CTPC(dim=d, heads=8)
    assert sum(p.numel() for p in built_mfem.parameters()) == mfem
    assert sum(p.numel() for p in built_ctpc.parameters()) == ctpc
    assert 9.0e6 < mfem + ctpc < 12.0e6


# -- through the feature cache -------------------------------------------------------------------------------


def test_feature_cache_round_trip_feeds_the_method_and_refuses_another_layer(encoder, tmp_path_factory):
    """extract_features with the tiny MLLM -> FeatureCache.load_episode(streams=required_streams()) gives the
    method what the frames path gives; a cache of another layer or prompt set is refused, naming the key."""
    from cache_standins import write_dataset

    from fsar.data.episodes import EpisodeSampler
    from fsar.data.loading import ClipLoader, load_episode
    from fsar.data.manifest import Manifest
    from fsar.data.transforms import TransformConfig
    from fsar.encoders.cache import CacheMismatchError, FeatureCache, extract_features

    root = write_dataset(tmp_path_factory.mktemp("clips"))  # some clips are shorter than 8 frames: they repeat
    out = root.parent / "cache"
    manifest = Manifest.from_folder(root, progress=False)
    loader = ClipLoader(num_frames=8, transform=TransformConfig.for_encoder(encoder))
    summary = extract_features(manifest, encoder, loader, out, progress=False, batch_size=4)
    assert summary.extracted == 9 and not summary.skipped
    cache = FeatureCache(out)
    cache.check_encoder(encoder)
    model = method(encoder).eval()
    episode = EpisodeSampler(manifest, way=3, shot=1, queries=1, seed=0).episode(0)
    cached = cache.load_episode(episode, loader, streams=model.required_streams())
    frames = load_episode(episode, loader, train=False)
    assert cached.class_streams["label_state"].shape == (3, encoder.feature_dim)
    torch.testing.assert_close(model(cached).log_probs, model(frames).log_probs, atol=1e-5, rtol=1e-4)

    for other in (tiny_encoder(encoder.weights, layer=2), tiny_encoder(encoder.weights, prompts="ssv2")):
        with pytest.raises(CacheMismatchError, match="stream_key"):
            cache.check_encoder(other)
        with pytest.raises(CacheMismatchError):
            extract_features(manifest, other, loader, out, progress=False)


# -- baseline (ii): captions -----------------------------------------------------------------------------------


@pytest.mark.slow  # greedy generation: a minute on a loaded 2-core machine
def test_caption_pipeline_greedy_bounded_cached_and_matched_in_text_space(encoder):
    captioner = tiny_encoder(encoder.weights, captions="mllm", caption_tokens=6)
    assert "caption_embedding" in captioner.clip_stream_names() and captioner.stream_key()["caption_tokens"] == 6
    frames = clips(3, seed=7)
    long = captioner.caption(frames)
    assert long == [captioner.caption(frames[i : i + 1])[0] for i in range(3)]  # greedy: batch = one at a time
    long_ids, short_ids = captioner.caption_ids(frames), captioner.caption_ids(frames, max_new_tokens=1)
    assert long_ids.shape[1] <= 6 and short_ids.shape == (3, 1)  # bounded
    assert torch.equal(short_ids[:, 0], long_ids[:, 0])  # greedy: the same first token
    model = create_method("fsar-llava-caption", backbone=captioner).eval()
    assert model.required_streams() == ("caption_embedding",)
    episode = frames_episode(way=2, shot=1, queries=1, seed=8)
    cached = feature_episode(captioner, episode)
    out = model(cached)
    torch.testing.assert_close(out.log_probs, model(episode).log_probs)
    s, q = cached.support_streams["caption_embedding"], cached.query_streams["caption_embedding"]
    nearest = (F.normalize(q, dim=-1) @ F.normalize(s, dim=-1).T).argmax(-1)  # 1-shot: nearest support caption
    assert torch.equal(out.log_probs.argmax(-1), nearest)
    with pytest.raises(ValueError, match="caption_embedding"):
        create_method("fsar-llava-caption", backbone=encoder)


def test_task_oriented_query_names_only_the_candidates_and_needs_frames(encoder, episodes, monkeypatch):
    model = method(encoder, task_oriented_query=True).eval()
    episode, cached = episodes
    seen: list[str] = []
    original = encoder._forward
    monkeypatch.setattr(encoder, "_forward", lambda frames, prompts: seen.extend(prompts) or original(frames, prompts))
    a = model(episode).log_probs
    task = [p for p in seen if "Which of these actions" in p]
    assert task and all(encoder.prompts.task_query(episode.class_names) in p for p in task)
    others = [n for n in NAMES if n not in episode.class_names]
    assert others  # a class of the data set outside this episode
    assert not any(o in p for o in others for p in seen)
    assert not torch.allclose(a, method(encoder).eval()(episode).log_probs)  # the query text state changed
    flipped = dataclasses.replace(episode, query_labels=episode.query_labels.flip(0))
    assert torch.equal(a, model(flipped).log_probs)
    with pytest.raises(ValueError, match="cannot come from the feature cache"):
        model(cached)


# -- the label-aware support prompt (spec 4b) ------------------------------------------------------------------


def test_support_text_comes_from_the_labelled_prompt_and_queries_never_see_a_label(encoder, episodes, monkeypatch):
    """Frames path: support clips are encoded with their own class names (prompt b), queries with none;
    the cache path gives the same; changing the support state changes the prediction, the query's
    (absent) label-aware stream cannot."""
    episode, cached = episodes
    model = method(encoder).eval()
    calls: list[tuple[torch.Tensor, list[str] | None]] = []
    prompts: list[str] = []
    encode, tokenise = encoder.encode_clips, encoder.token_ids
    monkeypatch.setattr(encoder, "encode_clips",
                        lambda frames, labels=None: calls.append((frames, labels)) or encode(frames, labels))
    monkeypatch.setattr(encoder, "token_ids", lambda prompt, **kw: prompts.append(prompt) or tokenise(prompt, **kw))
    a = model(episode).log_probs
    own = [episode.class_names[int(y)] for y in episode.support_labels]
    assert [(torch.equal(f, episode.support), labels) for f, labels in calls] == [(True, own), (False, None)]
    assert torch.equal(calls[1][0], episode.query)  # queries: no labels, so only the label-free query prompt
    support_prompts = [p for p in prompts if "This video shows the action" in p]
    assert support_prompts == [encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.support_prompt(o))
                               for o in own]  # one per support clip, naming its own class
    torch.testing.assert_close(model(cached).log_probs, a)
    assert "support_prompt_state" not in cached.query_streams
    shifted = copy(cached)
    shifted.support_streams["support_prompt_state"] = torch.randn_like(shifted.support_streams["support_prompt_state"])
    assert not torch.allclose(model(shifted).log_probs, a)
    label_free = method(encoder, support_text="query").eval()
    assert not torch.allclose(label_free(cached).log_probs, a)  # the two prompts give other states


def test_backbone_without_the_support_prompt_is_refused_or_used_label_free(encoder):
    plain = tiny_encoder(encoder.weights, support_prompt=False)
    assert "support_prompt_state" not in plain.clip_stream_names() and plain.label_stream_names() == ()
    with pytest.raises(ValueError, match="support_prompt=True"):
        method(plain)
    assert method(plain, support_text="query").required_streams() == ("prompt_state", "label_state")


def test_recognizer_gives_support_clips_their_action_and_queries_nothing(encoder, tmp_path, monkeypatch):
    """fsar predict's Recognizer: support clips are encoded with their action's name (label-aware stream),
    queries without; the disk store files the labelled support clip apart from the same clip as a query."""
    from fsar.data.testing import write_video
    from fsar.recognizer import Recognizer

    clips_ = {name: [write_video(tmp_path / name / f"{i}.mp4", 6 + i) for i in range(2)] for name in ("wave", "clap")}
    calls: list[list[str] | None] = []
    encode = encoder.encode_clips
    monkeypatch.setattr(encoder, "encode_clips", lambda frames, labels=None: calls.append(labels) or encode(frames, labels))
    model = method(encoder).eval()
    recognizer = Recognizer.from_method(model, support=clips_, cache_dir=tmp_path / "store")
    assert sorted(calls, key=str) == [["clap", "clap"], ["wave", "wave"]]
    prediction = recognizer.predict(clips_["wave"][0])  # a support clip asked as a query: encoded again, no label
    assert calls[-1] is None and {name for name, _ in prediction.ranking} == {"wave", "clap"}
    again = Recognizer.from_method(model, support=clips_, cache_dir=tmp_path / "store")  # all from the store
    assert len(calls) == 3 and again.encoded_clips == 0


def named_rows(cached: EpisodeInputs, support_rows, query_rows) -> EpisodeInputs:
    """The episode of ``cached``'s support rows ``support_rows`` and query rows ``query_rows`` as the
    feature cache hands it: named rows (support row i is clip i, query row j is clip 100 + j)."""
    from fsar.data.inputs import CachedRows

    s, q = torch.as_tensor(support_rows), torch.as_tensor(query_rows)
    episode = EpisodeInputs(
        support=cached.support[s], support_labels=cached.support_labels[s], query=cached.query[q],
        class_names=cached.class_names, query_labels=cached.query_labels[q], features=True,
        support_streams={k: v[s] for k, v in cached.support_streams.items()},
        query_streams={k: v[q] for k, v in cached.query_streams.items()}, class_streams=cached.class_streams,
    )
    return dataclasses.replace(episode, cached_rows=CachedRows.of(episode.support, s.tolist(), episode.query,
                                                                  (100 + q).tolist()))


def plain_float64(model: FSARLLaVA, inputs: EpisodeInputs) -> torch.Tensor:
    """The plain path's maths (MFEM, CTPC through nn.MultiheadAttention, MPMM) in float64."""
    assert model.config.dropout == 0.0  # training mode below (nn.MultiheadAttention) is then deterministic
    reference = deepcopy(model).double().train()
    s = {k: None if v is None else v.double() for k, v in model._episode_streams(inputs).items()}
    with torch.no_grad():
        v_s, t_s = reference.mfem(s["support_visual"], s["support_text"])
        v_q, t_q = reference.mfem(s["query_visual"], s["query_text"])
        label = reference.mfem.text(s["labels"]) if s["labels"] is not None and model.config.use_label_state else None
        proto_v, proto_t = reference.ctpc.prototypes(v_s, inputs.support_labels, inputs.way, t_s, label)
        q_v, q_t = reference.ctpc.queries(v_q, t_q)
        text = any(c in ("text", "cross") for c in reference.mpmm.cues)
        return reference.mpmm.match(q_v, proto_v, q_t if text else None, proto_t if text else None).log_probs


#: MPMM with gentle temperatures: its standardisation over classes and its cue selection (tau 0.5,
#: kappa 0.05) turn float32 rounding of the cue scores into ~1e-4 of log-probability on either path;
#: with these the two paths must agree to float32 rounding itself
GENTLE = dict(tau=5.0, kappa=5.0)


@pytest.mark.parametrize("name", ["fsar-llava", "fsar-llava-vision"])
def test_evaluation_from_named_cache_rows_computes_each_clip_once_with_the_plain_results(encoder, episodes, name):
    _, cached = episodes
    n_s, n_q = cached.support.shape[0], cached.query.shape[0]
    named = named_rows(cached, range(n_s), range(n_q))
    # the same clips again, in another order, under the same names (a later episode of the evaluation)
    again = named_rows(cached, list(range(n_s))[::-1], list(range(n_q))[::-1])
    for options in (GENTLE, {}):
        model = method(encoder, name=name, **options).eval()
        with torch.no_grad():  # the plain path: unnamed rows, no memory
            expected = [model(dataclasses.replace(e, cached_rows=None)).log_probs for e in (named, again)]
            assert len(model.clip_memo) == 0
            got = [model(e).log_probs for e in (named, again)]
        for a, b, e in zip(got, expected, (named, again)):
            if options:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            else:  # both float32 paths within float32 rounding (as MPMM amplifies it) of the float64 maths
                reference = plain_float64(model, e)
                assert (b.double() - reference).abs().max() < 2e-3 and (a.double() - reference).abs().max() < 2e-3
                assert torch.equal(a.argmax(-1), b.argmax(-1))
        labels = cached.way if name == "fsar-llava" else 0  # the label states' textual head, once per class
        assert len(model.clip_memo) == n_s + n_q + labels and model.clip_memo.hits == n_s + n_q + labels
    model.train()  # a mode switch forgets
    assert len(model.clip_memo) == 0


@pytest.mark.parametrize("name", ["fsar-llava", "fsar-llava-vision"])
def test_batched_episodes_equal_the_plain_path_one_by_one_and_never_read_query_labels(encoder, episodes, name):
    _, cached = episodes  # 3-way, 2 shots (rows 0-5: classes 0 0 1 1 2 2), 2 queries per class
    model = method(encoder, name=name, **GENTLE).eval()
    check_batched_against_plain(model, cached)
    assert model.evaluation_batch() > 1


@pytest.mark.parametrize("options", [dict(task_refinement=False), dict(use_label_state=False, support_text="query"),
                                     dict(mutual_enhancement=False, cues=("temporal", "text"), fusion="hard")])
def test_batched_episodes_equal_the_plain_path_under_the_switches(encoder, episodes, options):
    model = method(encoder, **{**GENTLE, **options}).eval()
    check_batched_against_plain(model, episodes[1])


def check_batched_against_plain(model: FSARLLaVA, cached: EpisodeInputs) -> None:
    shapes = {
        "1-shot": [([1, 2, 5], [0, 3, 5]), ([0, 3, 4], [1, 2, 4]), ([5, 2, 0], [5, 0, 1])],
        "2-shot": [([0, 1, 2, 3, 4, 5], [0, 2, 4]), ([5, 3, 1, 4, 2, 0], [1, 3, 5])],
        "unequal shots": [([0, 1, 2, 4], [0, 1, 2]), ([1, 0, 3, 5], [3, 4, 5])],
    }
    for what, rows in shapes.items():
        batch = [named_rows(cached, s, q) for s, q in rows]
        with torch.no_grad():
            plain = [model(dataclasses.replace(e, cached_rows=None)).log_probs for e in batch]
            hidden = [dataclasses.replace(e, query_labels=None) for e in batch]
            got = model.predict_episodes(hidden)
            wrong = model.predict_episodes([dataclasses.replace(e, query_labels=e.query_labels.flip(0)) for e in batch])
        assert len(got) == len(batch), what
        for a, b, c in zip(got, plain, wrong):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=what)
            assert torch.equal(a, c), what  # the query labels change nothing


def test_batched_evaluation_through_the_engine_gives_the_one_by_one_predictions(encoder, episodes):
    """evaluate() hands fsar-llava chunks of episodes; per-episode records as when run one by one."""
    from fsar.engine.evaluate import evaluate

    _, cached = episodes
    g = torch.Generator().manual_seed(0)

    class Source:
        class_names = list(cached.class_names)

        def sample(self, index, *, train):
            g.manual_seed(index)
            support = [c * 2 + int(torch.randint(2, (1,), generator=g)) for c in range(3)]  # 3-way 1-shot
            return named_rows(cached, support, torch.randperm(6, generator=g)[:3].tolist())

    model = method(encoder, **GENTLE)
    batched = evaluate(model, Source(), episodes=21, progress=False)
    model.EVALUATION_BATCH = 1  # the loop calls forward once per episode
    one = evaluate(model, Source(), episodes=21, progress=False)
    assert batched.episode_accuracies == one.episode_accuracies and batched.confusion == one.confusion
    assert model.training  # the engine restores the mode


def test_set_attention_in_evaluation_is_multihead_attention_and_passes_gradients():
    from fsar.methods.fsar_llava import _SetAttention

    torch.manual_seed(0)
    layer = _SetAttention(16, 4, 0.0)
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.normal_()
    tokens = torch.randn(3, 5, 16) * 2 + 0.5
    x = layer.norm(tokens)
    expected = tokens + layer.attention(x, x, x, need_weights=False)[0]
    layer.train()
    torch.testing.assert_close(layer(tokens), expected)  # training: nn.MultiheadAttention itself
    layer.eval()
    out = layer(tokens.requires_grad_())
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    # the split for per-clip memory: the projection of a mean of clips is the mean of their projections
    clips = torch.randn(4, 5, 16)
    mean = clips.mean(0, keepdim=True)
    torch.testing.assert_close(layer.centred_projection(clips).mean(0, keepdim=True), layer.centred_projection(mean),
                               atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert tokens.grad is not None
