"""What a method matched, as data and as a picture (``Recognizer.explain``, ``fsar predict --explain``).

For one query and its top classes the explanation holds:

* the query's sampled frames and, per class, the **best-matching support clip** (the one of
  lowest alignment cost) with its frames;
* the **alignment** the method's metric finds between the two, on the per-frame encoder
  features the recogniser holds (``d = 1 - cos`` between frames):

  - OTAM (``otam``, and methods built on it: ``ma-fsar``, ``clip-fsar``): the hard OTAM path,
    the λ -> 0 limit of the soft alignment (:func:`otam_path`): every query frame is matched to
    one support frame, in order, each step advancing the support frame by 0 or 1, entering and
    leaving anywhere;
  - Bi-MHM (``bimhm``): every query frame's nearest support frame (:func:`nearest_frames`);
  - LGA (``lga``, AB-MHM): the stages of both clips (its segmentation) and, inside each pair of
    aligned stages, every query frame's nearest support frame, with the class's stage
    descriptions;
  - any other metric (``proto``, ``trx``): nearest frames, labelled as such (that metric does
    not align frames itself);

* the per-class **scores** (the recogniser's calibrated probabilities; the text branch's own
  probabilities too for text-aware methods that report them) and the **class text** that
  contributed (the prompt of MA-FSAR / CLIP-FSAR, LGA's stage descriptions).

Trained methods align their transformed features (TPCM, fusion), which the recogniser does not
keep; the picture says that its alignment is drawn on the backbone features.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["ClassMatch", "Explanation", "explain", "nearest_frames", "otam_path"]

#: Method names -> alignment kinds, for methods whose metric attribute does not say it.
_TEXT_PARTS = ("log_p_q2t", "log_p_vt")


def otam_path(dist: torch.Tensor) -> tuple[list[int], float]:
    """Hard OTAM alignment of ``dist (R, C)`` (rows = "from" frames, as in :mod:`fsar.metrics.otam`).

    Every column ``c`` is assigned one row ``r_c``; ``r_{c+1} - r_c`` is 0 or 1; the first and
    last row are free (OTAM's zero padding columns). Returns (rows per column, total cost), the
    minimum over all such paths: the λ -> 0 limit of ``otam_cum_dist(..., variant="paper")``.
    """
    d = dist.detach().double().cpu()
    rows, cols = d.shape
    cost = torch.full((cols, rows), float("inf"), dtype=torch.float64)
    back = torch.zeros((cols, rows), dtype=torch.long)
    cost[0] = d[:, 0]
    for c in range(1, cols):
        stay = cost[c - 1]
        advance = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), cost[c - 1, :-1]])
        take_advance = advance < stay
        cost[c] = d[:, c] + torch.where(take_advance, advance, stay)
        back[c] = torch.arange(rows) - take_advance.long()
    row = int(torch.argmin(cost[-1]))
    total = float(cost[-1, row])
    path = [row]
    for c in range(cols - 1, 0, -1):
        row = int(back[c, row])
        path.append(row)
    return path[::-1], total


def nearest_frames(dist: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[list[int], float]:
    """Every query frame's nearest support frame in ``dist (T_q, T_s)`` (Bi-MHM's query side);
    ``mask (T_q, T_s)`` bool restricts the candidates. Returns (support frame per query frame,
    Bi-MHM mean distance of both directions, unrestricted)."""
    d = dist.detach().double().cpu()
    masked = d if mask is None else d.masked_fill(~mask.cpu(), float("inf"))
    nearest = masked.argmin(1).tolist()
    return nearest, float(d.min(1).values.mean() + d.min(0).values.mean())


def frame_distances(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between every query frame and support frame: (T_q, D), (T_s, D) -> (T_q, T_s)."""
    return 1.0 - F.normalize(query.double(), dim=-1) @ F.normalize(support.double(), dim=-1).T


@dataclass
class ClassMatch:
    """One of the top classes: its score, best-matching support clip and the alignment found."""

    name: str
    probability: float
    support_path: Path
    support_frames: torch.Tensor  # uint8 (T, C, H, W)
    #: (query frame, support frame) pairs the metric matched
    pairs: list[tuple[int, int]]
    cost: float
    texts: list[str] = field(default_factory=list)
    text_probability: float | None = None
    query_stages: list[tuple[int, int]] | None = None  # half-open frame ranges
    support_stages: list[tuple[int, int]] | None = None


@dataclass
class Explanation:
    query: str
    query_frames: torch.Tensor  # uint8 (T, C, H, W)
    prediction: Any  # fsar.recognizer.Prediction
    matches: list[ClassMatch]
    method: str
    backbone: str
    alignment: str  # what the lines show
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "method": self.method,
            "alignment": self.alignment,
            "prediction": self.prediction.to_dict(),
            "matches": [
                {"class": m.name, "probability": round(m.probability, 6), "support_clip": str(m.support_path),
                 "pairs": m.pairs, "cost": round(m.cost, 6), "texts": m.texts,
                 "text_probability": None if m.text_probability is None else round(m.text_probability, 6),
                 "query_stages": m.query_stages, "support_stages": m.support_stages}
                for m in self.matches
            ],
        }

    def png(self, dpi: int = 110) -> bytes:
        return draw(self, dpi=dpi)

    def save(self, path: str | os.PathLike, dpi: int = 110) -> Path:
        """Draw the picture into ``path`` (PNG, written atomically)."""
        from fsar.engine.checkpoint import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, self.png(dpi=dpi))
        return path


