"""Prompt templates, class-name normalisation and the cached class text bank."""

from __future__ import annotations

import pytest
import torch

from fsar.encoders.prompts import TEMPLATES, ClassTextBank, normalise_class_name


class CountingTextEncoder:
    """Deterministic fake text encoder: a text's feature is a fixed function of the string."""

    text_dim = 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            g = torch.Generator().manual_seed(sum((i + 1) * ord(c) for i, c in enumerate(text)) % (2**31))
            rows.append(torch.randn(self.text_dim, generator=g))
        return torch.stack(rows)


def test_the_sixteen_templates_of_table_10():
    assert len(TEMPLATES) == 16 and len(set(TEMPLATES)) == 16
    assert all(t.count("{}") == 1 for t in TEMPLATES)
    assert TEMPLATES[0] == "{}"
    assert TEMPLATES[1] == "a photo of action {}"
    assert TEMPLATES[10] == "Look, the human is {}"
    assert TEMPLATES[11] == "Can you recognize the action of {}"
    assert TEMPLATES[-2:] == ("The man is {}", "The woman is {}")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Pushing [something] from left to right", "pushing something from left to right"),
        ("Putting [something] into [something]", "putting something into something"),
        ("  Tearing  [something]  into two pieces ", "tearing something into two pieces"),
        ("brush_hair", "brush hair"),
        ("playing_guitar", "playing guitar"),
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("abseiling", "abseiling"),
        ("Bending something until it breaks", "bending something until it breaks"),
    ],
)
def test_normalise_class_name(raw, expected):
    assert normalise_class_name(raw) == expected


def test_normalise_rejects_empty_and_non_strings():
    with pytest.raises(ValueError, match="empty"):
        normalise_class_name(" [] ")
    with pytest.raises(TypeError):
        normalise_class_name(3)


def test_prompts_fill_normalised_names():
    bank = ClassTextBank(CountingTextEncoder())
    prompts = bank.prompts("Pushing [something] from left to right")
    assert prompts[0] == "pushing something from left to right"
    assert prompts[14] == "The man is pushing something from left to right"
    raw = ClassTextBank(CountingTextEncoder(), normalise=False).prompts("Pushing [x]")
    assert raw[0] == "Pushing [x]"


def test_eval_features_are_the_mean_over_templates_and_cached():
    enc = CountingTextEncoder()
    bank = ClassTextBank(enc)
    names = ["brush_hair", "Pushing [something] from left to right", "cartwheel"]
    out = bank.features(names, train=False)
    assert out.shape == (3, 8)
    expected = torch.stack([enc.encode_text(bank.prompts(n)).mean(dim=0) for n in names])
    torch.testing.assert_close(out, expected)
    enc.calls.clear()
    # Repeated calls, a permutation and a subset do not call the encoder again.
    torch.testing.assert_close(bank.features(names, train=False), out)
    torch.testing.assert_close(bank.features(names[::-1], train=False), out.flip(0))
    bank.features(names[:1], train=True, generator=torch.Generator().manual_seed(0))
    assert enc.calls == []
    # A new class costs exactly one call with its 16 prompts.
    bank.features(names + ["dribbling basketball"], train=False)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == 16
    assert len(bank) == 4


def test_first_fill_is_one_batched_call():
    enc = CountingTextEncoder()
    bank = ClassTextBank(enc)
    bank.features(["a", "b", "a", "c"], train=False)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == 3 * 16


def test_training_draws_one_template_per_row():
    enc = CountingTextEncoder()
    bank = ClassTextBank(enc)
    names = ["climbing"] * 64 + ["diving"] * 64
    out = bank.features(names, train=True, generator=torch.Generator().manual_seed(3))
    assert out.shape == (128, 8)
    per_template = bank.template_features(["climbing", "diving"])  # (2, 16, 8)
    # Every row is exactly one of its own class's template features.
    for row, name in zip(out, names):
        options = per_template[0 if name == "climbing" else 1]
        assert torch.isclose(options, row).all(dim=1).sum() == 1
    # Rows draw independently: many different templates are used, not one per call.
    used = {int(torch.isclose(per_template[0], r).all(dim=1).nonzero()) for r in out[:64]}
    assert len(used) >= 10
    # Same generator seed -> same draws; another seed -> different draws.
    again = bank.features(names, train=True, generator=torch.Generator().manual_seed(3))
    other = bank.features(names, train=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_bad_inputs():
    bank = ClassTextBank(CountingTextEncoder())
    with pytest.raises(ValueError, match="at least one"):
        bank.features([], train=False)
    with pytest.raises(ValueError, match="placeholder"):
        ClassTextBank(CountingTextEncoder(), templates=["no placeholder"])

    class Broken:
        def encode_text(self, texts):
            return torch.zeros(len(texts) - 1, 4)

    with pytest.raises(ValueError, match="Broken.encode_text"):
        ClassTextBank(Broken()).features(["x"], train=False)


def test_with_the_embedded_encoder_random_weights():
    from fsar.encoders.embedded import EmbeddedEncoder

    bank = ClassTextBank(EmbeddedEncoder(weights="random"))
    out = bank.features(["Pushing [something] from left to right", "Folding something"], train=False)
    assert out.shape == (2, 384) and torch.isfinite(out).all()
