"""`fsar demo` (interim: render, check, sample an episode)."""

from __future__ import annotations

from fsar.cli import main


def test_demo_quick_renders_checks_and_prints_an_episode(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "OK: 5-way 1-shot" in printed
    assert printed.count("support: ") == 5 and printed.count("query:   ") == 5
    assert str(tmp_path / "synth-quick") in printed
    # Same seed, same episode (and the rendered set is reused).
    assert main(["demo", "--out", str(tmp_path), "--quick", "--seed", "1"]) == 0
    again = capsys.readouterr().out
    assert again.split("episode 0")[1] == printed.split("episode 0")[1]