# ---------------------------------------------------------------------------------------------


def alignment_kind(method) -> str:
    """``"otam"``, ``"bimhm"``, ``"stages"`` or ``"nearest"`` for a method (by its metric)."""
    from fsar.metrics import ABMHM, OTAM, BiMHM

    if getattr(method, "name", "") == "lga":
        return "stages"
    metric = getattr(method, "metric", None)
    if isinstance(metric, OTAM):
        return "otam"
    if isinstance(metric, BiMHM):
        return "bimhm"
    if isinstance(metric, ABMHM):
        return "stages"
    return "nearest"


_DESCRIPTIONS = {
    "otam": "OTAM path (ordered alignment, λ→0)",
    "bimhm": "Bi-MHM nearest frames",
    "stages": "LGA stages, nearest frames inside aligned stages",
    "nearest": "nearest frames (this metric does not align frames)",
}


def class_texts(method, name: str) -> list[str]:
    """The class text a text-aware method used for class ``name`` ([] for the others)."""
    if getattr(method, "name", "") == "lga":
        try:
            return [f"stage {i + 1}: {text}" for i, text in enumerate(method.describe(name))]
        except Exception:  # describer unreachable: the picture goes without
            return []
    if getattr(method, "text_bank", None) is not None:
        from fsar.encoders.prompts import TEMPLATES, normalise_class_name

        return [f"prompt: mean of {len(TEMPLATES)} templates, e.g. \"{TEMPLATES[0].format(normalise_class_name(name))}\""]
    return []


def _frame_features(recognizer, encoded) -> torch.Tensor:
    """(T, D) per-frame encoder features of an encoded clip (frames are encoded when not cached)."""
    tensor = encoded.tensors["features"]
    if recognizer.frozen:
        return tensor.float()
    with torch.no_grad():
        return recognizer.encoder.encode_frames(tensor[None].to(recognizer.device))[0].float().cpu()


def _stages(method, features: torch.Tensor) -> list[tuple[int, int]]:
    from fsar.lga.segment import segment

    stages = method.stages_used if hasattr(method, "stages_used") else 3
    mode = getattr(getattr(method, "config", None), "segmentation", "cluster")
    bounds = segment(features[None], stages, mode)[0].tolist()
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _align(kind: str, method, query: torch.Tensor, support: torch.Tensor):
    dist = frame_distances(query, support)
    if kind == "otam":
        rows, cost = otam_path(dist.T)  # rows = support frames, one per query frame (column)
        return [(q, s) for q, s in enumerate(rows)], cost / dist.shape[0], None, None
    if kind == "stages":
        q_stages, s_stages = _stages(method, query), _stages(method, support)
        mask = torch.zeros_like(dist, dtype=torch.bool)
        for (qa, qb), (sa, sb) in zip(q_stages, s_stages):
            mask[qa:qb, sa:sb] = True
        nearest, _ = nearest_frames(dist, mask)
        cost = float(sum(dist[q, s] for q, s in enumerate(nearest)) / len(nearest))
        return [(q, s) for q, s in enumerate(nearest)], cost, q_stages, s_stages
    nearest, cost = nearest_frames(dist)
    return [(q, s) for q, s in enumerate(nearest)], cost, None, None


def explain(recognizer, clip: str | os.PathLike, *, top: int = 3, name: str | None = None) -> Explanation:
    """The :class:`Explanation` of ``recognizer``'s prediction for ``clip`` (its ``top`` classes);
    ``name`` is what the picture calls the query (default: the file name)."""
    from fsar.recognizer import RecognizerError

    if top < 1:
        raise RecognizerError(f"explain: top must be >= 1, got {top}")
    encoded = recognizer.encode_queries([clip])
    raw, parts = recognizer.log_probs(encoded)
    probabilities = recognizer.calibrate(raw)[0]
    prediction = recognizer._prediction(name or str(clip), probabilities, recognizer.threshold())
    method = recognizer.method
    kind = alignment_kind(method)
    query_features = _frame_features(recognizer, encoded[0])
    text_part = next((parts[name][0].exp() for name in _TEXT_PARTS if name in parts), None)
    matches = []
    for action, probability in prediction.ranking[:top]:
        best = None
        for item in recognizer._clips_of(action):
            pairs, cost, q_stages, s_stages = _align(kind, method, query_features, _frame_features(recognizer, item))
            if best is None or cost < best[1]:
                best = (item, cost, pairs, q_stages, s_stages)
        item, cost, pairs, q_stages, s_stages = best
        index = recognizer.actions.index(action)
        matches.append(ClassMatch(
            name=action, probability=probability, support_path=item.path,
            support_frames=recognizer.load_thumbnails(item.path), pairs=pairs, cost=cost,
            texts=class_texts(method, action),
            text_probability=None if text_part is None else float(text_part[index]),
            query_stages=q_stages, support_stages=s_stages,
        ))
    note = "" if getattr(method, "trainable", True) is False else "alignment drawn on the backbone's frame features"
    return Explanation(
        query=name or str(clip), query_frames=recognizer.load_thumbnails(clip), prediction=prediction, matches=matches,
        method=str(recognizer.info.get("method", getattr(method, "name", type(method).__name__))),
        backbone=str(getattr(recognizer.encoder, "name", "?")), alignment=_DESCRIPTIONS[kind], note=note,
    )


