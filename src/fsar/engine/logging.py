"""Training logs: one CSV (``metrics.csv``), TensorBoard event files (``tb/``), a learning-curve PNG.

The CSV is the record the PNG is drawn from; TensorBoard is for watching a run live.
On ``--resume`` rows after the resumed step are dropped (they belong to the interrupted
part of the run that the resumed run repeats), and TensorBoard purges the same steps.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from fsar.engine.checkpoint import atomic_write_bytes

__all__ = ["CSV_COLUMNS", "RunLogger", "draw_learning_curve", "read_metrics"]

CSV_COLUMNS = ["step", "split", "loss", "accuracy", "ci95", "lr", "tasks", "episodes", "elapsed_s"]


def read_metrics(csv_path: str | Path) -> list[dict[str, str]]:
    path = Path(csv_path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class RunLogger:
    """Writes training and validation rows; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.csv_path = self.run_dir / "metrics.csv"
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rows = read_metrics(self.csv_path) if resume_step is not None else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.csv_path, buffer.getvalue().encode())
        self._csv = open(self.csv_path, "a", newline="")
        self._csv_writer = csv.DictWriter(self._csv, fieldnames=CSV_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a declared dependency
            self._writer = None
        else:
            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)

    def _row(self, **values) -> None:
        row = {k: ("" if values.get(k) is None else values[k]) for k in CSV_COLUMNS}
        self._csv_writer.writerow(row)
        self._csv.flush()

    def log_train(self, step: int, *, loss: float, lr: float, tasks: int, elapsed_s: float) -> None:
        if not self.enabled:
            return
        self._row(step=step, split="train", loss=f"{loss:.6f}", lr=f"{lr:.3g}", tasks=tasks, elapsed_s=f"{elapsed_s:.2f}")
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._writer.add_scalar("train/lr", lr, step)

    def log_val(self, step: int, *, accuracy: float, ci95: float, episodes: int, elapsed_s: float) -> None:
        if not self.enabled:
            return
        self._row(
            step=step, split="val", accuracy=f"{accuracy:.6f}", ci95=f"{ci95:.6f}", episodes=episodes,
            elapsed_s=f"{elapsed_s:.2f}",
        )
        if self._writer is not None:
            self._writer.add_scalar("val/accuracy", accuracy, step)
            self._writer.add_scalar("val/ci95", ci95, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._csv.close()
        if self._writer is not None:
            self._writer.close()


def draw_learning_curve(csv_path: str | Path, png_path: str | Path, *, title: str = "") -> Path:
    """Training loss (raw and smoothed) and validation accuracy with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    train = [(int(r["step"]), float(r["loss"])) for r in rows if r["split"] == "train"]
    val = [(int(r["step"]), float(r["accuracy"]), float(r["ci95"])) for r in rows if r["split"] == "val"]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    if train:
        steps, losses = zip(*train)
        loss_axis.plot(steps, losses, color="tab:blue", alpha=0.3, lw=1, label="train loss")
        window = max(1, len(losses) // 20)
        smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
        loss_axis.plot(steps, smooth, color="tab:blue", lw=2, label=f"train loss (mean of {window})")
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("loss", color="tab:blue")
    if val:
        acc_axis = loss_axis.twinx()
        steps, acc, ci = zip(*val)
        acc_axis.errorbar(steps, [100 * a for a in acc], yerr=[100 * c for c in ci], color="tab:orange",
                          marker="o", capsize=3, label="val accuracy ±95% CI")
        acc_axis.set_ylabel("validation accuracy (%)", color="tab:orange")
        lo = min(100 * (a - c) for a, c in zip(acc, ci))
        # a perfect run (every val point 100 ± 0) would give equal limits: keep a 10-point band
        acc_axis.set_ylim(min(90.0, max(0.0, math.floor(lo / 10) * 10)), 100)
    loss_axis.set_title(title or "learning curve")
    fig.tight_layout()
    png_path = Path(png_path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(png_path, buffer.getvalue())
    return png_path
