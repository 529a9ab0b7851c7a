"""The ``video-llava`` backbone (fsar.encoders.video_llava, fsar.encoders.mllm) on a tiny saved model.

The tiny model is a random-init ``VideoLlavaForConditionalGeneration`` with an offline BPE tokenizer, saved
with ``save_pretrained`` and loaded through ``weights=FOLDER`` as a downloaded checkpoint would be. The streams
are checked against transformers' own forward (the model expanding nothing itself: we pass the expanded ids).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fsar.encoders import ENCODERS, create_encoder
from fsar.encoders.mllm import PROMPT_SETS, MLLMError, MLLMPrompts, VideoTokenLayout, resolve_layer
from tiny_video_llava import FRAMES, IMAGE_SIZE, TOKENS_PER_FRAME, clips, tiny_encoder, tiny_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def encoder(folder):
    return tiny_encoder(folder)


def hf_reference(encoder, frames: torch.Tensor, prompt: str):
    """transformers' own forward on our expanded ids: (hidden states per layer, video mask)."""
    ids = torch.tensor([encoder.token_ids(prompt, with_video=True)])
    out = encoder.model(input_ids=ids, pixel_values_videos=frames, output_hidden_states=True)
    return out.hidden_states, ids[0] == encoder.video_id


# -- loading ----------------------------------------------------------------------------------------------


def test_registered_and_loaded_frozen_in_float32(encoder, folder):
    assert "video-llava" in ENCODERS
    assert encoder.name == "video-llava" and encoder.weights == str(folder)
    assert encoder.is_frozen and not any(p.requires_grad for p in encoder.model.parameters())
    assert encoder.dtype == torch.float32  # CPU
    assert (encoder.num_frames, encoder.layout.tokens_per_group, encoder.layout.drop_per_group) == (
        FRAMES, TOKENS_PER_FRAME, 1
    )
    assert encoder.image_size == IMAGE_SIZE and encoder.feature_dim == 64 and encoder.vision_dim == 32
    assert encoder.clip_stream_names() == ("prompt_state", "vision_tower", "support_prompt_state")
    assert encoder.label_stream_names() == ("support_prompt_state",)
    assert encoder.class_stream_names() == ("label_state",)


def test_frozen_check_holds_through_extraction_and_train_mode(folder):
    encoder = create_encoder("video-llava", weights=str(folder))
    assert not encoder.loaded and list(encoder.parameters()) == []  # lazy: nothing loaded yet
    encoder.train()
    assert not encoder.model.training  # reading .model loads it; dropout stays off
    before = sum(p.numel() for p in encoder.parameters())
    assert before > 0
    encoder.encode_clips(clips(1))
    assert sum(p.numel() for p in encoder.parameters()) == before
    assert not any(p.requires_grad for p in encoder.parameters())


def test_dtype_option(folder):
    encoder = create_encoder("video-llava", weights=str(folder), dtype="bfloat16")
    assert encoder.dtype == torch.bfloat16 and encoder.stream_key()["dtype"] == "bfloat16"
    out = encoder.encode_clips(clips(1))
    assert out["features"].dtype == torch.float32 and torch.isfinite(out["features"]).all()
    with pytest.raises(MLLMError, match="dtype"):
        create_encoder("video-llava", weights=str(folder), dtype="int8")


def test_folder_of_another_model_type_names_the_expected_class(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=28, patch_size=14)).save_pretrained(tmp_path)
    with pytest.raises(MLLMError, match="VideoLlavaForConditionalGeneration") as info:
        create_encoder("video-llava", weights=str(tmp_path))
    assert "clip_vision_model" in str(info.value)


def test_missing_folder_and_bad_options(tmp_path):
    with pytest.raises(MLLMError, match="does not exist"):
        create_encoder("video-llava", weights=str(tmp_path / "nope"))
    with pytest.raises(MLLMError, match="frozen"):
        create_encoder("video-llava", weights="random", finetune="full")
    with pytest.raises(MLLMError, match="unknown option"):
        create_encoder("video-llava", weights="random", widht=3)


