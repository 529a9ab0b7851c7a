"""``fsar.Recognizer``: encoding once (memory and disk), add/remove, calibrated scores, open set, errors."""

import math
import shutil

import pytest
import torch
from engine_standins import write_tiny_dataset

import fsar
from fsar.engine.config import TrainConfig, config_to_dict
from fsar.recognizer import (
    NONE_OF_THESE,
    IncompatibleCheckpointError,
    NotAVideoError,
    Recognizer,
    SupportSetError,
    choose_threshold,
    fit_temperature,
    parse_reject,
)

#: a CLIP ViT of a few thousand parameters (random weights), frozen: the feature path
TINY = {"encoder_options": {"image_size": 32, "patch_size": 16, "width": 32, "vision_layers": 1, "heads": 2,
                            "text_width": 32, "text_layers": 1, "text_heads": 2, "projection_dim": 16,
                            "vocab_size": 64}}
BACKBONE = dict(backbone="clip-vit-b32", weights="random")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("rec") / "tiny", classes=5, clips=3)


def support_of(data, tmp_path, classes=(0, 1, 2), clips=(0, 1)):
    folder = tmp_path / "support"
    for c in classes:
        for j in clips:
            shutil.copytree(data / f"class{c:02d}" / f"clip{j}", folder / f"class{c:02d}" / f"clip{j}")
    return folder


def make(folder, cache, **kwargs):
    torch.manual_seed(0)
    options = dict(method="otam", **BACKBONE, method_options=dict(TINY, finetune="frozen"), cache_dir=cache,
                   device="cpu")
    options.update(kwargs)
    return Recognizer.from_folder(folder, **options)


def test_exported_from_fsar():
    assert fsar.Recognizer is Recognizer and fsar.SupportSetError is SupportSetError


def test_encodes_once_and_reads_the_disk_store_keyed_by_encoder_and_frames(data, tmp_path):
    folder = support_of(data, tmp_path)
    cache = tmp_path / "cache"
    first = make(folder, cache)
    assert first.encoded_clips == 6 and first.shots() == {"class00": 2, "class01": 2, "class02": 2}
    again = make(folder, cache)
    assert again.encoded_clips == 0  # every clip from the disk store
    for name in first.actions:
        for a, b in zip(first._support[name], again._support[name]):
            assert torch.equal(a.tensors["features"], b.tensors["features"])
    # a renamed copy of a clip is the same content: found again
    shutil.copytree(folder / "class00" / "clip0", tmp_path / "renamed")
    again.add("class03", [tmp_path / "renamed"])
    assert again.encoded_clips == 0
    # other frame count -> other key -> encoded anew; other weights likewise
    assert make(folder, cache, num_frames=3).encoded_clips == 6
    wider = {"encoder_options": dict(TINY["encoder_options"], projection_dim=24)}
    other = make(folder, cache, method_options=dict(wider, finetune="frozen"))
    assert other.encoded_clips == 6
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 3


def test_add_and_remove_encode_only_the_new_clips_and_match_the_method(data, tmp_path):
    folder = support_of(data, tmp_path)
    recognizer = make(folder, False)
    assert recognizer.encoded_clips == 6
    recognizer.add("class03", [data / "class03" / "clip0", data / "class03" / "clip1"])
    assert recognizer.encoded_clips == 8 and recognizer.actions[-1] == "class03"
    recognizer.remove("class01")
    assert recognizer.actions == ["class00", "class02", "class03"] and recognizer.encoded_clips == 8
    queries = [data / "class00" / "clip2", data / "class03" / "clip2"]
    predictions = recognizer.predict(queries)
    # the reference: the method itself on the loader's frames of the same clips
    from fsar.data.inputs import EpisodeInputs
    from fsar.data.manifest import Clip

    load = lambda p: recognizer.loader.load(Clip(p, -1, "?"), train=False)  # noqa: E731
    support = [data / c / f"clip{j}" for c in ("class00", "class02", "class03") for j in (0, 1)]
    inputs = EpisodeInputs(
        support=torch.stack([load(p) for p in support]), support_labels=torch.tensor([0, 0, 1, 1, 2, 2]),
        query=torch.stack([load(p) for p in queries]), class_names=["class00", "class02", "class03"],
    )
    with torch.no_grad():
        expected = recognizer.method(inputs).log_probs
    temperature = recognizer.calibration().temperature
    calibrated = torch.softmax(expected.double() / temperature, -1)
    for prediction, row in zip(predictions, calibrated):
        ranking = dict(prediction.ranking)
        assert sum(ranking.values()) == pytest.approx(1.0, abs=1e-5)
        assert [p for _, p in prediction.ranking] == sorted(ranking.values(), reverse=True)
        for i, name in enumerate(["class00", "class02", "class03"]):
            assert ranking[name] == pytest.approx(float(row[i]), abs=1e-4)
        assert prediction.label == prediction.best and not prediction.rejected  # reject="off"
    single = recognizer.predict(queries[0])
    assert single.ranking == predictions[0].ranking


