"""The FSAR-LLaVA command-line flows on the tiny saved Video-LLaVA: ``fsar extract -B KEY=VALUE`` (the
backbone's declared options, checked), the caption baseline from the CLI, and the README's flow."""

from __future__ import annotations

import json

import pytest

from fsar.cli import main
from tiny_video_llava import tiny_folder

SMALL = ["--way", "3", "--shot", "1", "--queries", "1", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_folder(tmp_path_factory)


def extract(data, folder, out, *options: str) -> int:
    return main(["extract", "--data", str(data), "--backbone", "video-llava", "--weights", str(folder),
                 "--out", str(out), "--no-progress", *options])


def test_backbone_options_are_checked_against_what_the_backbone_declares(tiny_dataset, folder, tmp_path, capsys):
    assert extract(tiny_dataset, folder, tmp_path / "c", "-B", "lyer=16") == 2
    err = capsys.readouterr().err
    assert "lyer" in err and "valid:" in err and "layer (" in err and "captions (" in err and "prompts (" in err
    assert extract(tiny_dataset, folder, tmp_path / "c", "-B", "layer") == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert extract(tiny_dataset, folder, tmp_path / "c", "-B", "layer=99") == 2  # the backbone's own check
    assert "outside the decoder" in capsys.readouterr().err
    assert extract(tiny_dataset, folder, tmp_path / "c", "-B", "weights=x") == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["extract", "--data", str(tiny_dataset), "--backbone", "effnet-lite0+minilm", "--out",
                 str(tmp_path / "e"), "-B", "layer=2"]) == 2
    assert "valid: none" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.safetensors"))


def test_extract_with_a_layer_index_and_a_prompt_set_records_them(tiny_dataset, folder, tmp_path, capsys):
    from fsar.encoders.mllm import PROMPT_SETS

    out = tmp_path / "cache"
    assert extract(tiny_dataset, folder, out, "-B", "layer=2", "-B", "prompts=ssv2", "-B", "support_prompt=false") == 0
    index = json.loads((out / "index.json").read_text())
    assert index["stream_key"]["layer"] == 2 and index["stream_key"]["prompt_hash"] == PROMPT_SETS["ssv2"].digest()
    assert index["backbone_options"] == {"weights": str(folder), "layer": 2, "prompts": "ssv2", "support_prompt": False}
    assert "support_prompt_state" not in index["clip_streams"] and index["label_streams"] == []
    # a method built with other backbone options is refused, naming the key
    code = main(["eval", "--data", str(tiny_dataset), "--method", "fsar-llava", "--backbone", "video-llava",
                 "--weights", str(folder), "--features", str(out), *SMALL, "--episodes", "2",
                 "-O", "dim=16", "-O", "support_text=query"])
    err = capsys.readouterr().err
    assert code == 2 and "'layer': 2" in err
    assert "-O 'encoder_options={layer: 2, prompts: ssv2, support_prompt: False}'" in err  # how to match it
    code = main(["eval", "--data", str(tiny_dataset), "--method", "fsar-llava", "--backbone", "video-llava",
                 "--weights", str(folder), "--features", str(out), *SMALL, "--episodes", "2", "-O", "dim=16",
                 "-O", "support_text=query", "-O", "encoder_options={layer: 2, prompts: ssv2, support_prompt: false}"])
    assert code == 0


