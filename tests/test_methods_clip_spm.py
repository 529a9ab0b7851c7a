"""CLIP-SPM: the head equals the released code (reference files), honest-by-default options,
bad input, backbones and fine-tuning modes, and fsar train/eval on a synthetic set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fsar
from fsar.data.inputs import EpisodeInputs
from fsar.methods import clip_spm_from_reference
from fsar.methods.clip_spm import (
    OPTIMIZER_PRESETS,
    PRESETS,
    RELEASE_AUX_WEIGHT,
    RELEASE_STATE_DICT_NAMES,
    RELEASE_TASKS_PER_BATCH,
    CLIPSPMHead,
    release_episode_token,
    release_state_dict_to_fsar,
)
from methods_toys import (
    TINY_CLIP,
    features_episode,
    frames_episode,
    shared_embedded_pair,
    shared_frozen_clip,
)

pytestmark = pytest.mark.usefixtures("single_thread")

REFERENCE = Path(__file__).resolve().parent / "reference" / "clip_spm"
CASES = ("a", "b")
TINY_HEAD = dict(heads=2, dim_head=8, mlp_dim=32, prompt_hidden=32)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    name = request.param
    with np.load(REFERENCE / f"clip_spm_{name}.npz") as z:
        arrays = {key: z[key] for key in z.files}
    constructor = json.loads((REFERENCE / f"clip_spm_{name}_constructor.json").read_text())
    with np.load(REFERENCE / f"clip_spm_{name}_state_dict.npz") as z:
        state = {key: z[key] for key in z.files}
    return name, arrays, constructor, state


def _run_reference(arrays, constructor, state, dtype, *, train_p0=False):
    head = clip_spm_from_reference(constructor, state).to(dtype)
    if train_p0:
        head.train()
        for module in head.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    t = lambda key: torch.from_numpy(arrays[key]).to(dtype)  # noqa: E731
    labels = torch.from_numpy(arrays["support_labels"])
    query_labels = torch.from_numpy(arrays["query_labels"])
    context = torch.enable_grad() if train_p0 else torch.no_grad()
    with context:
        out = head.forward_details(t("support"), labels, t("query"), 5, t("text_bank"),
                                   query_labels=query_labels, hsmr=True, spm_auxiliary=True, directions=True)
    # the loss as the release's trainer assembles it (main_run.py): CE summed over the queries
    out["dists"] = head.hsmr_weight * out["hsmr_loss"]
    out["ce_sum"] = F.cross_entropy(out["logits"], query_labels, reduction="sum")
    out["task_loss"] = out["ce_sum"] / RELEASE_TASKS_PER_BATCH + RELEASE_AUX_WEIGHT * out["dists"]
    return head, out


def test_reference_files_are_all_used(case):
    name, arrays, constructor, state = case
    _, out = _run_reference(arrays, constructor, state, torch.float64)
    outputs = {k[: -len("_f64")] for k in arrays if k.endswith("_f64")}
    assert outputs - set(out) == set(), "every stored intermediate is compared"
    assert set(state) == {k for k in constructor["state_dict_keys"]}


def test_float64_head_equals_release_on_every_intermediate(case):
    name, arrays, constructor, state = case
    _, out = _run_reference(arrays, constructor, state, torch.float64)
    for key in sorted(k for k in arrays if k.endswith("_f64")):
        mine = out[key[: -len("_f64")]].detach().double().numpy()
        expected = arrays[key].astype(np.float64)
        # ce_sum_f64 is float32 in the release (its CE buffer), so task_loss_f64 only float32-accurate
        rtol = 1e-6 if key in ("ce_sum_f64", "task_loss_f64") else 1e-9
        np.testing.assert_allclose(mine, expected, rtol=rtol, atol=0, err_msg=f"case {name}: {key}")


def test_float32_head_equals_release_within_1e5(case):
    name, arrays, constructor, state = case
    _, out = _run_reference(arrays, constructor, state, torch.float32)
    for key in ("logits", "d_spm", "d_padm", "d_padm_anchor", "d_padm_main", "d_spm_q2s", "d_spm_s2q"):
        np.testing.assert_allclose(out[key].numpy(), arrays[key + "_f64"], rtol=1e-5, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(out[key].numpy(), arrays[key], rtol=1e-5, atol=1e-5, err_msg=key)
    for key in ("hsmr_loss", "dists", "spm_aux_consist_query", "spm_aux_prompt_support"):
        np.testing.assert_allclose(out[key].item(), arrays[key + "_f64"], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(out["ce_sum"].item(), arrays["ce_sum"], rtol=1e-6)
    np.testing.assert_allclose(out["task_loss"].item(), arrays["task_loss"], rtol=1e-6)


def test_train_mode_with_dropout_off_equals_eval(case):
    name, arrays, constructor, state = case
    _, out = _run_reference(arrays, constructor, state, torch.float32, train_p0=True)
    np.testing.assert_allclose(out["logits"].detach().numpy(), arrays["logits_trainmode_p0"], rtol=1e-5, atol=1e-5)


def test_public_call_convention_and_dtype(case):
    name, arrays, constructor, state = case
    head = clip_spm_from_reference(constructor, state).double()
    assert not head.training and head.padm_mode == "transductive" and head.hsmr_weight_mode == "learnable"
    args = (torch.from_numpy(arrays["support"]).double(), torch.from_numpy(arrays["support_labels"]),
            torch.from_numpy(arrays["query"]).double(), 5, torch.from_numpy(arrays["text_bank"]).double())
    with torch.no_grad():
        logits = head(*args)
    assert logits.dtype == torch.float64 and logits.shape == arrays["logits_f64"].shape
    np.testing.assert_allclose(logits.numpy(), arrays["logits_f64"], rtol=1e-9)


def test_episode_token_from_support_texts_equals_release_on_balanced_episodes(case):
    name, arrays, constructor, state = case
    bank = torch.from_numpy(arrays["text_bank"]).double()
    support_labels = torch.from_numpy(arrays["support_labels"])
    query_labels = torch.from_numpy(arrays["query_labels"])
    release = release_episode_token(bank, support_labels, query_labels)
    ours = bank[support_labels].mean(0, keepdim=True)
    np.testing.assert_allclose(release.numpy(), arrays["spm_g_f64"], rtol=1e-12)
    np.testing.assert_allclose(ours.numpy(), arrays["spm_g_f64"], rtol=1e-12)
    # an unbalanced query set moves the release's token (the class composition leaks), not ours
    skewed = torch.zeros_like(query_labels)
    assert not torch.allclose(release_episode_token(bank, support_labels, skewed), ours)


def test_state_dict_name_table_covers_the_release_keys_and_rejects_others(case):
    _, _, constructor, state = case
    renamed = release_state_dict_to_fsar(state)
    head = clip_spm_from_reference(constructor, state)
    assert set(renamed) == set(head.state_dict())  # the release's unused `scale` is the only key dropped
    assert len(RELEASE_STATE_DICT_NAMES) == 9 + 14
    with pytest.raises(ValueError, match="not in the release's head: \\['extra.weight'\\]"):
        release_state_dict_to_fsar({**state, "extra.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="shape mismatch"):
        clip_spm_from_reference({**constructor, "gate_text_hidden": 100}, state)
    with pytest.raises(ValueError, match="constructor lacks"):
        clip_spm_from_reference({k: v for k, v in constructor.items() if k != "transformer"}, state)
    missing = {k: v for k, v in state.items() if k != "gate_vision.2.bias"}
    with pytest.raises(ValueError, match="does not fit"):
        clip_spm_from_reference(constructor, missing)


# ---------------------------------------------------------------------------------------------
# the method: honest by default
# ---------------------------------------------------------------------------------------------


def _method(backbone=None, **options):
    backbone = backbone or shared_frozen_clip()
    return fsar.create_method("clip-spm", backbone=backbone, **{**TINY_HEAD, **options})


def _with(episode: EpisodeInputs, **changes) -> EpisodeInputs:
    return dataclasses.replace(episode, **changes)


def test_query_labels_never_enter_an_evaluation_forward():
    torch.manual_seed(0)
    method = _method().eval()
    episode = features_episode(dim=32, way=3, shot=2, queries=2, seed=4)
    base = method(episode).log_probs
    for labels in (episode.query_labels.flip(0), torch.zeros_like(episode.query_labels), None):
        torch.testing.assert_close(method(_with(episode, query_labels=labels)).log_probs, base, rtol=0, atol=0)
    assert method(episode).loss is None


def test_transductive_and_inductive_padm_differ_and_inductive_queries_are_independent():
    torch.manual_seed(1)
    transductive = _method(padm="transductive").eval()
    inductive = _method(padm="inductive").eval()
    inductive.load_state_dict(transductive.state_dict())
    episode = features_episode(dim=32, way=3, shot=2, queries=2, seed=5)
    a, b = transductive(episode).log_probs, inductive(episode).log_probs
    assert (a - b).abs().max() > 1e-4
    # change only the last query: inductive logits of the other queries stay, transductive ones move
    query = episode.query.clone()
    query[-1] = torch.randn_like(query[-1]) * 3
    changed = _with(episode, query=query)
    torch.testing.assert_close(inductive(changed).log_probs[:-1], b[:-1], rtol=1e-5, atol=1e-5)
    assert (transductive(changed).log_probs[:-1] - a[:-1]).abs().max() > 1e-4
    assert transductive.inference_tags() == {"padm": "transductive"}
    assert inductive.inference_tags() == {"padm": "inductive"}


def test_padm_option_switches_a_built_method_between_modes():
    torch.manual_seed(7)
    method = _method().eval()
    inductive = _method(padm="inductive").eval()
    inductive.load_state_dict(method.state_dict())
    episode = features_episode(dim=32, way=3, shot=1, queries=2, seed=11)
    method.load_resources({"padm": "inductive"})
    assert method.config.padm == "inductive" and method.inference_tags() == {"padm": "inductive"}
    torch.testing.assert_close(method(episode).log_probs, inductive(episode).log_probs)
    assert [o.name for o in type(method).options()] == ["padm"]
    with pytest.raises(ValueError, match="--padm must be one of"):
        method.load_resources({"padm": "both"})
    with pytest.raises(ValueError, match="takes no options"):
        method.load_resources({"descriptions": "x.json"})


def test_inductive_single_query_equals_episode_row():
    torch.manual_seed(2)
    method = _method(padm="inductive").eval()
    episode = features_episode(dim=32, way=3, shot=1, queries=2, seed=6)
    full = method(episode).log_probs
    alone = method(_with(episode, query=episode.query[2:3], query_labels=episode.query_labels[2:3])).log_probs
    torch.testing.assert_close(alone[0], full[2], rtol=1e-5, atol=1e-5)


def test_loss_is_ce_sum_plus_release_weighted_hsmr_and_hsmr_only_trains():
    torch.manual_seed(3)
    method = _method(attention_dropout=0.0, ffn_dropout=0.0, prompt_dropout=0.0).train()
    episode = features_episode(dim=32, way=3, shot=2, queries=2, seed=7)
    out = method(episode)
    logits = out.log_probs  # log_softmax of the logits: the CE is the same
    ce_sum = F.cross_entropy(logits, episode.query_labels, reduction="sum")
    torch.testing.assert_close(out.parts["loss_ce_sum"], ce_sum)
    expected = ce_sum + RELEASE_TASKS_PER_BATCH * RELEASE_AUX_WEIGHT * 1.0 * out.parts["loss_hsmr"]
    torch.testing.assert_close(out.loss, expected)
    assert "loss_spm_aux" not in out.parts  # switched off, as in the release
    # HSMR never changes the classification features: the eval logits equal the train ones
    torch.testing.assert_close(method.eval()(episode).log_probs, out.log_probs)
    # the HSMR ablation (weight 0) skips it entirely
    off = _method(hsmr_weight_init=0.0).train()
    out_off = off(episode)
    assert "loss_hsmr" not in out_off.parts
    torch.testing.assert_close(out_off.loss, out_off.parts["loss_ce_sum"])


def test_hsmr_weight_modes():
    episode = features_episode(dim=32, way=3, shot=1, queries=2, seed=8)
    fixed = _method().train()
    assert "head.hsmr_weight" not in dict(fixed.named_parameters())
    learnable = _method(hsmr_weight="learnable").train()
    learnable.zero_grad()
    out = learnable(episode)
    out.loss.backward()
    grad = learnable.head.hsmr_weight.grad
    # the release's drift: the free weight only ever gets the positive gradient 0.016 * L_hsmr
    torch.testing.assert_close(grad, RELEASE_TASKS_PER_BATCH * RELEASE_AUX_WEIGHT * out.parts["loss_hsmr"])
    assert grad > 0
    clamped = _method(hsmr_weight="clamped", hsmr_weight_init=-0.5).train()
    out = clamped(episode)
    assert out.parts["hsmr_weight"] == 0.0
    torch.testing.assert_close(out.loss, out.parts["loss_ce_sum"])
    with pytest.raises(ValueError, match="hsmr_weight must be one of"):
        _method(hsmr_weight="free")


def test_auxiliary_spm_losses_on_request():
    torch.manual_seed(4)
    method = _method(spm_aux_losses=True, hsmr_weight_init=0.0, attention_dropout=0.0, ffn_dropout=0.0,
                     prompt_dropout=0.0).train()
    episode = features_episode(dim=32, way=3, shot=1, queries=2, seed=9)
    out = method(episode)
    f_s, f_q = method.space.frames(episode.support), method.space.frames(episode.query)
    bank = method.text_bank.features(episode.class_names, train=False).float()
    details = method.head.forward_details(f_s, episode.support_labels, f_q, 3, bank,
                                          query_labels=episode.query_labels, spm_auxiliary=True)
    u, w = PRESETS["hmdb51"]["consist_weight"], PRESETS["hmdb51"]["text_weight"]
    text = w * (details["spm_aux_prompt_query"] + details["spm_aux_token_query"]) + (0.5 - w) * (
        details["spm_aux_prompt_support"] + details["spm_aux_token_support"])
    consistency = u * details["spm_aux_consist_query"] + (1 - u) * details["spm_aux_consist_support"]
    torch.testing.assert_close(out.parts["loss_spm_aux"], text + consistency)
    torch.testing.assert_close(out.loss, out.parts["loss_ce_sum"] + 0.016 * (text + consistency))


def test_presets_and_optimizer_defaults():
    method = _method(preset="ucf101", alpha=0.5)
    cfg = method.config
    assert (cfg.gate_vision_ratio, cfg.gate_text_ratio, cfg.negative_slope) == (2.0, 2.0, 0.054)
    assert cfg.alpha == 0.5  # an explicit option wins over the preset
    assert method.head.sf.gate_vision.hidden.out_features == 64 and method.head.sf.alpha == 0.5
    assert method.optimizer_defaults() == dict(lr=1e-5, weight_decay=5e-5, betas=(0.5, 0.999))
    assert OPTIMIZER_PRESETS["ssv2-full"]["lr"] == 1.6e-5 and OPTIMIZER_PRESETS["ssv2-full"]["weight_decay"] == 9.7e-4
    assert PRESETS["ssv2-small"] == PRESETS["hmdb51"]
    json.dumps(dataclasses.asdict(cfg))
    with pytest.raises(ValueError, match="preset must be one of"):
        _method(preset="hmdb")


def test_engine_takes_the_release_optimizer_unless_flags_say_otherwise():
    from fsar.engine.config import TrainConfig
    from fsar.engine.train import optimizer_settings

    method = _method()
    assert optimizer_settings(TrainConfig(), method) == dict(lr=1e-5, weight_decay=5e-5, betas=(0.5, 0.999))
    given = optimizer_settings(TrainConfig(lr=3e-4, weight_decay=0.0), method)
    assert given == dict(lr=3e-4, weight_decay=0.0, betas=(0.5, 0.999))
    from engine_standins import TinyMethod  # a method without optimizer defaults of its own

    other = optimizer_settings(TrainConfig(), TinyMethod())
    assert other == dict(lr=1e-4, weight_decay=0.0, betas=(0.9, 0.999))
    ssv2 = optimizer_settings(TrainConfig(), _method(preset="ssv2-full"))
    assert (ssv2["lr"], ssv2["weight_decay"]) == (1.6e-5, 9.7e-4)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_one_frame_is_refused_and_two_frames_work():
    method = _method().train()
    with pytest.raises(ValueError, match="at least 2 frames"):
        method(features_episode(dim=32, frames=1))
    out = method(features_episode(dim=32, frames=2))
    assert torch.isfinite(out.loss)


def test_text_bank_missing_a_class_is_refused():
    head = CLIPSPMHead(16, **TINY_HEAD)
    support, query = torch.randn(3, 4, 16), torch.randn(2, 4, 16)
    with pytest.raises(ValueError, match="one \\(16,\\) vector per episode class, i.e. \\(3, 16\\)"):
        head(support, torch.tensor([0, 1, 2]), query, 3, torch.randn(2, 16))
    with pytest.raises(ValueError, match="cover 0..2"):
        head(support, torch.tensor([0, 1, 1]), query, 3, torch.randn(3, 16))


def test_unequal_shots_are_a_documented_generalisation():
    torch.manual_seed(5)
    head = CLIPSPMHead(16, **TINY_HEAD).eval()
    support, labels = torch.randn(5, 4, 16), torch.tensor([0, 0, 0, 1, 2])
    query = torch.randn(4, 4, 16)
    out = head.forward_details(support, labels, query, 3, torch.randn(3, 16))
    assert out["logits"].shape == (4, 3) and torch.isfinite(out["logits"]).all()
    xs = out["spm_xs_r"]
    expected_anchor_0 = (xs[:3].sum(0) + out["spm_xq_g"].sum(0)) / (3 + 4)
    torch.testing.assert_close(out["padm_anchor_in"][0], expected_anchor_0)
    torch.testing.assert_close(out["spm_proto"][0], xs[:3].mean(0))


def test_pixel_normalisation_none_feeds_raw_pixels_and_refuses_cached_features():
    method = _method(backbone=shared_frozen_clip(), pixel_normalisation="none").eval()
    with pytest.raises(ValueError, match="pixel_normalisation='none' needs frames"):
        method(features_episode(dim=32))
    seen = []
    original = method.encoder.encode_frames
    method.encoder.encode_frames = lambda frames, text=None: (seen.append(frames), original(frames, text))[1]
    try:
        episode = frames_episode(way=3, shot=1, queries=1)
        method(episode)
    finally:
        del method.encoder.encode_frames
    mean = torch.tensor(method.encoder.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(method.encoder.std).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(seen[0], episode.support * std + mean)


# ---------------------------------------------------------------------------------------------
# backbones and fine-tuning modes
# ---------------------------------------------------------------------------------------------


def test_full_fine_tuning_on_clip_trains_the_visual_tower_and_the_head():
    torch.manual_seed(6)
    method = fsar.create_method("clip-spm", backbone="clip-vit-b32", weights="random",
                                encoder_options=TINY_CLIP, **TINY_HEAD)
    assert method.config.finetune == "full"
    method.train()
    out = method(frames_episode(way=3, shot=1, queries=1))
    out.loss.backward()
    named = dict(method.named_parameters())
    vision = [p for n, p in named.items() if n.startswith("encoder.clip.vision_model.")]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)
    assert all(p.grad is None for n, p in named.items() if n.startswith("encoder.clip.text_model."))
    for block in ("head.mfe.conv1.weight", "head.sf.context.to_q.weight", "head.padm.context.to_q.weight",
                  "head.prompt_generator.hidden.weight"):
        assert named[block].grad is not None and named[block].grad.abs().sum() > 0, block


@pytest.mark.parametrize("finetune", ["frozen", "adapters"])
def test_clip_b16_modes_build_and_run(finetune):
    method = fsar.create_method("clip-spm", backbone="clip-vit-b16", weights="random", finetune=finetune,
                                encoder_options=TINY_CLIP, **TINY_HEAD)
    assert method.backbone_name == "clip-vit-b16" and method.config.finetune == finetune
    out = method.train()(frames_episode(way=2, shot=1, queries=1))
    assert torch.isfinite(out.loss)


def test_embedded_pair_learns_projections_into_a_common_width():
    method = _method(backbone=shared_embedded_pair(), embed_dim=24, start="standard")
    assert method.config.finetune == "frozen" and method.head.dim == 24
    assert method.space.visual_proj.in_features == 1280 and method.space.text_proj.in_features == 384
    method.train()
    out = method(features_episode(dim=1280, way=3, shot=1, queries=1))
    out.loss.backward()
    assert method.space.visual_proj.weight.grad.abs().sum() > 0
    assert method.space.text_proj.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in method.encoder.parameters())


# ---------------------------------------------------------------------------------------------
# fsar train / eval on the synthetic set
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_and_eval_on_a_synthetic_set(tmp_path, capsys):
    from fsar.cli import main
    from fsar.data.synth import render_dataset

    data = render_dataset(tmp_path / "synth", classes=8, videos_per_class=3, frames=4, size=32, seed=0,
                          progress=False)
    run = tmp_path / "run"
    options = ["-O", "heads=2", "-O", "dim_head=8", "-O", "mlp_dim=32", "-O", "prompt_hidden=32",
               "-O", "embed_dim=32"]
    small = ["--way", "3", "--shot", "1", "--no-progress", "--image-size", "32"]
    code = main(["train", "--data", str(data), "--val-classes", "3", "--method", "clip-spm",
                 "--backbone", "effnet-lite0+minilm", "--weights", "random", *options, *small, "--queries", "2",
                 "--episodes", "4", "--tasks-per-step", "2", "--val-every", "2", "--val-episodes", "3",
                 "--out", str(run)])
    assert code == 0
    record = json.loads((run / "best.json").read_text())
    assert record["method"] == "clip-spm" and record["method_config"]["padm"] == "transductive"
    # no --lr / --weight-decay given: the release's Adam settings
    assert record["optimizer"] == {"name": "Adam", "lr": 1e-5, "weight_decay": 5e-5, "betas": [0.5, 0.999]}
    capsys.readouterr()
    out = tmp_path / "eval.json"
    code = main(["eval", "--data", str(data), "--checkpoint", str(run), *small, "--queries", "1",
                 "--episodes", "4", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "clip-spm [padm=transductive] (effnet-lite0+minilm)" in printed
    result = json.loads(out.read_text())
    assert result["method"] == "clip-spm" and result["episodes"] == 4
    # the trained (transductive) weights evaluated inductively through the method's own option
    code = main(["eval", "--data", str(data), "--checkpoint", str(run), *small, "--queries", "1",
                 "--episodes", "4", "--padm", "inductive"])
    assert code == 0 and "clip-spm [padm=inductive] (effnet-lite0+minilm)" in capsys.readouterr().out
    clip = sorted((data / sorted(p.name for p in data.iterdir() if p.is_dir())[0]).glob("*.mp4"))[0]
    assert main(["predict", "--data", str(data), "--query", str(clip), "--checkpoint", str(run), "--json", "-"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["method"] == "clip-spm" and len(prediction["predictions"]) == 1
    assert prediction["inference"] == {"padm": "transductive"}
    assert result["inference"] == {"padm": "transductive"}