def test_fit_temperature_recovers_the_scale_that_generated_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(4000, 4, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 2.0, -1), 1, generator=g)[:, 0]
    assert fit_temperature(torch.log_softmax(logits, -1), labels) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(torch.empty(0, 4), torch.empty(0, dtype=torch.long)) == 1.0
    # perfectly separated answers: a finite T, the true class at about (n + 1) / (n + 2), not 1.0
    separated = torch.log_softmax(torch.eye(4).repeat(2, 1) * 2.0, -1)  # 8 rows, right by a margin of 2
    labels = torch.arange(4).repeat(2)
    temperature = fit_temperature(separated, labels)
    assert temperature > 0.05
    p_true = torch.softmax(separated / temperature, -1).gather(1, labels[:, None]).mean()
    assert float(p_true) == pytest.approx(9 / 10, abs=0.02)


def test_threshold_rule():
    threshold, rule = choose_threshold([0.8, 0.9, 0.7], [0.3, 0.4, 0.2])
    assert 0.4 < threshold < 0.7 and "balanced" in rule
    threshold, _ = choose_threshold([0.8, 0.5, 0.9, 0.7], [0.3, 0.6, 0.2])  # overlap: best of the cuts
    kept = sum(s >= threshold for s in [0.8, 0.5, 0.9, 0.7]) / 4
    rejected = sum(s < threshold for s in [0.3, 0.6, 0.2]) / 3
    assert (kept + rejected) / 2 == pytest.approx(max(
        (sum(s >= t for s in [0.8, 0.5, 0.9, 0.7]) / 4 + sum(s < t for s in [0.3, 0.6, 0.2]) / 3) / 2
        for t in [0.1, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]))
    threshold, rule = choose_threshold([], [0.2, 0.4, 0.6])
    assert threshold == pytest.approx(0.4) and "median" in rule
    assert choose_threshold([], [])[0] is None
    assert parse_reject("auto") == "auto" and parse_reject("0.4") == 0.4 and parse_reject(None) == "off"
    for bad in ("1.5", "maybe", 0.0):
        with pytest.raises(fsar.RecognizerError):
            parse_reject(bad)


def test_rejection_below_the_threshold_and_auto_calibration(data, tmp_path):
    folder = support_of(data, tmp_path, classes=(0, 1, 2, 3))
    recognizer = make(folder, False, reject=0.999)
    prediction = recognizer.predict(data / "class04" / "clip0")
    assert prediction.rejected and prediction.label == NONE_OF_THESE and prediction.threshold == 0.999
    assert prediction.to_dict()["label"] == NONE_OF_THESE and prediction.best in recognizer.actions
    recognizer.reject = "auto"
    calibration = recognizer.calibration()
    assert len(calibration.known_scores) == 8 and len(calibration.unknown_scores) == 8
    assert 0 < calibration.threshold < 1 and calibration.temperature > 0
    prediction = recognizer.predict(data / "class04" / "clip0")
    assert prediction.threshold == calibration.threshold
    assert prediction.rejected == (prediction.score < calibration.threshold)
    recognizer.add("class04", [data / "class04" / "clip1", data / "class04" / "clip2"])
    assert len(recognizer.calibration().known_scores) == 10  # recalibrated for the new set


def test_auto_is_refused_where_the_support_set_cannot_calibrate(data, tmp_path):
    recognizer = make(support_of(data, tmp_path, classes=(0, 1), clips=(0,)), False, reject="auto")
    with pytest.raises(SupportSetError, match="give a threshold"):
        recognizer.predict(data / "class00" / "clip2")


def test_bad_input(data, tmp_path):
    folder = support_of(data, tmp_path)
    recognizer = make(folder, False)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    with pytest.raises(NotAVideoError, match="notes.mp4"):
        recognizer.predict(not_video)
    with pytest.raises(NotAVideoError, match="missing.mp4"):
        recognizer.predict(tmp_path / "missing.mp4")
    with pytest.raises(NotAVideoError, match="notes.mp4"):
        recognizer.add("class04", [not_video])
    assert "class04" not in recognizer.actions  # nothing half-added
    with pytest.raises(SupportSetError, match="no action 'nope'"):
        recognizer.remove("nope")
    with pytest.raises(SupportSetError):
        recognizer.add(NONE_OF_THESE, [data / "class03" / "clip0"])
    one = tmp_path / "one"
    shutil.copytree(data / "class00", one / "class00")
    with pytest.raises(SupportSetError, match="at least 2 action folders"):
        make(one, False)
    (one / "empty action").mkdir()
    with pytest.raises(SupportSetError, match="empty action"):
        make(one, False)
    recognizer.remove("class00")
    recognizer.remove("class01")
    with pytest.raises(SupportSetError, match="at least 2 actions"):
        recognizer.predict(data / "class02" / "clip2")