def test_video_token_count_not_a_whole_number_of_frames_is_refused(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["video_seq_length"] = FRAMES * TOKENS_PER_FRAME - 1
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(MLLMError, match="whole number of frames"):
        create_encoder("video-llava", weights=str(broken))


def test_tokenizer_whose_video_id_differs_from_the_config_is_refused(folder, tmp_path):
    broken = tmp_path / "other-id"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["video_token_index"] = config["image_token_index"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(MLLMError, match="do not belong together"):
        create_encoder("video-llava", weights=str(broken))


def test_vision_side_disagreeing_with_the_expansion_is_a_clear_error(folder):
    wrong = VideoTokenLayout(groups=FRAMES, tokens_per_group=TOKENS_PER_FRAME + 1, drop_per_group=1)
    lazy = create_encoder("video-llava", weights=str(folder))
    lazy.layout = wrong
    with pytest.raises(MLLMError, match="5 positions per frame, the config implies 6"):  # checked on loading
        lazy.encode_clips(clips(1))
    encoder = create_encoder("video-llava", weights=str(folder))
    assert encoder.model is not None  # loaded
    encoder.layout = wrong
    with pytest.raises(MLLMError, match="disagree"):  # and at every forward
        encoder.encode_clips(clips(1))


def test_random_weights_build_offline():
    encoder = create_encoder("video-llava", weights="random", layers=2, frames=4)
    assert encoder.decoder_depth == 2 and encoder.num_frames == 4
    assert encoder.encode_clips(clips(2, frames=4))["features"].shape == (2, 4, 64)


# -- token expansion and positions -------------------------------------------------------------------------


def test_video_placeholder_expands_to_frames_times_tokens(encoder):
    prompt = encoder.adapter.chat_format.format(video="<video>", text="hello there")
    raw = encoder.tokenizer(prompt)["input_ids"]
    ids = encoder.token_ids(prompt, with_video=True)
    at = raw.index(encoder.video_id)
    total = FRAMES * TOKENS_PER_FRAME
    assert ids[:at] == raw[:at] and ids[at + total :] == raw[at + 1 :]
    assert ids[at : at + total] == [encoder.video_id] * total
    assert ids.count(encoder.video_id) == total
    with pytest.raises(MLLMError, match="expected 1"):
        encoder.token_ids("no placeholder here", with_video=True)
    with pytest.raises(MLLMError, match="expected 1"):
        encoder.token_ids("<video> twice <video>", with_video=True)


def test_left_padding_puts_every_row_at_the_right_edge(encoder):
    prompts = [encoder.adapter.chat_format.format(video="<video>", text=t) for t in ("a", "a much longer instruction")]
    ids, mask, after = encoder._batch(prompts, with_video=True)
    lengths = mask.sum(1)
    assert lengths[0] < lengths[1] and mask[0, : ids.shape[1] - lengths[0]].eq(0).all()
    assert mask[:, -1].eq(1).all()
    for row in range(2):
        where = (ids[row] == encoder.video_id).nonzero().flatten()
        assert where.numel() == FRAMES * TOKENS_PER_FRAME
        assert (where.diff() == 1).all()  # one contiguous block
        assert ids.shape[1] - 1 - int(where[-1]) == after[row]


# -- streams against transformers' own forward --------------------------------------------------------------


def test_streams_equal_transformers_forward_at_the_video_positions(encoder):
    frames = clips(1, seed=3)
    out = encoder.encode_clips(frames)
    prompt = encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.query_prompt())
    hidden, video = hf_reference(encoder, frames, prompt)
    layer = hidden[encoder.layer][0]  # (L, D): output of decoder layer l*
    tokens = layer[video].reshape(FRAMES, TOKENS_PER_FRAME, -1)
    torch.testing.assert_close(out["features"][0], tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["prompt_state"][0], layer[-1], atol=1e-5, rtol=1e-5)
    tower = encoder.model.model.video_tower(frames.flatten(0, 1), output_hidden_states=True)
    penultimate = tower.hidden_states[-2][:, 1:].mean(1)
    torch.testing.assert_close(out["vision_tower"][0], penultimate, atol=1e-5, rtol=1e-5)
    assert out["features"].shape == (1, FRAMES, 64) and out["vision_tower"].shape == (1, FRAMES, 32)


def test_last_layer_is_taken_after_the_final_norm(folder):
    encoder = tiny_encoder(folder, layer=1.0)
    assert encoder.layer == encoder.decoder_depth == 4
    frames = clips(1, seed=4)
    prompt = encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.query_prompt())
    ids = torch.tensor([encoder.token_ids(prompt, with_video=True)])
    last = encoder.model.model(input_ids=ids, pixel_values_videos=frames).last_hidden_state[0]
    torch.testing.assert_close(encoder.encode_clips(frames)["prompt_state"][0], last[-1], atol=1e-5, rtol=1e-5)


