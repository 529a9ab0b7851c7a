"""DDP: two gloo CPU processes train a stand-in method through the real engine loop."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from engine_standins import TensorEpisodes, TinyMethod

from fsar.engine.config import TrainConfig, resolve_config
from fsar.engine.distributed import derive_seed, init_distributed, shutdown_distributed
from fsar.engine.logging import read_metrics
from fsar.engine.train import train

CLASSES = [f"c{i}" for i in range(6)]
K = 2  # tasks per step on each rank


def _config(out, **extra):
    values = dict(data="unused", out=str(out), way=3, shot=1, queries=2, episodes=6, tasks_per_step=K, lr=0.05,
                  val_every=0, checkpoint_every=1, seed=5, progress=False, lr_milestones=[0.9])
    values.update(extra)
    return resolve_config(TrainConfig, overrides=values)


def _worker(rank, world_size, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    try:
        config = _config(out)
        torch.manual_seed(config.seed)
        method = TinyMethod(dropout=0.0)
        source = TensorEpisodes(CLASSES, seed=derive_seed(config.seed, dist.rank))
        summary = train(config, method=method, train_source=source, dist=dist)
        torch.save({n: p.detach().clone() for n, p in method.named_parameters()}, f"{out}/params-rank{rank}.pt")
        with open(f"{out}/summary-rank{rank}.json", "w") as handle:
            json.dump({"effective": summary.tasks_per_step_effective, "losses": summary.losses,
                       "served": [list(s[2]) for s in source.served]}, handle)
    finally:
        shutdown_distributed(dist)


class Interleaved:
    """One process seeing, in each step, rank 0's K tasks then rank 1's K tasks."""

    def __init__(self, seed):
        self.class_names = CLASSES
        self.ranks = [TensorEpisodes(CLASSES, seed=derive_seed(seed, r)) for r in range(2)]

    def sample(self, index, *, train):
        step, position = divmod(index, 2 * K)
        rank, task = divmod(position, K)
        return self.ranks[rank].sample(step * K + task, train=train)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_and_double_the_tasks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    params = [torch.load(tmp_path / f"params-rank{r}.pt", weights_only=True) for r in range(2)]
    summaries = [json.loads((tmp_path / f"summary-rank{r}.json").read_text()) for r in range(2)]
    torch.manual_seed(5)
    start = TinyMethod(dropout=0.0)
    for name, value in params[0].items():
        assert torch.equal(value, params[1][name]), f"{name} differs across ranks"
    assert not torch.equal(params[0]["project.weight"], start.project.weight)  # it did train
    # each rank drew its own tasks
    assert summaries[0]["served"] != summaries[1]["served"]
    # effective tasks per step doubles: K per rank x 2 ranks, logged by rank 0
    assert summaries[0]["effective"] == 2 * K
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["split"] == "train"]
    assert [int(r["tasks"]) for r in rows] == [2 * K] * 3
    # and the averaged gradient is that of one process accumulating both ranks' 2K tasks
    torch.manual_seed(5)
    single = TinyMethod(dropout=0.0)
    train(_config(tmp_path / "single", tasks_per_step=2 * K, episodes=12), method=single,
          train_source=Interleaved(5))
    for name, value in single.named_parameters():
        torch.testing.assert_close(value.detach(), params[0][name], rtol=1e-5, atol=1e-6)
