"""Every method learns (or, training-free, already solves) a toy temporal task on tiny configs.

The toy (``methods_toys.OrderTask``, cached features, ``features=True``): a class is a temporal
order of shared frame patterns in a small subspace, buried in noise. A few dozen Adam steps must
make the held-out loss fall clearly and lift accuracy well above chance (1/3, 3-way).
"""

from __future__ import annotations

import pytest
import torch

import fsar
from methods_toys import CLASSES, OrderTask, shared_embedded_pair, shared_frozen_clip

pytestmark = pytest.mark.usefixtures("single_thread")

BACKBONES = {"clip": (shared_frozen_clip, 32), "embedded": (shared_embedded_pair, 1280)}
# The toy is a temporal task, so MA-FSAR uses the paper's temporal α (0.25); dropout off so
# the held-out loss is a deterministic function of the weights.
TRAINABLE = {
    "ma-fsar": dict(dataset_kind="temporal", tpcm_heads=4, embed_dim=64, tpcm_dropout=0.0),
    "clip-fsar": dict(modulation_heads=4, embed_dim=64, modulation_dropout=0.0, training_classes=CLASSES),
}


def _held_out(method, task: OrderTask, episodes: int = 10) -> tuple[float, float]:
    """Mean loss (train-mode forward, no update) and accuracy on fixed held-out episodes."""
    method.train()
    torch.manual_seed(99)  # the random prompt-template draws
    loss = correct = total = 0.0
    with torch.no_grad():
        for index in range(episodes):
            episode = task.episode(10_000 + index)
            out = method(episode)
            loss += float(out.loss)
            correct += float((out.log_probs.argmax(-1) == episode.query_labels).sum())
            total += len(episode.query_labels)
    return loss / episodes, correct / total


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_loss_falls_and_accuracy_beats_chance(name, backbone):
    make_encoder, dim = BACKBONES[backbone]
    task = OrderTask(dim=dim)
    torch.manual_seed(0)
    method = fsar.create_method(name, backbone=make_encoder(), **TRAINABLE[name])
    loss_before, acc_before = _held_out(method, task)
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=5e-3)
    method.train()
    for step in range(40):
        out = method(task.episode(step))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    loss_after, acc_after = _held_out(method, task)
    # MA-FSAR on the embedded pair starts from its training-free core (OTAM on the raw features,
    # which already solves this toy, at a loss near the floor of the unscaled OTAM logits):
    # training must then lower the loss and stay well above chance; at this toy's lr (5e-3) it
    # costs a little accuracy (1.0 -> 0.88), which is why the engine validates the start too.
    starts_solved = getattr(method.config, "start", None) == "training-free"
    assert loss_after < (0.99 if starts_solved else 0.92) * loss_before, (loss_before, loss_after)
    if starts_solved:
        assert acc_before >= 0.9 and acc_after > 0.6, (acc_before, acc_after)
        return
    assert acc_after > 0.6 and acc_after > acc_before, (acc_before, acc_after)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_training_free_otam_solves_the_order_task(backbone):
    make_encoder, dim = BACKBONES[backbone]
    task = OrderTask(dim=dim)
    method = fsar.create_method("otam", backbone=make_encoder()).eval()
    correct = total = 0
    with torch.no_grad():
        for index in range(20):
            episode = task.episode(10_000 + index)
            correct += int((method(episode).log_probs.argmax(-1) == episode.query_labels).sum())
            total += len(episode.query_labels)
    assert correct / total > 0.6
