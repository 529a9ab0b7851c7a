import json

import pytest
import torch
from engine_standins import TinyMethod

from fsar.engine.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_method_tensors,
    read_checkpoint,
    save_checkpoint,
)


def _save(run_dir, method, name="last", step=1, optimizer=None, names=None):
    return save_checkpoint(
        run_dir, name, method=method, method_name="tiny", backbone="tiny-backbone",
        config={"kind": "TrainConfig", "way": 3}, step=step, optimizer=optimizer, param_names=names,
    )


def test_round_trip_only_trainable_tensors(tmp_path):
    torch.manual_seed(0)
    method = TinyMethod()
    path = _save(tmp_path, method)
    record = json.loads(path.read_text())
    assert record["method"] == "tiny" and record["backbone"] == "tiny-backbone" and record["fsar_version"]
    checkpoint = read_checkpoint(tmp_path)
    tensors = checkpoint.model_tensors()
    assert set(tensors) == {"project.weight", "project.bias", "scale"}  # the frozen encoder is not stored
    other = TinyMethod()
    assert not torch.equal(other.project.weight, method.project.weight)
    load_method_tensors(other, checkpoint)
    assert torch.equal(other.project.weight, method.project.weight)


def test_refuses_other_method_or_backbone(tmp_path):
    _save(tmp_path, TinyMethod())
    checkpoint = read_checkpoint(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"method 'tiny' \(asked for 'ma-fsar'\)"):
        checkpoint.check_compatible(method="ma-fsar")
    with pytest.raises(CheckpointMismatchError, match="backbone 'tiny-backbone'"):
        checkpoint.check_compatible(method="tiny", backbone="clip-vit-b32")
    checkpoint.check_compatible(method="tiny", backbone="tiny-backbone")
    with pytest.raises(CheckpointMismatchError, match="shape"):
        load_method_tensors(TinyMethod(dim=4), checkpoint)


def test_unreadable_or_corrupt_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path)
    (tmp_path / "last.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(tmp_path)
    _save(tmp_path, TinyMethod())
    checkpoint = read_checkpoint(tmp_path)
    model_file = tmp_path / checkpoint.record["model_file"]
    model_file.write_bytes(model_file.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoint.model_tensors()


def test_interrupted_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    method = TinyMethod()
    _save(tmp_path, method, step=1)
    before = read_checkpoint(tmp_path).model_tensors()
    with torch.no_grad():
        method.project.weight.add_(1.0)
    import fsar.engine.checkpoint as module

    real_replace = module.os.replace

    def crash_on_record(src, dst):
        if str(dst).endswith("last.json"):
            raise KeyboardInterrupt("killed while writing the record")
        return real_replace(src, dst)

    monkeypatch.setattr(module.os, "replace", crash_on_record)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, method, step=2)
    monkeypatch.setattr(module.os, "replace", real_replace)
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.step == 1
    assert torch.equal(checkpoint.model_tensors()["project.weight"], before["project.weight"])
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temporary file left behind
    # the next successful save cleans up the orphaned step-2 tensors
    _save(tmp_path, method, step=3)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["last-model-step00000003.safetensors"]


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    method = TinyMethod()
    params = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    optimizer = torch.optim.Adam([p for _, p in params], lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        sum(p.square().sum() for _, p in params).backward()
        optimizer.step()
    _save(tmp_path, method, optimizer=optimizer, names=[n for n, _ in params])
    fresh = torch.optim.Adam([p for _, p in params], lr=1.0)
    checkpoint = read_checkpoint(tmp_path)
    checkpoint.load_optimizer(fresh, [n for n, _ in params])
    assert fresh.param_groups[0]["lr"] == 1e-3
    for p in (p for _, p in params):
        assert torch.equal(fresh.state[p]["exp_avg_sq"], optimizer.state[p]["exp_avg_sq"])
        assert float(fresh.state[p]["step"]) == 2
    with pytest.raises(CheckpointError, match="other parameters"):
        checkpoint.load_optimizer(fresh, ["x"])


def test_best_and_last_at_the_same_step_stay_readable(tmp_path):
    method = TinyMethod()
    _save(tmp_path, method, name="best", step=2)
    _save(tmp_path, method, name="last", step=2)
    _save(tmp_path, method, name="last", step=3)
    best = read_checkpoint(tmp_path, prefer="best")
    assert best.step == 2 and set(best.model_tensors()) == {"project.weight", "project.bias", "scale"}
    assert read_checkpoint(tmp_path, prefer="last").step == 3
