"""`fsar info`: parameter counts of methods and backbones, and its errors."""

from __future__ import annotations

import json

import pytest

from fsar.cli import main


def _info_json(capsys, *argv) -> dict:
    assert main(["info", *argv, "--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)


def test_backbone_counts_match_the_module(capsys):
    from fsar.encoders.embedded import EmbeddedEncoder

    report = _info_json(capsys, "effnet-lite0+minilm", "--weights", "random", "--depth", "1")
    enc = EmbeddedEncoder(weights="random")
    assert report["kind"] == "backbone"
    assert report["total"] == sum(p.numel() for p in enc.parameters())
    assert report["trainable"] == 0
    rows = {r["module"]: r for r in report["modules"]}
    assert set(rows) == {"visual", "text"}
    assert rows["visual"]["total"] == sum(p.numel() for p in enc.visual.parameters())
    # EfficientNet-Lite0 without its ImageNet classifier, MiniLM-L6 without BERT's pooler.
    assert 3_000_000 < rows["visual"]["total"] < 3_500_000
    assert 22_000_000 < rows["text"]["total"] < 23_000_000


def test_method_counts_trainable_parts(capsys):
    import fsar

    if "ma-fsar" not in fsar.list_methods():
        pytest.skip("ma-fsar is not registered in this checkout")
    report = _info_json(capsys, "ma-fsar", "--weights", "random")
    method = fsar.create_method("ma-fsar", backbone="effnet-lite0+minilm", weights="random")
    assert report["kind"] == "method" and report["backbone"] == "effnet-lite0+minilm"
    assert report["total"] == sum(p.numel() for p in method.parameters())
    assert report["trainable"] == sum(p.numel() for p in method.parameters() if p.requires_grad)
    assert 0 < report["trainable"] < report["total"]
    frozen_encoder = [r for r in report["modules"] if r["module"].startswith("encoder.")]
    assert frozen_encoder and all(r["trainable"] == 0 for r in frozen_encoder)
    assert sum(r["total"] for r in report["modules"]) == report["total"]


def test_table_output(capsys):
    assert main(["info", "effnet-lite0+minilm", "--weights", "random"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("effnet-lite0+minilm (backbone): ")
    assert "trainable 0 (0.00 M)" in out
    assert "module" in out and "visual." in out and "total" in out.splitlines()[-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-thing"], "unknown method or backbone 'no-such-thing'; methods: .*backbones: .*effnet-lite0\\+minilm"),
        (["effnet-lite0+minilm", "--backbone", "clip-vit-b32"], "backbone; --backbone applies to methods only"),
        (["effnet-lite0+minilm", "-O", "novalue"], "KEY=VALUE"),
        (["effnet-lite0+minilm", "--weights", "/not/a/folder"], "cannot build 'effnet-lite0\\+minilm'"),
        (["effnet-lite0+minilm", "--depth", "0"], "--depth"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, argv, message):
    import re

    assert main(["info", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fsar info: error: ") and re.search(message, err)


def test_unknown_backbone_for_a_method(capsys):
    import fsar

    methods = fsar.list_methods()
    if not methods:
        pytest.skip("no method registered in this checkout")
    assert main(["info", methods[0], "--backbone", "resnet-9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'resnet-9000'" in err and "effnet-lite0+minilm" in err