def test_batched_left_padded_extraction_equals_one_at_a_time(folder):
    encoder = tiny_encoder(folder, batch_size=3)
    frames = clips(5, seed=1)
    batched = encoder.encode_clips(frames)  # chunks of 3 and 2
    for name, value in batched.items():
        single = torch.cat([encoder.encode_clips(frames[i : i + 1])[name] for i in range(5)])
        torch.testing.assert_close(value, single, atol=1e-5, rtol=1e-5)
    # rows of different lengths in one batch (left padding inside the batch)
    texts = ["short", "a rather longer instruction about the clip", "mid length one"]
    mixed = encoder._video_forward(frames[:3], texts)
    for i, text in enumerate(texts):
        one = encoder._video_forward(frames[i : i + 1], [text])
        for name in mixed:
            torch.testing.assert_close(mixed[name][i], one[name][0], atol=1e-5, rtol=1e-5)
    names = ["moving something from left to right", "bouncing something", "x"]
    together = encoder.encode_class_streams(names)["label_state"]
    apart = torch.cat([encoder.encode_class_streams([n])["label_state"] for n in names])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)
    assert together.shape == (3, 64) and not torch.allclose(together[0], together[1])


def test_frames_of_another_count_or_size_are_refused(encoder):
    with pytest.raises(ValueError, match="takes 8 frames"):
        encoder.encode_clips(clips(1, frames=4))
    with pytest.raises(ValueError, match="28x28"):
        encoder.encode_clips(torch.zeros(1, FRAMES, 3, 32, 32))


def test_extraction_is_deterministic(encoder):
    frames = clips(2, seed=9)
    a, b = encoder.encode_clips(frames), encoder.encode_clips(frames)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- layers, prompts, cache key -----------------------------------------------------------------------------


def test_layer_resolution():
    assert resolve_layer(0.75, 32) == 24 and resolve_layer(0.75, 4) == 3 and resolve_layer(1.0, 32) == 32
    assert resolve_layer(24, 32) == 24 and resolve_layer(-1, 32) == 32 and resolve_layer("0.5", 32) == 16
    assert resolve_layer("16", 32) == 16
    for bad in (0, 33, 1.5, 0.0, "x", True):
        with pytest.raises(MLLMError):
            resolve_layer(bad, 32)


def test_stream_key_records_layer_and_prompt_hash(folder, encoder):
    key = encoder.stream_key()
    assert key["layer"] == 3 and key["prompt_hash"] == PROMPT_SETS["generic"].digest()
    other_layer = tiny_encoder(folder, layer=2).stream_key()
    other_prompts = tiny_encoder(folder, prompts="ssv2").stream_key()
    assert other_layer["layer"] == 2 and other_layer != key
    assert other_prompts["prompt_hash"] != key["prompt_hash"]
    assert "support_prompt_hash" in key and "support_prompt_hash" not in tiny_encoder(
        folder, support_prompt=False).stream_key()
    reworded = MLLMPrompts(**{**PROMPT_SETS["generic"].__dict__, "query": "What happens?"})
    assert reworded.digest() != PROMPT_SETS["generic"].digest()
    with pytest.raises(MLLMError, match="prompt set"):
        create_encoder("video-llava", weights=str(folder), prompts="nope")


