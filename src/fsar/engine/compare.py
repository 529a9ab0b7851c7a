"""Paired comparisons of methods evaluated on the same episodes.

Two methods evaluated with the same seed on the same split see the same episodes, so the
per-episode accuracy difference ``d_e = acc_A(e) - acc_B(e)`` removes the episode-to-episode
variance that dominates each method's own interval. For each pair this module reports

* the mean difference and its paired 95% interval, ``1.96 * std(d) / sqrt(n)`` (population
  std, ``ddof=0``, the same convention as every accuracy interval fsar prints);
* the episodes A wins, loses and ties;
* a two-sided **exact sign test** p-value over the non-tied episodes (does A beat B on more
  episodes than chance?), and
* a two-sided **paired bootstrap** p-value for "mean difference = 0": the differences are
  centred on zero (the null) and resampled with replacement ``bootstrap`` times;
  ``p = (1 + #{|mean*| >= |mean d|}) / (1 + bootstrap)``. Per-episode accuracies of an
  episode with q queries take at most 2q+1 distinct difference values, so a resample is drawn
  as multinomial counts over those values: exactly the same distribution as resampling the
  episodes, at a cost independent of the episode count.

A difference whose interval excludes 0 (and whose p-values are small) is a real gain on
this benchmark's episode distribution; a 0.8-point gain whose paired interval spans 0 is not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch

__all__ = [
    "ComparisonError",
    "PairedComparison",
    "compare_all",
    "compare_paired",
    "comparison_markdown",
    "episodes_key",
    "sign_test_p",
]

#: Settings that decide which episodes an evaluation draws: results to compare must agree on all.
EPISODE_KEYS = ("way", "shot", "queries", "episodes", "seed")


class ComparisonError(ValueError):
    """Results that cannot be compared episode by episode (different episodes, missing data)."""


@dataclass(frozen=True)
class PairedComparison:
    """A minus B over the same episodes (fractions: 0.008 is 0.8 points)."""

    a: str
    b: str
    episodes: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci95: float
    wins: int
    losses: int
    ties: int
    p_sign: float
    p_bootstrap: float
    bootstrap: int

    @property
    def significant(self) -> bool:
        """The paired 95% interval excludes zero."""
        return abs(self.difference) > self.ci95

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["difference_points"] = f"{100 * self.difference:+.2f} ± {100 * self.ci95:.2f}"
        record["significant"] = self.significant
        return record


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test of ``wins`` vs ``losses`` (ties dropped) at p = 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    # log P(X = i) for X ~ Binomial(n, 1/2), i = 0..k; sum in log space (n up to 10^5 and more).
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def _bootstrap_p(differences: torch.Tensor, resamples: int, generator: torch.Generator) -> float:
    n = differences.numel()
    observed = differences.mean()
    centred = differences - observed
    # Round to collapse float noise, then draw resamples as counts over the distinct values.
    values, counts = torch.unique(torch.round(centred * 1e9) / 1e9, return_counts=True)
    extreme = 0
    if values.numel() <= 64:
        # Multinomial(n, counts / n) per resample, drawn as a chain of binomials (exact).
        probs = counts.double() / n
        remaining = torch.full((resamples,), float(n), dtype=torch.float64)
        left = 1.0
        total = torch.zeros(resamples, dtype=torch.float64)
        for value, p in zip(values.tolist(), probs.tolist()):
            share = min(1.0, p / left) if left > 1e-15 else 1.0
            drawn = torch.binomial(remaining, torch.full_like(remaining, share), generator=generator)
            total += drawn * value
            remaining -= drawn
            left -= p
        means = total / n
        extreme += int((means.abs() >= observed.abs() - 1e-12).sum())
    else:  # continuous scores: resample the episodes themselves, in chunks
        chunk = max(1, 4_000_000 // n)
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            index = torch.randint(0, n, (size, n), generator=generator)
            means = centred[index].mean(dim=1)
            extreme += int((means.abs() >= observed.abs() - 1e-12).sum())
    return (1 + extreme) / (1 + resamples)


def compare_paired(
    accuracies_a: Sequence[float] | torch.Tensor,
    accuracies_b: Sequence[float] | torch.Tensor,
    *,
    name_a: str = "A",
    name_b: str = "B",
    bootstrap: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """A minus B, episode by episode (the two lists must be the same episodes, in order)."""
    a = torch.as_tensor(accuracies_a, dtype=torch.float64).flatten()
    b = torch.as_tensor(accuracies_b, dtype=torch.float64).flatten()
    if a.numel() != b.numel():
        raise ComparisonError(
            f"{name_a} has {a.numel()} episodes and {name_b} {b.numel()}: a paired comparison needs the same episodes"
        )
    if a.numel() == 0:
        raise ComparisonError("no episodes to compare")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    d = a - b
    n = d.numel()
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    generator = torch.Generator().manual_seed(seed)
    if bootstrap and bool((d != 0).any()):
        p_boot = _bootstrap_p(d, bootstrap, generator)
    else:
        p_boot = 1.0
    return PairedComparison(
        a=name_a, b=name_b, episodes=n, accuracy_a=a.mean().item(), accuracy_b=b.mean().item(),
        difference=d.mean().item(), ci95=1.96 * d.std(correction=0).item() / math.sqrt(n),
        wins=wins, losses=losses, ties=n - wins - losses, p_sign=sign_test_p(wins, losses),
        p_bootstrap=p_boot, bootstrap=bootstrap,
    )


def compare_all(
    accuracies: Mapping[str, Sequence[float] | torch.Tensor], *, bootstrap: int = 10_000, seed: int = 0
) -> list[PairedComparison]:
    """Every pair (in the mapping's order: first vs second, first vs third, ...)."""
    names = list(accuracies)
    return [
        compare_paired(accuracies[x], accuracies[y], name_a=x, name_b=y, bootstrap=bootstrap, seed=seed)
        for i, x in enumerate(names) for y in names[i + 1:]
    ]


def _p_text(p: float, resamples: int | None = None) -> str:
    if resamples and p <= 1 / (1 + resamples) + 1e-15:
        return f"< {1 / resamples:.0e}".replace("e-0", "e-")
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def comparison_markdown(comparisons: Sequence[PairedComparison], *, title: str | None = None) -> str:
    """The pairwise table in Markdown (differences in points, paired 95% interval, p-values)."""
    lines = [f"**{title}**", ""] if title else []
    lines += [
        "| A | B | A − B (points) | paired 95% CI | A wins / ties / B wins | sign-test p | bootstrap p |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in comparisons:
        # + 0.0 turns a -0.0 into 0.0 (identical methods print +0.00, not -0.00)
        low, high = round(100 * (c.difference - c.ci95), 2) + 0.0, round(100 * (c.difference + c.ci95), 2) + 0.0
        difference = round(100 * c.difference, 2) + 0.0
        mark = " *" if c.significant else ""
        lines.append(
            f"| {c.a} | {c.b} | {difference:+.2f}{mark} | [{low:+.2f}, {high:+.2f}] | "
            f"{c.wins} / {c.ties} / {c.losses} | {_p_text(c.p_sign)} | {_p_text(c.p_bootstrap, c.bootstrap)} |"
        )
    lines.append("")
    lines.append("\\* the paired interval excludes 0. Same episodes for every method; "
                 "interval = 1.96·std(A−B)/√episodes.")
    return "\n".join(lines)


def episodes_key(record: Mapping[str, Any]) -> dict[str, Any]:
    """What decides the episodes of an evaluation result: data, split, way/shot/queries/episodes/seed."""
    key = {name: record.get(name) for name in EPISODE_KEYS}
    split = record.get("split") or {}
    key["split"] = split.get("sha256") if isinstance(split, Mapping) else split
    if key["split"] is None:
        key["split"] = record.get("split_file")
    key["data"] = record.get("data")
    key["class_names"] = record.get("class_names")
    return key


def check_same_episodes(records: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to pair results whose episodes differ, naming the setting that differs."""
    items = list(records.items())
    if not items:
        return
    first_name, first = items[0]
    reference = episodes_key(first)
    for name, record in items[1:]:
        key = episodes_key(record)
        different = [f"{k}: {reference[k]!r} ({first_name}) vs {key[k]!r} ({name})"
                     for k in reference if reference[k] != key[k] and k != "class_names"]
        if key["class_names"] != reference["class_names"] and not different:
            different.append(f"class_names differ between {first_name} and {name}")
        if different:
            raise ComparisonError("results drew different episodes, so they cannot be paired: " + "; ".join(different))
        if not record.get("episode_accuracies"):
            raise ComparisonError(f"{name}: the result holds no per-episode accuracies (written by an older fsar?)")
    if not first.get("episode_accuracies"):
        raise ComparisonError(f"{first_name}: the result holds no per-episode accuracies (written by an older fsar?)")
