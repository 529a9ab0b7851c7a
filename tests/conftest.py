"""Fixtures shared by the test modules (pytest finds them here; no import needed).

* ``single_thread``: tiny tensors on a shared 2-core machine run ~10x faster on one thread
  (no pool hand-offs); a module opts in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
* ``tiny_dataset``: nine classes of three 4-frame 16-px PNG clips (per-class colour and
  motion plus noise), written once per session; read it, never write into it.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    from engine_standins import write_tiny_dataset

    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", classes=9, clips=3)
