"""fsar chooses torch's thread count from the free cores; --threads / FSAR_THREADS / OMP_NUM_THREADS win."""

from __future__ import annotations

import pytest
import torch

from fsar.cli import main
from fsar.engine import threads


def test_free_cores_decide_without_an_explicit_choice(monkeypatch):
    monkeypatch.delenv("FSAR_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "running_elsewhere", lambda: 3)
    assert threads.choose_threads()[0] == 5
    monkeypatch.setattr(threads, "running_elsewhere", lambda: 30)  # a loaded machine: one thread, not zero
    assert threads.choose_threads()[0] == 1


def test_explicit_choices_win_in_order(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("FSAR_THREADS", "2")
    assert threads.choose_threads() == (2, "FSAR_THREADS")
    assert threads.choose_threads(4) == (4, "--threads")
    monkeypatch.setenv("FSAR_THREADS", "two")
    with pytest.raises(ValueError, match="FSAR_THREADS='two'"):
        threads.choose_threads()
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        threads.choose_threads(0)


def test_the_command_line_sets_torch_threads(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        # the flag is applied before the command runs (the command then fails on the empty root)
        main(["data", "splits"])
        assert main(["extract", str(tmp_path), "--out", str(tmp_path / "f"), "--threads", "1"]) != 0
        assert torch.get_num_threads() == 1
        assert main(["extract", str(tmp_path), "--out", str(tmp_path / "f"), "--threads", "0"]) == 2
        assert "--threads must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_running_elsewhere_reads_the_kernel_count():
    assert threads.running_elsewhere() >= 0 and threads.available_cores() >= 1
