"""Base-feature centring (fsar's own, after SimpleShot's CL2N idea): a text-aware method with the
training-free start subtracts the mean frame of the meta-training clips, estimated once before
step 1 from training episodes only, stored in checkpoints, never touched by evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from engine_standins import TensorEpisodes

import fsar
from fsar.engine.checkpoint import load_method_tensors, read_checkpoint, save_checkpoint
from fsar.engine.config import TrainConfig, resolve_config
from fsar.engine.distributed import DistInfo
from fsar.engine.train import prepare_from_training_episodes, train
from fsar.methods.text_side import TextSpace
from fsar.metrics import OTAM
from methods_toys import ToyEncoder, features_episode
from test_methods_training_free_start import ToyGridEncoder

CLASSES = [f"class{i}" for i in range(6)]


def _method(encoder, **options):
    options.setdefault("tpcm_heads", 2)
    options.setdefault("tpcm_bottleneck", 16)
    return fsar.create_method("ma-fsar", backbone=encoder, dataset_kind="temporal", **options)


def _pooled(dim=24):
    return ToyEncoder(feature_dim=dim, text_dim=12, shared_space=False)


def _buffers(method):
    return method.space.frame_mean.clone(), method.space.frame_count.clone()


def _training_episodes(dim, count=6, shift=3.0):
    """Training episodes whose frames sit around ``shift`` (a base mean far from zero)."""
    episodes = []
    for seed in range(count):
        e = features_episode(dim=dim, way=3, shot=1, queries=2, seed=seed)
        e.support, e.query = e.support + shift, e.query + shift
        episodes.append(e)
    return episodes


def test_the_frame_mean_starts_at_zero_and_is_the_mean_of_the_training_frames():
    method = _method(_pooled(), base_centring_clips=20).train()
    assert method.config.base_centring and method.space.centres
    assert method.space.frame_mean.abs().sum() == 0 and float(method.space.frame_count) == 0
    assert set(method.trainable_state_dict()) >= {"space.frame_mean", "space.frame_count"}
    episodes = _training_episodes(24)
    with torch.no_grad():
        prepared = method.prepare_training(iter(episodes))
    # 20 clips wanted, 9 per episode: the first 3 episodes (27 clips, 4 frames each)
    used = torch.cat([torch.cat([e.support, e.query]) for e in episodes[:3]]).reshape(-1, 24).double()
    assert prepared == {"base_centring_frames": used.shape[0]} and float(method.space.frame_count) == 27 * 4
    torch.testing.assert_close(method.space.frame_mean, used.mean(0).float())
    # estimated once: a second call (a method already prepared, or loaded) keeps it
    before = _buffers(method)
    assert method.prepare_training(iter(_training_episodes(24, shift=-5.0))) == {}
    assert torch.equal(_buffers(method)[0], before[0])


def test_evaluation_and_training_passes_never_move_it_and_eval_cannot_estimate_it():
    method = _method(_pooled()).train()
    with torch.no_grad():
        method.prepare_training(iter(_training_episodes(24)))
    before = _buffers(method)
    method(_training_episodes(24, shift=-7.0)[0]).loss.backward()  # a training step's forward
    method.eval()
    probe = features_episode(dim=24, way=5, shot=1, queries=3, seed=11)
    with torch.no_grad():
        first = method(probe).log_probs
        for seed in range(4):  # evaluation episodes of a very different mean
            shifted = features_episode(dim=24, way=5, shot=1, queries=3, seed=seed)
            shifted.support, shifted.query = shifted.support - 9.0, shifted.query - 9.0
            method(shifted)
        again = method(probe).log_probs
    assert all(torch.equal(a, b) for a, b in zip(_buffers(method), before))
    assert torch.equal(first, again)
    with pytest.raises(RuntimeError, match="training clips only"):
        method.space.estimate_frame_mean([probe.query])


@pytest.mark.parametrize("encoder", [_pooled(), ToyGridEncoder()], ids=["pooled", "grid"])
def test_prepared_but_untrained_method_is_otam_on_the_centred_features(encoder):
    dim = encoder.feature_dim
    method = _method(encoder).train()
    with torch.no_grad():
        method.prepare_training(iter(_training_episodes(dim)))
    mean = method.space.frame_mean
    assert mean.shape == (dim,) and mean.abs().min() > 1.0  # one per cell and channel on the grid
    method.eval()
    episode = features_episode(dim=dim, way=5, shot=1, queries=3, seed=5)
    with torch.no_grad():
        out = method(episode)
    reference = OTAM()(episode.support - mean, episode.support_labels, episode.query - mean, episode.way)
    torch.testing.assert_close(out.parts["log_p_q2s"], F.log_softmax(reference, -1), rtol=1e-5, atol=1e-5)
    raw = OTAM()(episode.support, episode.support_labels, episode.query, episode.way)
    assert not torch.allclose(F.log_softmax(raw, -1), out.parts["log_p_q2s"], atol=1e-3)


def test_checkpoints_store_the_frame_mean_exactly(tmp_path):
    encoder = _pooled()
    method = _method(encoder).train()
    with torch.no_grad():
        method.prepare_training(iter(_training_episodes(24)))
    save_checkpoint(tmp_path, "last", method=method, method_name="ma-fsar", backbone="toy", config={}, step=1)
    fresh = _method(encoder)
    assert fresh.space.frame_mean.abs().sum() == 0
    load_method_tensors(fresh, read_checkpoint(tmp_path, prefer="last"))
    assert all(torch.equal(a, b) for a, b in zip(_buffers(fresh), _buffers(method)))
    episode = features_episode(dim=24, way=5, shot=1, queries=3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(episode).log_probs, method.eval()(episode).log_probs, rtol=0, atol=0)


def test_centring_is_off_for_old_configs_the_standard_start_and_clip():
    from fsar.methods import method_from_config

    method = fsar.create_method("ma-fsar", backbone="effnet-lite0+minilm", weights="random",
                                dataset_kind="temporal", tpcm_heads=2, tpcm_bottleneck=16)
    saved = method.config_dict()
    assert saved["base_centring"] is True and "space.frame_mean" in method.trainable_state_dict()
    older = {k: v for k, v in saved.items() if k not in ("base_centring", "base_centring_clips")}
    rebuilt = method_from_config("ma-fsar", older)  # a checkpoint from before centring: none
    assert not rebuilt.space.centres and "space.frame_mean" not in rebuilt.trainable_state_dict()
    standard = _method(_pooled(), start="standard", embed_dim=16)
    assert standard.config.base_centring is False and not standard.space.centres
    with pytest.raises(ValueError, match="base_centring needs the training-free start"):
        TextSpace(feature_dim=8, text_dim=8, shared_space=True, embed_dim=8, base_centring=True)


def _config(out, **overrides):
    values = dict(data="unused", out=str(out), way=3, shot=1, queries=2, episodes=8, tasks_per_step=2,
                  lr=1e-3, val_every=2, val_episodes=4, checkpoint_every=1, seed=3, progress=False,
                  validate_at_start=True)
    values.update(overrides)
    return resolve_config(TrainConfig, overrides=values)


def test_the_engine_estimates_it_from_the_runs_first_training_episodes_only(tmp_path):
    train_source = TensorEpisodes(CLASSES[:4], seed=3, dim=24)
    val_source = TensorEpisodes(CLASSES[4:] + CLASSES[:1], seed=99, dim=24)
    method = _method(_pooled(), base_centring_clips=20)
    config = _config(tmp_path)
    train(config, method=method, train_source=train_source, val_source=val_source)
    # before step 1: tasks 0, 1, 2 (9 clips each; 20 wanted), drawn as training draws them
    assert train_source.served[:3] == [(i, True, train_source.served[i][2]) for i in range(3)]
    reference = TensorEpisodes(CLASSES[:4], seed=3, dim=24)
    frames = torch.cat([torch.cat([e.support, e.query]).reshape(-1, 24)
                        for e in (reference.sample(i, train=True) for i in range(3))]).double()
    saved = read_checkpoint(tmp_path, prefer="last").model_tensors()
    torch.testing.assert_close(saved["space.frame_mean"], frames.mean(0).float())
    assert float(saved["space.frame_count"]) == frames.shape[0]
    # the function by itself, on a fresh method: the same estimate
    again = _method(_pooled(), base_centring_clips=20)
    prepared = prepare_from_training_episodes(again, config, TensorEpisodes(CLASSES[:4], seed=3, dim=24), DistInfo())
    assert prepared == {"base_centring_frames": frames.shape[0]}
    torch.testing.assert_close(again.space.frame_mean, saved["space.frame_mean"], rtol=0, atol=0)


def test_zero_training_episodes_save_the_prepared_start(tmp_path):
    """``episodes=0``: no optimiser step, the centring mean estimated as before step 1, the start
    validated and written as both checkpoints (the training-free method as a run)."""
    train_source = TensorEpisodes(CLASSES[:4], seed=3, dim=24)
    val_source = TensorEpisodes(CLASSES[4:] + CLASSES[:1], seed=99, dim=24)
    method = _method(_pooled(), base_centring_clips=20)
    before = {k: v.clone() for k, v in method.trainable_state_dict().items() if k != "space.frame_mean"
              and k != "space.frame_count"}
    summary = train(_config(tmp_path, episodes=0, validate_at_start=False), method=method,
                    train_source=train_source, val_source=val_source)
    assert summary.losses == [] and summary.best_step == 0
    last, best = read_checkpoint(tmp_path, prefer="last"), read_checkpoint(tmp_path, prefer="best")
    assert last.step == 0 and best.step == 0
    saved = last.model_tensors()
    reference = TensorEpisodes(CLASSES[:4], seed=3, dim=24)
    frames = torch.cat([torch.cat([e.support, e.query]).reshape(-1, 24)
                        for e in (reference.sample(i, train=True) for i in range(3))]).double()
    torch.testing.assert_close(saved["space.frame_mean"], frames.mean(0).float())
    for key, value in before.items():  # nothing trained
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    with pytest.raises(fsar.errors.ConfigError, match=r"--episodes must be an integer >= 0 \(0: no training step"):
        _config(tmp_path, episodes=-1)


def test_on_the_grid_the_mean_comes_off_before_the_temporal_module():
    """Centring acts on the encoder's features, so a fully open static gate (each clip minus its
    own temporal mean) leaves no trace of the base mean: OTAM on temporally centred raw features."""
    encoder = ToyGridEncoder()
    method = _method(encoder, grid_dropout=0.0).train()
    with torch.no_grad():
        method.prepare_training(iter(_training_episodes(encoder.feature_dim)))
        method.grid_temporal.static_gate.fill_(1.0 / method.grid_temporal.static_rate)
    episode = features_episode(dim=encoder.feature_dim, way=5, shot=1, queries=3, seed=4)

    def temporally_centred(x):
        tokens = x.reshape(*x.shape[:2], encoder.grid_cells, -1)
        return (tokens - tokens.mean(1, keepdim=True)).flatten(2)

    with torch.no_grad():
        out = method.eval()(episode)
    reference = OTAM()(temporally_centred(episode.support), episode.support_labels,
                       temporally_centred(episode.query), episode.way)
    torch.testing.assert_close(out.parts["log_p_q2s"], F.log_softmax(reference, -1), rtol=1e-4, atol=1e-4)