# ---------------------------------------------------------------------------------------------
# the picture

_STAGE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def _strip(axis, frames: torch.Tensor, y: float, height: float) -> float:
    """Draw frames (T, C, H, W) uint8 side by side at height y; returns the frame width."""
    t, _, h, w = frames.shape
    width = height * w / h
    for i in range(t):
        image = frames[i].permute(1, 2, 0).numpy()
        x = i * (width + 0.08)
        axis.imshow(image, extent=(x, x + width, y, y + height), interpolation="nearest")
    return width


def _stage_bars(axis, stages, width: float, y: float) -> None:
    for number, (a, b) in enumerate(stages):
        x0 = a * (width + 0.08)
        x1 = (b - 1) * (width + 0.08) + width
        axis.plot([x0, x1], [y, y], color=_STAGE_COLOURS[number % len(_STAGE_COLOURS)], lw=4,
                  solid_capstyle="butt")


def draw(explanation: Explanation, *, dpi: int = 110) -> bytes:
    """The explanation picture as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fsar.recognizer import NONE_OF_THESE

    matches = explanation.matches
    rows = len(matches)
    t = explanation.query_frames.shape[0]
    text_lines = max((len(m.texts) for m in matches), default=0)
    fig = plt.figure(figsize=(4.0 + 1.05 * max(t, 7), 0.6 + rows * (2.7 + 0.22 * text_lines)))
    grid = fig.add_gridspec(rows, 2, width_ratios=[max(t, 7) * 1.05, 3.2], wspace=0.12, hspace=0.55)
    prediction = explanation.prediction
    verdict = (f"none of these (best {prediction.best} {prediction.score:.0%} < threshold {prediction.threshold:.0%})"
               if prediction.label == NONE_OF_THESE else f"{prediction.label} ({prediction.score:.0%})")
    fig.suptitle(f"{Path(explanation.query).name} → {verdict}\n{explanation.method} on {explanation.backbone}; "
                 f"lines: {explanation.alignment}" + (f" ({explanation.note})" if explanation.note else ""),
                 fontsize=10)
    for row, match in enumerate(matches):
        axis = fig.add_subplot(grid[row, 0])
        height = 1.0
        width = _strip(axis, explanation.query_frames, 1.6, height)
        _strip(axis, match.support_frames, 0.0, height)
        for q, s in match.pairs:
            xq = q * (width + 0.08) + width / 2
            xs = s * (width + 0.08) + width / 2
            axis.plot([xq, xs], [1.6, 1.0], color="crimson", lw=1.2, alpha=0.85)
        if match.query_stages:
            _stage_bars(axis, match.query_stages, width, 1.6 + height + 0.07)
            _stage_bars(axis, match.support_stages, width, -0.07)
        axis.set_xlim(-0.05, t * (width + 0.08))
        axis.set_ylim(-0.2, 1.6 + height + 0.2)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([0.5, 2.1])
        axis.set_yticklabels(["support", "query"], fontsize=8)
        for side in axis.spines.values():
            side.set_visible(False)
        title = (f"{row + 1}. {match.name}: {match.probability:.0%}"
                 + ("" if match.text_probability is None else f" (text branch {match.text_probability:.0%})")
                 + f"\nbest support clip: {_shorten(match.support_path.name, 40)} (alignment cost {match.cost:.3f})")
        axis.set_title(title, fontsize=9, loc="left")
        if match.texts:
            axis.set_xlabel("\n".join(_shorten(text, 110) for text in match.texts), fontsize=7.5, loc="left")
    bars = fig.add_subplot(grid[:, 1])
    ranking = prediction.ranking[:12]
    names = [_shorten(n, 28) for n, _ in ranking][::-1]
    values = [p for _, p in ranking][::-1]
    colours = ["tab:orange" if n == prediction.label else "tab:blue" for n, _ in ranking][::-1]
    bars.barh(names, values, color=colours)
    if prediction.threshold is not None:
        bars.axvline(prediction.threshold, color="grey", ls="--", lw=1, label=f"reject below {prediction.threshold:.0%}")
        bars.legend(loc="lower right", fontsize=7)
    bars.set_xlim(0, 1)
    bars.set_xlabel("calibrated probability", fontsize=8)
    bars.tick_params(axis="y", labelsize=7.5)
    bars.yaxis.tick_right()
    bars.set_title("per-class scores", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
