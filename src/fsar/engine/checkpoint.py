"""Checkpoints: trainable tensors in safetensors plus a JSON sidecar, written atomically.

A run directory holds up to two checkpoints, each a JSON record naming its tensor files:

* ``last.json``: the resumable state (model tensors, Adam moments, schedule position);
* ``best.json``: the model tensors with the best validation accuracy so far.

Tensor files carry the record and step in their name (``last-model-step00000100.safetensors``),
so a new checkpoint never overwrites the files an existing record points to. Each file is written to
a temporary name in the same directory and moved into place with ``os.replace``; the JSON
record is replaced last. An interruption at any moment therefore leaves the previous record
and every file it names intact. Files no record names any more are removed afterwards.

Only safetensors and JSON are read back: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fsar import __version__
from fsar.data.integrity import remove_stale_temporaries
from fsar.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatchError",
    "atomic_write_bytes",
    "atomic_write_json",
    "find_checkpoint",
    "load_method_tensors",
    "read_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "fsar-checkpoint/1"


class CheckpointMismatchError(CheckpointError):
    """A checkpoint trained with another method or backbone than the one asked for."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name lets a later run tell a killed writer's leftover from a live one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    _atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write a safetensors file atomically; return its sha256."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))
    return _sha256(path)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param index>.<key>"``) and JSON groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"{index}.{key}"] = value
    groups = []
    for group in state["param_groups"]:
        group = dict(group)
        group["betas"] = list(group["betas"]) if "betas" in group else None
        groups.append({k: v for k, v in group.items() if v is not None})
    return tensors, groups


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    param_groups = []
    for group in groups:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        param_groups.append(group)
    return {"state": state, "param_groups": param_groups}


@dataclass
class Checkpoint:
    """A checkpoint record (the JSON sidecar) and the directory its files live in."""

    path: Path
    record: dict[str, Any]

    @property
    def method(self) -> str:
        return self.record["method"]

    @property
    def backbone(self) -> str:
        return self.record["backbone"]

    @property
    def step(self) -> int:
        return int(self.record["step"])

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    def _load(self, key: str) -> dict[str, torch.Tensor]:
        name = self.record.get(f"{key}_file")
        if not name:
            raise CheckpointError(f"{self.path}: this checkpoint has no {key} state")
        path = self.path.parent / name
        if not path.is_file():
            raise CheckpointError(f"{self.path}: its {key} file {path} is missing")
        expected = self.record.get(f"{key}_sha256")
        if expected and _sha256(path) != expected:
            raise CheckpointError(f"{path}: content does not match the sha256 in {self.path} (corrupted?)")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return self._load("model")

    def load_optimizer(self, optimizer: torch.optim.Optimizer, param_names: list[str]) -> None:
        """Restore Adam's moments; the parameter order must match the one saved."""
        saved_names = self.record.get("optimizer_param_names")
        if saved_names != param_names:
            raise CheckpointError(
                f"{self.path}: the optimizer was saved for other parameters "
                f"({len(saved_names or [])} saved, {len(param_names)} now)"
            )
        tensors = self._load("optimizer")
        optimizer.load_state_dict(_optimizer_state(tensors, self.record["optimizer_param_groups"]))

    def check_compatible(self, *, method: str | None = None, backbone: str | None = None) -> None:
        """Refuse a checkpoint of another method or backbone, naming both."""
        wrong = []
        if method is not None and method != self.method:
            wrong.append(f"method {self.method!r} (asked for {method!r})")
        if backbone is not None and backbone != self.backbone:
            wrong.append(f"backbone {self.backbone!r} (asked for {backbone!r})")
        if wrong:
            raise CheckpointMismatchError(
                f"{self.path} was trained with {' and '.join(wrong)}; "
                "drop --method/--backbone to use the checkpoint's, or pick a matching checkpoint"
            )


def find_checkpoint(path: str | Path, *, prefer: str = "best") -> Path:
    """A run directory -> its ``best.json`` (or ``last.json`` when there is no best);
    with ``prefer="last"`` (a resume) its ``last.json`` only; a JSON record path -> itself."""
    path = Path(path)
    if path.is_dir():
        if prefer == "last":
            # A "last" request is a resume: best.json holds weights only, no optimizer state.
            if (path / "last.json").is_file():
                return path / "last.json"
            has_best = (path / "best.json").is_file()
            raise CheckpointError(
                f"{path}: no last checkpoint (last.json) to resume from"
                + ("; best.json holds the best weights only, not the optimizer state: evaluate it with "
                   "`fsar eval --checkpoint`, or train again into another --out" if has_best else "")
            )
        for name in ("best", "last"):
            if (path / f"{name}.json").is_file():
                return path / f"{name}.json"
        raise CheckpointError(f"{path}: no checkpoint in this directory (no best.json or last.json)")
    if path.is_file():
        return path
    raise CheckpointError(f"{path}: no such checkpoint file or run directory")