def _label_sets() -> list[str]:
    from fsar.data.synth import class_names

    names = list(class_names())
    shared = Path(__file__).resolve().parents[2] / "shared" / "splits"
    for split in sorted(shared.glob("*/*.txt")) if shared.is_dir() else []:
        names += sorted({line.split("/")[0] for line in split.read_text().splitlines() if "/" in line})
    return names + ["jumping", "running", "pushing something from left to right"]


def test_no_query_prompt_contains_label_text(encoder, monkeypatch):
    labels = _label_sets()
    for prompts in PROMPT_SETS.values():
        query = prompts.query_prompt().lower()
        leaked = [name for name in labels if f" {name.lower()} " in f" {query} "]
        assert not leaked, f"prompt set {prompts.name!r} names classes {leaked}"
        assert "{" not in query  # no placeholder the cache could fill with a label
        # the task-oriented query (4d) names the candidate classes only
        candidates, others = labels[:5], labels[5:40]
        task = prompts.task_query(candidates)
        assert all(c in task for c in candidates)
        assert not [o for o in others if o not in " ".join(candidates) and f" {o} " in f" {task} "]
        assert prompts.class_prompt("jumping").count("jumping") == 1  # label text only in the text-only prompt
        # the support prompt (b) names exactly the clip's own label, nothing else
        support = prompts.support_prompt("jumping")
        assert "jumping" in support and not [o for o in labels if o != "jumping" and f" {o} " in f" {support} "]
    seen: list[str] = []  # every prompt the encoder tokenises, whichever path
    original = encoder.token_ids
    monkeypatch.setattr(encoder, "token_ids", lambda prompt, **kw: seen.append(prompt) or original(prompt, **kw))
    out = encoder.encode_clips(clips(2))  # no labels: the query path
    assert seen and all(p == encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.query)
                        for p in seen)
    assert "support_prompt_state" not in out
    seen.clear()
    labelled = encoder.encode_clips(clips(2), labels=["jumping", "running"])  # support clips: their own labels
    query_prompt = encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.query)
    named = [p for p in seen if p != query_prompt]
    assert len(seen) == 4 and named == [encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.support_prompt(x))
                     for x in ("jumping", "running")]
    torch.testing.assert_close(labelled["prompt_state"], out["prompt_state"])  # the label-free streams agree
    assert not torch.allclose(labelled["support_prompt_state"], labelled["prompt_state"])
    with pytest.raises(ValueError, match="one class name per clip"):
        encoder.encode_clips(clips(2), labels=["jumping"])


def test_layout_pooling_drops_the_class_token():
    layout = VideoTokenLayout(groups=2, tokens_per_group=3, drop_per_group=1)
    tokens = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2)
    assert layout.pool(tokens).tolist() == [[[3.0, 4.0], [9.0, 10.0]]]
    with pytest.raises(MLLMError):
        VideoTokenLayout(groups=2, tokens_per_group=3, drop_per_group=3)


# -- a second family through the same interface: LLaVA-NeXT-Video -------------------------------------------


