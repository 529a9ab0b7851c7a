"""Episodic evaluation: mean accuracy with its 95% interval, per-class accuracy, confusion matrix.

Every figure carries its interval and episode count: ``ci95 = 1.96 * std / sqrt(n)`` over the
per-episode accuracies, with the population std (``ddof=0``) as in the OTAM/TRX/CLIP-FSAR
evaluation code. Episodes come from the source's seeded sampler, so two methods evaluated with
the same seed see the same tasks. The query labels are taken off the inputs before the method
sees them: a method cannot peek at the answer even by accident.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from fsar import __version__
from fsar.data.inputs import EpisodeInputs
from fsar.engine.checkpoint import atomic_write_bytes, atomic_write_json

__all__ = ["EpisodeSource", "EvalResult", "confidence_interval", "evaluate", "plot_result", "save_result"]


class EpisodeSource(Protocol):
    """Where the engine gets episodes from (frames through the data layer, or cached features).

    ``class_names``: every class the source can draw, ``sample(index, train=...)``: the
    model-ready episode ``index`` (deterministic from the source's seed and ``index``).
    """

    class_names: list[str]

    def sample(self, index: int, *, train: bool) -> EpisodeInputs: ...


def confidence_interval(accuracies: list[float] | torch.Tensor) -> tuple[float, float, float]:
    """(mean, ci95, std) of per-episode accuracies; ci95 = 1.96 * std / sqrt(n), std with ddof=0."""
    values = torch.as_tensor(accuracies, dtype=torch.float64)
    if values.numel() == 0:
        raise ValueError("no episodes to summarise")
    mean = values.mean().item()
    std = values.std(correction=0).item()
    return mean, 1.96 * std / math.sqrt(values.numel()), std


@dataclass
class EvalResult:
    """Accuracy (fraction) with its 95% interval over ``episodes`` episodes, plus the breakdown.

    ``confusion[i][j]``: queries of class ``class_names[i]`` predicted as ``class_names[j]``
    (only classes of the same episode can be confused).
    """

    accuracy: float
    ci95: float
    std: float
    episodes: int
    class_names: list[str]
    per_class_accuracy: dict[str, float]
    per_class_queries: dict[str, int]
    confusion: list[list[int]]
    episode_accuracies: list[float] = field(repr=False, default_factory=list)
    seconds: float = 0.0

    def to_dict(self, header: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = dict(header or {})
        out.update(
            accuracy=self.accuracy,
            ci95=self.ci95,
            std=self.std,
            episodes=self.episodes,
            accuracy_percent=f"{100 * self.accuracy:.2f} ± {100 * self.ci95:.2f}",
            per_class_accuracy=self.per_class_accuracy,
            per_class_queries=self.per_class_queries,
            class_names=self.class_names,
            confusion_matrix=self.confusion,
            seconds=round(self.seconds, 2),
            fsar_version=__version__,
            # per episode, in episode order: what `fsar eval --compare` pairs with another result
            episode_accuracies=[round(a, 6) for a in self.episode_accuracies],
        )
        return out


@torch.no_grad()
def evaluate(
    method: torch.nn.Module,
    source: EpisodeSource,
    *,
    episodes: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "eval",
) -> EvalResult:
    """Run ``episodes`` episodes (indices 0..episodes-1 of ``source``) in eval mode."""
    from tqdm import tqdm

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    was_training = method.training
    method.eval()
    index_of = {name: i for i, name in enumerate(source.class_names)}
    n = len(index_of)
    cells: list[int] = []  # true * n + predicted, global class indices, one per query
    accuracies = []
    on_cpu = torch.device(device).type == "cpu"
    # Episodes per call: a method that batches evaluation episodes (FewShotMethod.evaluation_batch)
    # gets consecutive feature episodes of one shape through predict_episodes; the records stay per
    # episode. Episodes of frames (large, and the encoder's cost dominates) go one at a time.
    batch = max(1, int(getattr(method, "evaluation_batch", lambda: 1)()))
    pending: list[tuple[EpisodeInputs, list[int]]] = []  # (hidden episode, its query labels)

    def score(chunk: list[tuple[EpisodeInputs, list[int]]]) -> None:
        hidden = [inputs for inputs, _ in chunk]
        outputs = method.predict_episodes(hidden) if len(hidden) > 1 else [method(hidden[0]).log_probs]
        if len(outputs) != len(chunk):
            raise ValueError(f"method returned {len(outputs)} predictions for {len(chunk)} episodes")
        for (inputs, labels), log_probs in zip(chunk, outputs):
            if log_probs.shape != (len(labels), inputs.way):
                raise ValueError(
                    f"method returned log_probs of shape {tuple(log_probs.shape)}, "
                    f"expected (n_query, way) = ({len(labels)}, {inputs.way})"
                )
            predicted = log_probs.float().argmax(dim=1).tolist()
            accuracies.append(sum(p == y for p, y in zip(predicted, labels)) / len(labels))
            to_global = [index_of[c] for c in inputs.class_names]
            cells.extend(to_global[y] * n + to_global[p] for p, y in zip(predicted, labels))

    def shape(inputs: EpisodeInputs) -> tuple:
        return inputs.way, inputs.features, tuple(inputs.support.shape), tuple(inputs.query.shape)

    start = time.perf_counter()
    try:
        for index in tqdm(range(episodes), desc=desc, disable=not progress, leave=False, unit="ep"):
            inputs = source.sample(index, train=False)
            if inputs.query_labels is None:
                raise ValueError(f"episode {index} has no query labels to score against")
            labels = inputs.query_labels.tolist()
            hidden = replace(inputs, query_labels=None)  # the method never sees them
            if not on_cpu:
                hidden = hidden.to(device)
            if pending and shape(pending[0][0]) != shape(hidden):
                score(pending)
                pending = []
            pending.append((hidden, labels))
            if len(pending) >= batch or not hidden.features:
                score(pending)
                pending = []
        if pending:
            score(pending)
    finally:
        method.train(was_training)
    confusion = torch.bincount(torch.tensor(cells, dtype=torch.int64), minlength=n * n).reshape(n, n)
    mean, ci95, std = confidence_interval(accuracies)
    per_class, per_count = {}, {}
    for i, name in enumerate(source.class_names):
        total = int(confusion[i].sum())
        if total:
            per_class[name] = confusion[i, i].item() / total
            per_count[name] = total
    return EvalResult(
        accuracy=mean,
        ci95=ci95,
        std=std,
        episodes=len(accuracies),
        class_names=list(source.class_names),
        per_class_accuracy=per_class,
        per_class_queries=per_count,
        confusion=confusion.tolist(),
        episode_accuracies=accuracies,
        seconds=time.perf_counter() - start,
    )


def plot_result(result: EvalResult, png_path: str | Path, *, title: str = "") -> Path:
    """Per-class accuracy bars and the row-normalised confusion matrix, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in result.class_names if n in result.per_class_accuracy]
    rows = [result.class_names.index(n) for n in names]
    confusion = torch.tensor(result.confusion, dtype=torch.float64)[rows][:, rows]
    confusion = confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    short = [n if len(n) <= 28 else n[:26] + "…" for n in names]
    size = max(4.0, 0.35 * len(names) + 2)
    fig, (bars, matrix) = plt.subplots(1, 2, figsize=(2 * size + 2, size), gridspec_kw={"width_ratios": [1, 1.2]})
    bars.barh(range(len(names)), [100 * result.per_class_accuracy[n] for n in names], color="tab:blue")
    bars.axvline(100 * result.accuracy, color="black", ls="--", lw=1, label="mean")
    bars.set_yticks(range(len(names)), short, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 100)
    bars.set_xlabel("per-class accuracy (%)")
    bars.legend(loc="lower right", fontsize=8)
    image = matrix.imshow(confusion.numpy(), cmap="Blues", vmin=0, vmax=1)
    matrix.set_xticks(range(len(names)), short, rotation=90, fontsize=7)
    matrix.set_yticks(range(len(names)), short, fontsize=7)
    matrix.set_xlabel("predicted")
    matrix.set_ylabel("true")
    fig.colorbar(image, ax=matrix, fraction=0.046, label="fraction of the class's queries")
    fig.suptitle(
        (title + "\n" if title else "")
        + f"accuracy {100 * result.accuracy:.2f} ± {100 * result.ci95:.2f}% (95% CI, {result.episodes} episodes)"
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    png_path = Path(png_path)
    atomic_write_bytes(png_path, buffer.getvalue())
    return png_path


def save_result(
    result: EvalResult,
    json_path: str | Path | None,
    *,
    header: dict[str, Any],
    png_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the result JSON (``header`` first: method, backbone, way, shot, ...) and the PNG."""
    record = result.to_dict(header)
    if json_path is not None:
        atomic_write_json(json_path, record)
    if png_path is not None:
        title = " ".join(str(header.get(k, "")) for k in ("method", "backbone"))
        title += f" — {header.get('way')}-way {header.get('shot')}-shot"
        plot_result(result, png_path, title=title.strip())
    return json.loads(json.dumps(record))
