"""Loading the golden files of ``../shared/reference/`` for the metric tests (skips where absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def load_reference(name: str) -> dict:
    """The arrays of ``REFERENCE/<name>.npz``; skips the test when ``../shared`` is absent."""
    path = REFERENCE / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"reference file {path} not available (needs ../shared)")
    with np.load(path) as z:
        return {key: z[key] for key in z.files}


def reference_episode(z: dict, dtype=torch.float64):
    """``(support, support_labels, query, way)`` of a reference file, features cast to ``dtype``."""
    way = json.loads(str(z["meta_json"]))["way"]
    return (
        torch.from_numpy(z["support"]).to(dtype),
        torch.from_numpy(z["support_labels"]),
        torch.from_numpy(z["query"]).to(dtype),
        way,
    )