def test_llava_next_video_adapter_from_a_saved_folder_equals_transformers(tmp_path, folder):
    from fsar.encoders.llava_next_video import tiny_llava_next_video

    model, tokenizer = tiny_llava_next_video()
    model.save_pretrained(tmp_path / "lnv")
    tokenizer.save_pretrained(tmp_path / "lnv")
    encoder = create_encoder("llava-next-video", weights=str(tmp_path / "lnv"), frames=4)
    assert encoder.is_frozen and (encoder.layout.groups, encoder.layout.tokens_per_group) == (4, 4)
    frames = torch.randn(2, 4, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    out = encoder.encode_clips(frames)
    prompt = encoder.adapter.chat_format.format(video="<video>", text=encoder.prompts.query_prompt())
    ids = torch.tensor([encoder.token_ids(prompt, with_video=True)])
    hidden = encoder.model(input_ids=ids, pixel_values_videos=frames[1:], output_hidden_states=True).hidden_states
    layer = hidden[encoder.layer][0]
    pooled = layer[ids[0] == encoder.video_id].reshape(4, 4, -1).mean(1)  # no token dropped per frame
    torch.testing.assert_close(out["features"][1], pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["prompt_state"][1], layer[-1], atol=1e-5, rtol=1e-5)
    with pytest.raises(MLLMError, match="LlavaNextVideoForConditionalGeneration"):
        create_encoder("llava-next-video", weights=str(folder))  # a Video-LLaVA folder
    with pytest.raises(MLLMError, match="VideoLlavaForConditionalGeneration"):
        create_encoder("video-llava", weights=str(tmp_path / "lnv"))


def test_label_state_averaged_over_the_16_templates(folder):
    from fsar.encoders.prompts import TEMPLATES

    plain = tiny_encoder(folder)
    averaged = tiny_encoder(folder, label_templates=True)
    assert "label_templates" in averaged.stream_key() and "label_templates" not in plain.stream_key()
    names = ["Pushing [something] from left to right", "jumping"]
    out = averaged.encode_class_streams(names)["label_state"]
    assert out.shape == (2, averaged.feature_dim)
    words = ["pushing something from left to right", "jumping"]
    for row, word in enumerate(words):
        prompts = [averaged.adapter.text_format.format(text=averaged.prompts.class_prompt(t.format(word)))
                   for t in TEMPLATES]
        torch.testing.assert_close(out[row], averaged.encode_text(prompts).mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, plain.encode_class_streams(names)["label_state"])


@pytest.mark.parametrize("options", [dict(batch_size=3), dict(layer=1.0), dict(text_pooling="mean_after_video")])
def test_support_prompt_shares_the_video_pass_and_equals_separate_forwards(folder, options):
    """encode_clips(labels=...) runs the prefix (text before the video + video tokens) once and each
    prompt's suffix on its key/value cache: the result equals one full forward per prompt and clip."""
    encoder = tiny_encoder(folder, **options)
    frames = clips(4, seed=11)
    labels = ["jumping", "pushing something from left to right", "x", "running"]
    shared = encoder.encode_clips(frames, labels=labels)
    query_prompt = encoder.prompts.query_prompt()
    for i, label in enumerate(labels):
        one = encoder._video_forward(frames[i : i + 1], [query_prompt])
        named = encoder._video_forward(frames[i : i + 1], [encoder.prompts.support_prompt(label)])
        for name in ("features", "vision_tower", "prompt_state"):
            torch.testing.assert_close(shared[name][i], one[name][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shared["support_prompt_state"][i], named["prompt_state"][0], atol=1e-5, rtol=1e-5)


# -- a third family: Qwen2-VL (patches, 3-D M-RoPE positions) ------------------------------------------------


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    from fsar.encoders.qwen2_vl import tiny_qwen2_vl

    model, tokenizer = tiny_qwen2_vl()
    folder = tmp_path_factory.mktemp("qwen") / "tiny-qwen2-vl"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_qwen2_vl_from_a_saved_folder_equals_transformers_forward(qwen_folder, folder):
    from fsar.encoders.qwen2_vl import patchify

    encoder = create_encoder("qwen2-vl", weights=str(qwen_folder), frames=4, image_size=56, batch_size=3)
    assert not encoder.loaded and encoder.is_frozen
    assert (encoder.layout.groups, encoder.layout.tokens_per_group, encoder.num_frames) == (2, 4, 4)
    assert encoder.vision_dim == 32 and encoder.feature_dim == 64
    frames = torch.randn(3, 4, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    labels = ["jumping", "pushing something from left to right", "x"]  # prompts of three lengths: left padding
    out = encoder.encode_clips(frames, labels=labels)
    assert out["features"].shape == (3, 2, 64) and out["vision_tower"].shape == (3, 2, 32)
    prompt = encoder.adapter.chat_format.format(video="<|video_pad|>", text=encoder.prompts.query_prompt())
    ids = torch.tensor([encoder.token_ids(prompt, with_video=True)])
    patches, grid = patchify(frames[1:2], patch=14, temporal=2, merge=2)
    reference = encoder.model(input_ids=ids, pixel_values_videos=patches, video_grid_thw=grid,
                              mm_token_type_ids=(ids == encoder.video_id).int() * 2, output_hidden_states=True)
    layer = reference.hidden_states[encoder.layer][0]  # transformers' own M-RoPE positions
    pooled = layer[ids[0] == encoder.video_id].reshape(2, 4, -1).mean(1)
    torch.testing.assert_close(out["features"][1], pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["prompt_state"][1], layer[-1], atol=1e-5, rtol=1e-5)
    for i in range(3):  # a left-padded batch gives what one clip at a time gives
        one = encoder.encode_clips(frames[i : i + 1], labels=[labels[i]])
        for name in out:
            torch.testing.assert_close(out[name][i], one[name][0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="takes 4 frames"):
        encoder.encode_clips(torch.zeros(1, 3, 3, 56, 56))
    with pytest.raises(MLLMError, match="multiple of patch x merge = 28"):
        create_encoder("qwen2-vl", weights=str(qwen_folder), image_size=50)
    with pytest.raises(MLLMError, match="Qwen2VLForConditionalGeneration"):
        create_encoder("qwen2-vl", weights=str(folder))  # a Video-LLaVA folder


def test_qwen2_vl_patches_equal_its_image_processor():
    """patchify lays frames out as transformers' Qwen2-VL image processor does (an image is 2 equal frames)."""
    import numpy as np
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from fsar.encoders.qwen2_vl import patchify

    image = (np.random.default_rng(0).random((56, 84, 3)) * 255).astype(np.uint8)
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 84, max_pixels=56 * 84)
    expected = processor(images=[Image.fromarray(image)], return_tensors="pt")
    x = torch.from_numpy(image).float().permute(2, 0, 1) / 255
    x = (x - torch.tensor(processor.image_mean)[:, None, None]) / torch.tensor(processor.image_std)[:, None, None]
    patches, grid = patchify(x[None, None].repeat(1, 2, 1, 1, 1), patch=14, temporal=2, merge=2)
    assert grid.tolist() == expected["image_grid_thw"].tolist() == [[1, 4, 6]]
    torch.testing.assert_close(patches, expected["pixel_values"].float(), atol=1e-5, rtol=1e-5)


def test_fsar_llava_trains_on_the_qwen2_vl_streams(qwen_folder):
    from fsar.data.inputs import EpisodeInputs
    from fsar.methods import create_method

    encoder = create_encoder("qwen2-vl", weights=str(qwen_folder), frames=4, image_size=56)
    torch.manual_seed(0)
    model = create_method("fsar-llava", backbone=encoder, dim=16, temporal_heads=2, temporal_ffn_dim=32,
                          enhancement_heads=2, refinement_heads=2, dropout=0.0).train()
    g = torch.Generator().manual_seed(1)
    episode = EpisodeInputs(
        support=torch.randn(2, 4, 3, 56, 56, generator=g), support_labels=torch.tensor([0, 1]),
        query=torch.randn(2, 4, 3, 56, 56, generator=g), class_names=["jumping", "running"],
        query_labels=torch.tensor([1, 0]),
    )
    out = model(episode)
    assert out.log_probs.shape == (2, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    assert not any(p.requires_grad for p in encoder.parameters())