def read_checkpoint(path: str | Path, *, prefer: str = "best") -> Checkpoint:
    json_path = find_checkpoint(path, prefer=prefer)
    try:
        record = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{json_path}: not a readable checkpoint record ({error})") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{json_path}: not an fsar checkpoint record (format {CHECKPOINT_FORMAT})")
    for key in ("method", "backbone", "step", "config", "model_file"):
        if key not in record:
            raise CheckpointError(f"{json_path}: checkpoint record lacks {key!r}")
    expected = record.get("record_sha256")
    if expected is not None and expected != _record_digest(record):
        raise CheckpointError(
            f"{json_path}: the checkpoint record was changed after it was written (record_sha256 does not "
            "match); an edited method, backbone or config would rebuild another model than the one trained. "
            "Restore the file, or train again"
        )
    return Checkpoint(json_path, record)


def _record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON, without the digest itself."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_method_tensors(method: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load the checkpoint's tensors into ``method``'s trainable tensors, exactly.

    Every saved tensor must be a trainable tensor of ``method`` with the same shape, and
    every trainable tensor must be saved: anything else means the checkpoint belongs to a
    differently configured model, and a partial load would be a silent wrong answer.
    """
    tensors = checkpoint.model_tensors()
    expected = method.trainable_state_dict()
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if unknown or missing:
        raise CheckpointMismatchError(
            f"{checkpoint.path}: tensors do not match this {checkpoint.method} model "
            f"(unexpected: {unknown[:5]}{'...' if len(unknown) > 5 else ''}; "
            f"missing: {missing[:5]}{'...' if len(missing) > 5 else ''})"
        )
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise CheckpointMismatchError(
                f"{checkpoint.path}: tensor {name} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[name].shape)}"
            )
    method.load_state_dict(tensors, strict=False)


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    *,
    method: torch.nn.Module,
    method_name: str,
    backbone: str,
    config: dict[str, Any],
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    param_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``name`` (``last`` or ``best``) of ``method`` at ``step`` into ``run_dir``.

    With ``optimizer`` (and the ``param_names`` in its order) the checkpoint is resumable.
    Returns the JSON record's path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"fsar_version": __version__, "method": method_name, "backbone": backbone, "step": str(step)}
    record: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "fsar_version": __version__,
        "name": name,
        "method": method_name,
        "backbone": backbone,
        "step": step,
    }
    # Named per record: safetensors' header order is not deterministic, so rewriting a file that
    # another record points to (best and last at the same step) would break that record's sha256.
    model_file = f"{name}-model-step{step:08d}.safetensors"
    record["model_file"] = model_file
    record["model_sha256"] = _save_tensors(run_dir / model_file, method.trainable_state_dict(), metadata)
    if optimizer is not None:
        tensors, groups = _optimizer_tensors(optimizer)
        optimizer_file = f"{name}-optimizer-step{step:08d}.safetensors"
        record["optimizer_file"] = optimizer_file
        record["optimizer_sha256"] = _save_tensors(run_dir / optimizer_file, tensors, metadata)
        record["optimizer_param_groups"] = groups
        record["optimizer_param_names"] = list(param_names or [])
    record.update(extra or {})
    record["config"] = config
    # JSON round trip first, so that the digest covers exactly what a reader will see.
    record = json.loads(json.dumps(record))
    record["record_sha256"] = _record_digest(record)
    json_path = run_dir / f"{name}.json"
    atomic_write_json(json_path, record)
    _remove_unreferenced(run_dir)
    return json_path


def _remove_unreferenced(run_dir: Path) -> None:
    """Delete tensor files that neither ``best.json`` nor ``last.json`` names."""
    keep = set()
    for name in ("best", "last"):
        try:
            record = json.loads((run_dir / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        keep.update(record.get(k) for k in ("model_file", "optimizer_file"))
    for pattern in ("*-model-step*.safetensors", "*-optimizer-step*.safetensors"):
        for path in run_dir.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)