def test_caption_baseline_through_the_cli(tiny_dataset, folder, tmp_path, capsys):
    """extract with captions (greedy, 3 new tokens, MiniLM), then the training-free caption matching evaluates
    from that cache; `fsar train` says it has nothing to train."""
    cache = tmp_path / "captions"
    assert extract(tiny_dataset, folder, cache, "-B", "captions=minilm", "-B", "caption_tokens=3") == 0
    index = json.loads((cache / "index.json").read_text())
    assert "caption_embedding" in index["clip_streams"]
    assert index["streams"]["clip"]["caption_embedding"]["shape"] == [384]
    assert index["stream_key"]["captions"] == "minilm" and index["stream_key"]["caption_tokens"] == 3
    backbone = ["--method", "fsar-llava-caption", "--backbone", "video-llava", "--weights", str(folder),
                "--features", str(cache), "-O", "encoder_options={captions: minilm, caption_tokens: 3}"]
    capsys.readouterr()
    assert main(["train", "--data", str(tiny_dataset), "--val-classes", "3", *backbone, *SMALL,
                 "--episodes", "2", "--out", str(tmp_path / "run")]) == 2
    assert "nothing to train" in capsys.readouterr().err
    result_file = tmp_path / "eval.json"
    assert main(["eval", "--data", str(tiny_dataset), *backbone, *SMALL, "--episodes", "6",
                 "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert result["method"] == "fsar-llava-caption" and result["episodes"] == 6 and 0 <= result["accuracy"] <= 1


# -- lazy loading: the cache key without the weights ---------------------------------------------------------


def test_the_mllm_loads_only_when_a_clip_is_encoded_and_its_fingerprint_needs_no_loading(folder):
    import torch

    from fsar.encoders import create_encoder
    from fsar.encoders.cache import weights_fingerprint

    lazy = create_encoder("video-llava", weights=str(folder))
    assert not lazy.loaded and list(lazy.parameters()) == []
    key = (weights_fingerprint(lazy), lazy.stream_key(), lazy.clip_stream_names(), lazy.feature_dim, lazy.image_size)
    assert not lazy.loaded  # the whole cache key came from the config and the weight files
    lazy.encode_clips(torch.zeros(1, 8, 3, lazy.image_size, lazy.image_size))
    assert lazy.loaded and lazy.is_frozen and sum(p.numel() for p in lazy.parameters()) > 0
    assert key == (weights_fingerprint(lazy), lazy.stream_key(), lazy.clip_stream_names(), lazy.feature_dim,
                   lazy.image_size)
    half = create_encoder("video-llava", weights=str(folder)).to(torch.bfloat16)  # moved before loading
    assert not half.loaded and half.dtype == torch.bfloat16
    assert weights_fingerprint(half) != key[0]  # another precision, other features
    assert half.model.dtype == torch.bfloat16 and half.stream_key()["dtype"] == "bfloat16"


def _readme_block(title: str) -> list[str]:
    """The commands of the first ```bash block after the README heading ``title`` (continuations joined)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index(title):]
    block = section[section.index("```bash") + len("```bash"): section.index("```", section.index("```bash") + 7)]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


# ~96 clips extracted, 64 training episodes, 100 evaluation episodes on the tiny MLLM: ~12 s on 2 loaded cores
def test_readme_flow_runs_as_written_and_trains_and_evaluates_without_loading_the_mllm(tmp_path, monkeypatch, capsys):
    import shlex

    from transformers import VideoLlavaForConditionalGeneration

    commands = _readme_block("### FSAR-LLaVA: a frozen video MLLM as the backbone")
    assert [c.split()[:2] for c in commands] == [["fsar", "data"], ["python", "-c"], ["fsar", "extract"],
                                                 ["fsar", "train"], ["fsar", "eval"]]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        words = shlex.split(command)
        if words[0] == "python":
            exec(compile(words[2], "<README>", "exec"), {})
            continue
        if words[1] == "train":  # from here on every stream comes from the cache: the MLLM must not load

            def refuse(*args, **kwargs):
                raise AssertionError("the MLLM was loaded although every clip is in the feature cache")

            monkeypatch.setattr(VideoLlavaForConditionalGeneration, "from_pretrained", refuse)
        assert main(words[1:]) == 0, command
    out = capsys.readouterr().out
    assert "fsar-llava" in out and "%" in out
    assert (tmp_path / "runs" / "fsar-llava" / "best.json").is_file()


def test_a_hub_id_already_downloaded_loads_lazily_from_its_snapshot(folder, tmp_path, monkeypatch):
    """A hub id found in the local Hugging Face cache is read like its folder: lazily, with the same
    fingerprint (two spellings of the same weights share a feature cache)."""
    import shutil

    from huggingface_hub import constants

    from fsar.encoders import create_encoder
    from fsar.encoders.cache import weights_fingerprint

    snapshot = tmp_path / "hub" / "models--someone--tiny-video-llava" / "snapshots" / "0123abcd"
    shutil.copytree(folder, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_id = create_encoder("video-llava", weights="someone/tiny-video-llava")
    by_folder = create_encoder("video-llava", weights=str(folder))
    assert not by_id.loaded and by_id.weights == "someone/tiny-video-llava" and by_id.weight_files()
    assert weights_fingerprint(by_id) == weights_fingerprint(by_folder)
