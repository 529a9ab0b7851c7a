"""Weights fingerprints: which weights produced a feature cache, cheap enough for a 7B model.

:func:`weights_fingerprint` reads a bounded amount of data whatever the model size:

* the **layout**: every parameter and buffer name with its shape and dtype (the architecture and
  precision; changing either changes the features);
* a deterministic **tensor sample**: 256 evenly spaced elements of every parameter and buffer
  (all of a smaller one), read in one device-to-host copy;
* the **weight files**, when the encoder says where its weights came from
  (:meth:`fsar.encoders.base.Encoder.weight_files`: a local folder, the hub cache, the files of
  an installed package): each file's base name, size in bytes, and a SHA-256 of its first
  MiB plus 16 evenly spaced 64 KiB blocks. Modification times are not used, so a copied or
  re-downloaded folder of the same files keeps its fingerprint, and so do two spellings of the
  same weights (a folder vs. a hub id).

An encoder that loads its weights lazily (the video MLLMs) gives :meth:`weights_identity` (the
family, the model config, the dtype): with weight files, that identity and the files replace the
layout and the tensor sample, so the fingerprint is known before (and without) loading the weights.

Cost: O(number of tensors + number of files), not O(bytes): a few milliseconds for a 7B model
on a GPU (see ``benchmarks/weights_fingerprint.py``), where hashing every byte took seconds to
minutes. What it can miss: two weight sets with identical layout, identical files (or no files)
that differ only in elements outside the sample, e.g. a fine-tune that touched a handful of
weights in memory. Encoders that are built from files and then changed in memory should expose
the change in ``stream_key()``.

:func:`legacy_weights_fingerprint` is the previous scheme (SHA-256 over every byte), kept only to
recognise caches written before this one (their index has no ``fingerprint_scheme``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

__all__ = [
    "FINGERPRINT_SCHEME",
    "legacy_weights_fingerprint",
    "weight_file_digest",
    "weights_fingerprint",
]

#: Recorded beside the fingerprint in a cache index; an index without it holds a legacy fingerprint.
FINGERPRINT_SCHEME = "layout+sample256+files/2"

SAMPLE_ELEMENTS = 256
FILE_HEAD_BYTES = 1 << 20
FILE_BLOCKS = 16
FILE_BLOCK_BYTES = 64 << 10


def _tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    # A module with parts built on first use (the embedded pair's text tower) says what its state
    # is once built (``fingerprint_state``), so the fingerprint does not depend on their use.
    hook = getattr(module, "fingerprint_state", None)
    state = hook() if callable(hook) else module.state_dict(keep_vars=True)
    return [(name, state[name]) for name in sorted(state) if isinstance(state[name], torch.Tensor)]


def _sample(tensor: torch.Tensor) -> torch.Tensor:
    """Up to SAMPLE_ELEMENTS evenly spaced elements of ``tensor`` as raw bytes (uint8), on its device."""
    flat = tensor.detach().reshape(-1)
    if flat.numel() > SAMPLE_ELEMENTS:
        positions = torch.linspace(0, flat.numel() - 1, SAMPLE_ELEMENTS, dtype=torch.float64).round().long()
        flat = flat[positions.to(flat.device)]
    return flat.contiguous().view(torch.uint8)


def weight_file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) over a file's base name, size, first MiB and 16 evenly spaced 64 KiB blocks."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(FILE_HEAD_BYTES))
        if size > FILE_HEAD_BYTES:
            span = max(size - FILE_BLOCK_BYTES, 0)
            for block in range(FILE_BLOCKS):
                handle.seek(span * block // max(FILE_BLOCKS - 1, 1))
                digest.update(handle.read(FILE_BLOCK_BYTES))
    return digest.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Short (16 hex) fingerprint of a module's weights: layout + tensor sample + weight files.

    See the module docstring for exactly what is read. The weight files come from
    ``module.weight_files()`` when the module has that hook (every :class:`~fsar.encoders.Encoder`
    does; ``()`` for weights built in memory, e.g. ``weights="random"``): so an encoder built from a
    folder or hub files is fingerprinted by its files plus the sample, any other one by its layout
    plus the sample. Two encoders with the same name but different weights (random vs.
    pretrained, another checkpoint, another seed) get different fingerprints.
    """
    hook = getattr(module, "weight_files", None)
    files = sorted((Path(p) for p in (hook() if callable(hook) else ())), key=lambda p: p.name)
    identity = getattr(module, "weights_identity", None)
    identity = identity() if callable(identity) and files else None
    if identity is not None:  # known without loading the weights: the encoder's identity + its files
        digest = hashlib.sha256(f"{FINGERPRINT_SCHEME}/identity\0".encode())
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        for path in files:
            digest.update(weight_file_digest(path).encode())
        return digest.hexdigest()[:16]
    digest = hashlib.sha256(FINGERPRINT_SCHEME.encode())
    tensors = _tensors(module)
    samples: dict[torch.device, list[torch.Tensor]] = {}
    for name, tensor in tensors:
        digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
        if tensor.device.type != "meta":
            samples.setdefault(tensor.device, []).append(_sample(tensor))
    for device in sorted(samples, key=str):
        with torch.no_grad():
            digest.update(torch.cat(samples[device]).cpu().numpy().tobytes())  # one copy per device
    for path in files:
        digest.update(weight_file_digest(path).encode())
    return digest.hexdigest()[:16]


def legacy_weights_fingerprint(module: torch.nn.Module) -> str:
    """The fingerprint of caches written before :data:`FINGERPRINT_SCHEME`: SHA-256 over every
    parameter and buffer (names, shapes, dtypes, bytes). O(bytes): only for reading old caches."""
    digest = hashlib.sha256()
    for name, tensor in _tensors(module):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
