"""Loading the golden files of the original implementations for the metric tests.

They live in ``tests/reference/`` (a copy of ``../shared/reference/``, so that a user's clone
checks equivalence with the original code too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).resolve().parent / "reference"


def load_reference(name: str) -> dict:
    """The arrays of ``REFERENCE/<name>.npz`` (a missing file is an error: they ship with the tests)."""
    path = REFERENCE / f"{name}.npz"
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