def test_checkpoint_is_rebuilt_and_another_backbone_refused(data, tmp_path, capsys):
    from fsar.engine.checkpoint import save_checkpoint
    from fsar.engine.run import build_method

    torch.manual_seed(3)
    options = dict(TINY, finetune="frozen")
    method = build_method("ma-fsar", **BACKBONE, method_options=options)
    with torch.no_grad():
        for parameter in method.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    config = TrainConfig(data=str(data), method="ma-fsar", **BACKBONE, method_options=options, num_frames=4)
    run = tmp_path / "run"
    save_checkpoint(run, "best", method=method, method_name="ma-fsar", backbone="clip-vit-b32",
                    config=config_to_dict(config), step=1)
    folder = support_of(data, tmp_path)
    recognizer = Recognizer.from_folder(folder, checkpoint=run, cache_dir=False, device="cpu")
    assert recognizer.info["method"] == "ma-fsar" and recognizer.loader.num_frames == 4
    trained = dict(method.trainable_state_dict())
    for name, value in recognizer.method.trainable_state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert not recognizer.predict(data / "class01" / "clip2").rejected
    with pytest.raises(IncompatibleCheckpointError, match="backbone 'clip-vit-b32'"):
        Recognizer.from_folder(folder, checkpoint=run, backbone="effnet-lite0+minilm", cache_dir=False)
    from fsar.cli import main

    code = main(["predict", "--data", str(folder), "--query", str(data / "class01" / "clip2"), "--checkpoint", str(run),
                 "--backbone", "effnet-lite0+minilm", "--no-cache"])
    assert code == 2 and "backbone 'clip-vit-b32'" in capsys.readouterr().err  # the CLI's one-line message
    with pytest.raises(IncompatibleCheckpointError, match="no checkpoint"):
        Recognizer.from_folder(folder, checkpoint=tmp_path, cache_dir=False)
    assert math.isfinite(recognizer.calibration().temperature)


TINY_FLAGS = ["--method", "otam", "--backbone", "clip-vit-b32", "--weights", "random", "-O", "finetune=frozen",
              "-O", "encoder_options={image_size: 32, patch_size: 16, width: 32, vision_layers: 1, heads: 2, "
              "text_width: 32, text_layers: 1, text_heads: 2, projection_dim: 16, vocab_size: 64}"]


def test_cli_predict_reject_and_explain(data, tmp_path, capsys):
    import json

    from fsar.cli import main

    folder = support_of(data, tmp_path)
    cache = tmp_path / "cache"
    queries = [str(data / "class00" / "clip2"), str(data / "class04" / "clip0")]
    common = ["predict", "--data", str(folder), "--query", *queries, *TINY_FLAGS, "--cache", str(cache)]
    assert main([*common, "--reject", "0.999", "--json", "--explain", str(tmp_path / "why.png")]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["threshold"] == 0.999 and output["shots"] == {"class00": 2, "class01": 2, "class02": 2}
    for prediction in output["predictions"]:
        assert prediction["rejected"] == (prediction["score"] < 0.999)
        assert prediction["label"] == (NONE_OF_THESE if prediction["rejected"] else prediction["ranking"][0]["class"])
        assert sum(r["probability"] for r in prediction["ranking"]) == pytest.approx(1.0, abs=1e-4)
    assert output["explanations"] == [str(tmp_path / "why-1.png"), str(tmp_path / "why-2.png")]
    assert all((tmp_path / f"why-{i}.png").read_bytes()[:4] == b"\x89PNG" for i in (1, 2))
    # text output; auto from the support set; the same predictions as the API
    assert main([*common, "--reject", "auto"]) == 0
    text = capsys.readouterr().out
    api = make(folder, cache, reject="auto").predict(queries)
    for prediction in api:
        verdict = f"none of these (best {prediction.best}" if prediction.rejected else f"{prediction.label} ("
        assert f"{prediction.query}: {verdict}" in text
    assert main([*common, "--reject", "maybe"]) == 2
    assert "--reject" in capsys.readouterr().err
    one = tmp_path / "one"
    shutil.copytree(data / "class00", one / "class00")
    assert main(["predict", "--data", str(one), "--query", queries[0], *TINY_FLAGS, "--no-cache"]) == 2
    assert "at least 2 action folders" in capsys.readouterr().err
