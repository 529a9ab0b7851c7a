"""The field's evaluation protocol at paper scale: methods x benchmarks x shots, one table.

``fsar benchmark`` evaluates every method on every benchmark at 5-way 1-shot and 5-shot
(by default), 1 query per class, 10,000 seeded test episodes, and writes one table in the
layout of the papers (rows: methods; columns: benchmark x shot) as Markdown, CSV, JSON and
PNG, with the paired comparisons of every pair of methods in each cell.

**The same episodes for every method.** A cell's episodes come from one manifest, validated
once, and one ``(way, shot, queries, seed)``; each method's episode source is checked to
draw from exactly that manifest, and the cell records the SHA-256 of its episode list
(``episodes_sha256``: the clips of every episode, relative to the data root), so two tables
can be compared too.

**Resumable.** Each (benchmark, shot, method) writes ``cells/<benchmark>/<shot>shot/<label>.json``
atomically every ``chunk`` episodes (its per-episode accuracies and the settings that decide
them). A re-run with the same ``--out`` continues where it stopped; a finished cell is read
back, not re-run; a cell written under other settings is an error naming what differs.

Methods are given as a registered name (training-free, or untrained with a warning) or as
``LABEL=RUN_DIR``, a checkpoint of ``fsar train``; ``{benchmark}`` and ``{shot}`` in the path
are filled per cell (``ma-fsar=runs/ma-{benchmark}-{shot}shot``). Data are ``NAME=ROOT``: a
shipped split name (its test part, ``NAME:val`` for another part) resolved under ROOT, or
any other label for a ``ROOT/<class>/<clip>`` folder whose classes are all test classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fsar import __version__
from fsar.engine.checkpoint import atomic_write_bytes, atomic_write_json
from fsar.engine.compare import PairedComparison, compare_all, comparison_markdown
from fsar.engine.evaluate import confidence_interval

__all__ = [
    "BenchmarkError",
    "BenchmarkPlan",
    "BenchmarkTable",
    "CellResult",
    "DataSpec",
    "MethodSpec",
    "episodes_fingerprint",
    "parse_data_spec",
    "parse_method_spec",
    "run_benchmark",
    "write_tables",
]

log = logging.getLogger(__name__)


class BenchmarkError(ValueError):
    """A benchmark plan or output folder that cannot be used (the message says why)."""


# --------------------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table: a registered method (``checkpoint`` None) or a checkpoint template."""

    label: str
    method: str | None = None
    checkpoint: str | None = None

    def checkpoint_for(self, benchmark: str, shot: int) -> str | None:
        if self.checkpoint is None:
            return None
        try:
            return self.checkpoint.format(benchmark=benchmark, shot=shot)
        except (KeyError, IndexError, ValueError) as error:
            raise BenchmarkError(
                f"method {self.label!r}: checkpoint path {self.checkpoint!r} may use only {{benchmark}} and {{shot}} ({error})"
            ) from None


def parse_method_spec(text: str) -> MethodSpec:
    """``proto`` | ``LABEL=RUN_DIR`` (``{benchmark}``/``{shot}`` filled per cell)."""
    text = text.strip()
    if "=" in text:
        label, _, path = text.partition("=")
        if not label.strip() or not path.strip():
            raise BenchmarkError(f"method {text!r}: expected NAME or LABEL=RUN_DIR")
        return MethodSpec(label.strip(), None, path.strip())
    if not text:
        raise BenchmarkError("empty method name")
    return MethodSpec(text, text, None)


@dataclass(frozen=True)
class DataSpec:
    """One benchmark column: its label, data root and split (None: every class of a folder layout)."""

    name: str
    root: Path
    split: Any = None  # fsar.data.splits.SplitRef

    def provenance(self) -> dict[str, Any]:
        if self.split is None:
            return {"benchmark": self.name, "layout": "ROOT/<class>/<clip>, every class a test class"}
        return self.split.provenance()


def parse_data_spec(text: str) -> DataSpec:
    """``ssv2-small=/data/ssv2`` (shipped split, test part), ``ssv2-small:val=ROOT``, or ``LABEL=ROOT``."""
    from fsar.data.splits import SplitError, _lookup, near_benchmark_name, resolve_split

    name, sep, root = text.partition("=")
    name, root = name.strip(), root.strip()
    if not sep or not name or not root:
        raise BenchmarkError(f"--data {text!r}: expected NAME=ROOT (NAME a shipped split such as ssv2-small, or a label)")
    head = name.rpartition(":")[0] if ":" in name else name
    if _lookup(head) is not None:
        try:
            split = resolve_split(name)
        except SplitError as error:
            raise BenchmarkError(f"--data {text!r}: {error}") from None
        return DataSpec(split.benchmark.name if split.part == "test" else f"{split.benchmark.name}:{split.part}",
                        Path(root), split)
    near = near_benchmark_name(head)
    if near is not None:
        # a mistyped split name would otherwise evaluate every class of ROOT: a silently different benchmark
        raise BenchmarkError(
            f"--data {text!r}: {head!r} is not a shipped split; did you mean {near!r}? "
            "(`fsar data splits` lists them; label a plain ROOT/<class>/<clip> folder with a name unlike theirs)"
        )
    return DataSpec(name, Path(root), None)


@dataclass
class BenchmarkPlan:
    """Everything that decides a benchmark table (saved in its JSON)."""

    methods: list[MethodSpec]
    data: list[DataSpec]
    shots: list[int] = field(default_factory=lambda: [1, 5])
    way: int = 5
    queries: int = 1
    episodes: int = 10_000
    seed: int = 0
    #: For methods built by name (a checkpoint brings its own).
    backbone: str = "effnet-lite0+minilm"
    weights: str | None = None
    num_frames: int = 8
    image_size: int | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The methods' own options (FewShotMethod.options(), e.g. LGA's descriptions), for every method.
    method_args: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    bootstrap: int = 10_000
    #: Episodes between two writes of a cell's partial results.
    chunk: int = 1000
    progress: bool = True

    def validate(self) -> None:
        if not self.methods:
            raise BenchmarkError("no methods to benchmark")
        if not self.data:
            raise BenchmarkError("no data: give --data NAME=ROOT (one per benchmark)")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise BenchmarkError(f"method labels repeat: {labels}; name checkpoints LABEL=RUN_DIR")
        names = [d.name for d in self.data]
        if len(set(names)) != len(names):
            raise BenchmarkError(f"benchmarks repeat: {names}")
        for name, value in (("way", self.way), ("queries", self.queries), ("episodes", self.episodes),
                            ("chunk", self.chunk), ("frames", self.num_frames)):
            if value < 1:
                raise BenchmarkError(f"{name} must be >= 1, got {value}")
        if self.way < 2:
            raise BenchmarkError(f"way must be >= 2, got {self.way}")
        if not self.shots or any(s < 1 for s in self.shots):
            raise BenchmarkError(f"shots must be >= 1, got {self.shots}")
        if len(set(self.shots)) != len(self.shots):
            raise BenchmarkError(f"shots repeat: {self.shots}")
        # before any episode is sampled: a typo should not cost a benchmark's set-up
        from fsar.methods import list_methods

        known = list_methods()
        for spec in self.methods:
            if spec.method is not None and spec.method not in known:
                raise BenchmarkError(f"unknown method {spec.method!r}; available: {', '.join(known)} "
                                     "(or LABEL=RUN_DIR for a trained run)")
            if spec.checkpoint is not None:
                from fsar.engine.checkpoint import CheckpointError, find_checkpoint

                for data in self.data:
                    for shot in self.shots:
                        path = spec.checkpoint_for(data.name, shot)
                        try:
                            find_checkpoint(path)
                        except CheckpointError as error:
                            cell = f" (for {data.name} {shot}-shot)" if path != spec.checkpoint else ""
                            raise BenchmarkError(f"method {spec.label!r}: {error}{cell}") from None


# --------------------------------------------------------------------------------------
# Results


@dataclass
class CellResult:
    """One method on one (benchmark, shot): mean accuracy ± 95% interval and what produced it."""

    method: str
    benchmark: str
    shot: int
    accuracy: float
    ci95: float
    std: float
    episodes: int
    backbone: str
    num_frames: int
    image_size: int | None
    seconds: float
    episodes_sha256: str
    checkpoint: str | None = None
    method_name: str | None = None
    episode_accuracies: list[float] = field(default_factory=list, repr=False)

    @property
    def episodes_per_second(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        record = {k: v for k, v in dataclasses.asdict(self).items() if k != "episode_accuracies"}
        record["accuracy_percent"] = f"{100 * self.accuracy:.2f} ± {100 * self.ci95:.2f}"
        record["episodes_per_second"] = round(self.episodes_per_second, 2) if self.seconds > 0 else None
        return record


@dataclass
class BenchmarkTable:
    plan: BenchmarkPlan
    cells: list[CellResult]
    comparisons: dict[tuple[str, int], list[PairedComparison]]
    provenance: dict[str, dict[str, Any]]
    out: Path

    def cell(self, method: str, benchmark: str, shot: int) -> CellResult | None:
        for cell in self.cells:
            if (cell.method, cell.benchmark, cell.shot) == (method, benchmark, shot):
                return cell
        return None


# --------------------------------------------------------------------------------------
# Running


def episodes_fingerprint(sampler, episodes: int, root: Path) -> str:
    """SHA-256 over the clips (relative to ``root``) and class order of episodes 0..episodes-1."""
    digest = hashlib.sha256()
    root_text = str(root)
    for index in range(episodes):
        episode = sampler.episode(index)
        parts = [*episode.class_names, "|"]
        parts += [os.path.relpath(str(c.path), root_text) for c in episode.support]
        parts.append("|")
        parts += [os.path.relpath(str(c.path), root_text) for c in episode.query]
        digest.update(("\x1f".join(parts) + "\x1e").encode())
    return digest.hexdigest()


class _Offset:
    """Episodes ``start, start + 1, ...`` of a source, as indices 0, 1, ... (for chunked evaluation)."""

    def __init__(self, source, start: int) -> None:
        self.source, self.start = source, start
        self.class_names = source.class_names

    def sample(self, index: int, *, train: bool):
        return self.source.sample(self.start + index, train=train)


def _manifest(spec: DataSpec, progress: bool):
    from fsar.data.manifest import Manifest

    if spec.split is None:
        return Manifest.from_folder(spec.root, progress=progress)
    return Manifest.from_split_file(spec.root, spec.split.path, classnames_file=spec.split.classnames_file,
                                    progress=progress)


def _cell_path(out: Path, benchmark: str, shot: int, label: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in label)
    bench = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in benchmark)
    return out / "cells" / bench / f"{shot}shot" / f"{safe}.json"


def _read_cell(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BenchmarkError(f"{path}: unreadable partial result ({error}); delete it to re-run that cell") from None


def _build(spec: MethodSpec, plan: BenchmarkPlan, data: DataSpec, shot: int, class_names):
    """(method, settings of the row: backbone, weights, frames, image size, checkpoint, method name)."""
    from fsar.engine.checkpoint import read_checkpoint
    from fsar.engine.run import build_method, method_from_checkpoint

    checkpoint = spec.checkpoint_for(data.name, shot)
    if checkpoint is not None:
        loaded = read_checkpoint(checkpoint)
        method, saved = method_from_checkpoint(loaded, class_names=class_names, method_args=plan.method_args)
        return method, {"method_name": saved.method, "backbone": saved.backbone, "weights": saved.weights,
                        "num_frames": saved.num_frames, "image_size": saved.image_size,
                        "checkpoint": str(loaded.path)}
    torch.manual_seed(plan.seed)
    method = build_method(
        spec.method, backbone=plan.backbone, weights=plan.weights,
        method_options=plan.method_options.get(spec.label, {}), method_args=plan.method_args,
        class_names=class_names,
    )
    if method.is_trainable():
        log.warning("benchmark: %s has trainable parts and no checkpoint: they are untrained (random)", spec.label)
    return method, {"method_name": spec.method, "backbone": plan.backbone, "weights": plan.weights,
                    "num_frames": plan.num_frames, "image_size": plan.image_size, "checkpoint": None}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _features_dir(out: Path, data: DataSpec, settings: dict[str, Any]) -> Path:
    key = json.dumps([settings["backbone"], settings["weights"], settings["num_frames"], settings["image_size"]])
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in f"{settings['backbone']}-{tag}")
    return out / "features" / "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in data.name) / safe


def _run_cell(spec, plan, data, manifest, reference, fingerprint, shot, out, say) -> CellResult:
    from fsar.engine.evaluate import evaluate
    from fsar.engine.sources import episode_source

    path = _cell_path(out, data.name, shot, spec.label)
    key = {
        "method": spec.label, "method_spec": dataclasses.asdict(spec), "benchmark": data.name, "shot": shot,
        "way": plan.way, "queries": plan.queries, "episodes": plan.episodes, "seed": plan.seed,
        "episodes_sha256": fingerprint, "checkpoint": spec.checkpoint_for(data.name, shot),
    }
    if spec.checkpoint is None:
        key.update(backbone=plan.backbone, weights=plan.weights, num_frames=plan.num_frames,
                   image_size=plan.image_size, method_options=plan.method_options.get(spec.label, {}))
    saved = _read_cell(path)
    done: list[float] = []
    seconds = 0.0
    if saved is not None:
        different = [f"{k}: {saved['key'].get(k)!r} -> {v!r}" for k, v in key.items() if saved["key"].get(k) != v]
        if different:
            raise BenchmarkError(
                f"{path} was written with other settings ({'; '.join(different)}); use another --out or delete it"
            )
        done = list(saved["episode_accuracies"])
        seconds = float(saved.get("seconds", 0.0))
        if saved.get("complete"):
            say(f"  {spec.label:<14} {data.name} {shot}-shot: done earlier ({len(done)} episodes)")
            return _cell_from(saved, spec, data, shot)
        say(f"  {spec.label:<14} {data.name} {shot}-shot: resuming at episode {len(done)}")
    method, settings = _build(spec, plan, data, shot, manifest.classes)
    device = _device(plan.device)
    method.to(device)
    source = episode_source(
        method, manifest, way=plan.way, shot=shot, queries=plan.queries, seed=plan.seed,
        num_frames=settings["num_frames"] or 8, image_size=settings["image_size"],
        extract_to=_features_dir(out, data, settings), weights=settings["weights"], progress=plan.progress,
    )
    loader = getattr(source, "loader", None)
    if loader is not None:  # what the encoder really sees (the encoder's own size when none was given)
        settings = {**settings, "num_frames": loader.num_frames, "image_size": loader.transform.image_size}
    sampler = source.sampler
    if (sampler.usable_classes != reference.usable_classes
            or any(sampler._clips[c] != reference._clips[c] for c in reference.usable_classes)):
        raise BenchmarkError(
            f"{spec.label} on {data.name}: its episodes would differ from the other methods' (clips left out "
            f"at feature extraction?); the table needs the same episodes for every method"
        )
    record = {"key": key, "settings": settings, "complete": False, "fsar_version": __version__}
    while len(done) < plan.episodes:
        start = len(done)
        count = min(plan.chunk, plan.episodes - start)
        began = time.perf_counter()
        result = evaluate(method, _Offset(source, start), episodes=count, device=device, progress=plan.progress,
                          desc=f"{spec.label} {data.name} {shot}-shot [{start}:{start + count}]")
        seconds += time.perf_counter() - began
        done.extend(round(a, 6) for a in result.episode_accuracies)
        record.update(episode_accuracies=done, seconds=seconds, complete=len(done) >= plan.episodes)
        atomic_write_json(path, record)
    cell = _cell_from(record, spec, data, shot)
    say(f"  {spec.label:<14} {data.name} {shot}-shot: {100 * cell.accuracy:.2f} ± {100 * cell.ci95:.2f} "
        f"({cell.episodes} episodes, {cell.episodes_per_second:.0f}/s)")
    return cell


def _cell_from(record: dict[str, Any], spec: MethodSpec, data: DataSpec, shot: int) -> CellResult:
    accuracies = record["episode_accuracies"]
    mean, ci95, std = confidence_interval(accuracies)
    settings = record["settings"]
    return CellResult(
        method=spec.label, benchmark=data.name, shot=shot, accuracy=mean, ci95=ci95, std=std,
        episodes=len(accuracies), backbone=settings["backbone"], num_frames=settings["num_frames"] or 8,
        image_size=settings["image_size"], seconds=float(record.get("seconds", 0.0)),
        episodes_sha256=record["key"]["episodes_sha256"], checkpoint=settings.get("checkpoint"),
        method_name=settings.get("method_name"), episode_accuracies=list(accuracies),
    )


def run_benchmark(
    plan: BenchmarkPlan, out: str | Path, *, say: Callable[[str], None] = print
) -> BenchmarkTable:
    """Run (or resume) every cell of ``plan`` into ``out`` and write the tables."""
    from fsar.data.episodes import EpisodeSampler

    plan.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells: list[CellResult] = []
    comparisons: dict[tuple[str, int], list[PairedComparison]] = {}
    provenance: dict[str, dict[str, Any]] = {}
    manifests = {}
    samplers = {}
    for data in plan.data:  # every cell's episodes first: a benchmark that cannot finish fails before it starts
        manifest = manifests[data.name] = _manifest(data, plan.progress)
        provenance[data.name] = {**data.provenance(), "root": str(data.root), "classes": len(manifest.classes),
                                 "clips": len(manifest.clips), "skipped_clips": len(manifest.skipped)}
        for shot in plan.shots:
            samplers[(data.name, shot)] = EpisodeSampler(manifest, way=plan.way, shot=shot, queries=plan.queries,
                                                         seed=plan.seed)
    for data in plan.data:
        manifest = manifests[data.name]
        for shot in plan.shots:
            reference = samplers[(data.name, shot)]
            fingerprint = episodes_fingerprint(reference, plan.episodes, data.root)
            say(f"{data.name} {plan.way}-way {shot}-shot: {plan.episodes} episodes (sha256 {fingerprint[:12]})")
            row = [_run_cell(spec, plan, data, manifest, reference, fingerprint, shot, out, say)
                   for spec in plan.methods]
            cells.extend(row)
            if len(row) > 1:
                comparisons[(data.name, shot)] = compare_all(
                    {c.method: c.episode_accuracies for c in row}, bootstrap=plan.bootstrap, seed=plan.seed
                )
    table = BenchmarkTable(plan, cells, comparisons, provenance, out)
    write_tables(table)
    return table


# --------------------------------------------------------------------------------------
# Writing


def _columns(table: BenchmarkTable) -> list[tuple[str, int]]:
    return [(d.name, s) for d in table.plan.data for s in table.plan.shots]


def _format_cell(cell: CellResult | None) -> str:
    return "–" if cell is None else f"{100 * cell.accuracy:.2f} ± {100 * cell.ci95:.2f}"


def _ranks(table: BenchmarkTable) -> dict[tuple[str, str, int], int]:
    """1 for the best method(s) of each column, 2 for the second value (as the papers mark them);
    equal accuracies (to the printed 0.01 point) share their rank."""
    ranks = {}
    for bench, shot in _columns(table):
        present = [c for c in table.cells if (c.benchmark, c.shot) == (bench, shot)]
        values = sorted({round(100 * c.accuracy, 2) for c in present}, reverse=True)[:2]
        for cell in present:
            value = round(100 * cell.accuracy, 2)
            if value in values and len(present) > 1:
                ranks[(cell.method, bench, shot)] = values.index(value) + 1
    return ranks


def _settings_lines(table: BenchmarkTable) -> list[str]:
    plan = table.plan
    lines = [
        f"{plan.way}-way, {plan.queries} quer{'y' if plan.queries == 1 else 'ies'} per class, "
        f"{plan.episodes} seeded test episodes per cell (seed {plan.seed}), the same episodes for every method; "
        "± is the 95% interval 1.96·std/√episodes; fsar " + __version__ + ".",
    ]
    for method in plan.methods:
        cells = [c for c in table.cells if c.method == method.label]
        if not cells:
            continue
        c = cells[0]
        size = f"{c.image_size}x{c.image_size} px" if c.image_size else "the encoder's resolution"
        source = f"checkpoint {method.checkpoint}" if method.checkpoint else "training-free / as built"
        lines.append(f"{method.label}: {c.method_name or method.label} on {c.backbone}, {c.num_frames} frames, "
                     f"{size}; {source}.")
    for name, info in table.provenance.items():
        split = (f"split {info['benchmark']}:{info.get('part')} ({info.get('title')}; {info.get('source')}; "
                 f"sha256 {str(info.get('sha256'))[:12]})" if info.get("sha256") else info.get("layout", ""))
        lines.append(f"{name}: {info['root']}, {info['classes']} classes, {info['clips']} clips "
                     f"({info['skipped_clips']} listed clips missing or unreadable); {split}.")
    return lines


def table_markdown(table: BenchmarkTable) -> str:
    columns = _columns(table)
    ranks = _ranks(table)
    benches = [d.name for d in table.plan.data]
    shots = table.plan.shots
    head = "| Method | " + " | ".join(f"{b} {s}-shot" for b, s in columns) + " |"
    lines = ["# fsar benchmark", "", head, "| --- |" + " ---: |" * len(columns)]
    for method in table.plan.methods:
        cells = []
        for bench, shot in columns:
            text = _format_cell(table.cell(method.label, bench, shot))
            rank = ranks.get((method.label, bench, shot))
            cells.append(f"**{text}**" if rank == 1 else (f"<u>{text}</u>" if rank == 2 else text))
        lines.append(f"| {method.label} | " + " | ".join(cells) + " |")
    lines += ["", "Bold: best of the column; underlined: second.", ""]
    lines += [f"- {line}" for line in _settings_lines(table)]
    if table.comparisons:
        lines += ["", "## Paired comparisons", ""]
        for bench in benches:
            for shot in shots:
                if (bench, shot) in table.comparisons:
                    lines.append(comparison_markdown(table.comparisons[(bench, shot)],
                                                     title=f"{bench} {table.plan.way}-way {shot}-shot"))
                    lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def table_csv(table: BenchmarkTable) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "benchmark", "way", "shot", "queries", "episodes", "accuracy", "ci95", "std",
                     "backbone", "frames", "image_size", "checkpoint", "seconds", "episodes_sha256", "fsar_version"])
    for c in table.cells:
        writer.writerow([c.method, c.benchmark, table.plan.way, c.shot, table.plan.queries, c.episodes,
                         f"{100 * c.accuracy:.4f}", f"{100 * c.ci95:.4f}", f"{100 * c.std:.4f}", c.backbone,
                         c.num_frames, c.image_size or "", c.checkpoint or "", f"{c.seconds:.2f}",
                         c.episodes_sha256, __version__])
    return buffer.getvalue()


def table_json(table: BenchmarkTable) -> dict[str, Any]:
    plan = dataclasses.asdict(table.plan)
    plan["data"] = [{"name": d.name, "root": str(d.root), "split": d.split.label if d.split else None}
                    for d in table.plan.data]
    return {
        "kind": "fsar-benchmark",
        "fsar_version": __version__,
        "plan": plan,
        "splits": table.provenance,
        "cells": [c.summary() for c in table.cells],
        "comparisons": [
            {"benchmark": bench, "shot": shot, **comparison.to_dict()}
            for (bench, shot), pairs in table.comparisons.items() for comparison in pairs
        ],
    }


def table_png(table: BenchmarkTable) -> bytes:
    """The table drawn like the papers': booktabs rules, benchmark over shot headers, best bold, second underlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(table)
    ranks = _ranks(table)
    methods = [m.label for m in table.plan.methods]
    label_width = max(2.2, 0.11 * max(len(m) for m in methods) + 0.6)
    cell_width = 1.45
    width = label_width + cell_width * len(columns)
    import textwrap

    wrap = max(60, int(max(width, 6.5) * 17))
    notes = [piece for line in _settings_lines(table) for piece in textwrap.wrap(line, wrap)]
    height = 0.42 * (len(methods) + 2) + 0.2 * len(notes) + 0.7
    fig = plt.figure(figsize=(max(width, 6.5), height), dpi=130)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, max(width, 6.5))
    ax.set_ylim(height, 0)
    ax.axis("off")
    x0 = 0.15
    top = 0.25
    row_h = 0.42

    def centre(i: int) -> float:
        return label_width + cell_width * (i + 0.5)

    ax.plot([x0, width - 0.1], [top, top], color="black", lw=1.2)
    ax.text(x0, top + row_h, "Method", va="center", ha="left", fontsize=10, weight="bold")
    shots = table.plan.shots
    for j, data in enumerate(table.plan.data):
        first = j * len(shots)
        mid = (centre(first) + centre(first + len(shots) - 1)) / 2
        ax.text(mid, top + row_h * 0.55, data.name, va="center", ha="center", fontsize=10, weight="bold")
        ax.plot([centre(first) - cell_width * 0.45, centre(first + len(shots) - 1) + cell_width * 0.45],
                [top + row_h * 0.85] * 2, color="black", lw=0.6)
        for k, shot in enumerate(shots):
            ax.text(centre(first + k), top + row_h * 1.3, f"{shot}-shot", va="center", ha="center", fontsize=9)
    header_bottom = top + row_h * 1.65
    ax.plot([x0, width - 0.1], [header_bottom, header_bottom], color="black", lw=0.8)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for i, method in enumerate(methods):
        y = header_bottom + row_h * (i + 0.6)
        ax.text(x0, y, method, va="center", ha="left", fontsize=9.5)
        for k, (bench, shot) in enumerate(columns):
            cell = table.cell(method, bench, shot)
            rank = ranks.get((method, bench, shot))
            text = ax.text(centre(k), y, _format_cell(cell), va="center", ha="center", fontsize=9.5,
                           weight="bold" if rank == 1 else "normal")
            if rank == 2:
                box = text.get_window_extent(renderer=renderer).transformed(ax.transData.inverted())
                ax.plot([box.x0, box.x1], [box.y0 + 0.02] * 2, color="black", lw=0.7)
    bottom = header_bottom + row_h * (len(methods) + 0.2)
    ax.plot([x0, width - 0.1], [bottom, bottom], color="black", lw=1.2)
    for n, line in enumerate(notes):
        ax.text(x0, bottom + 0.25 + 0.2 * n, line, va="center", ha="left", fontsize=6.5, color="#333333")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_tables(table: BenchmarkTable) -> dict[str, Path]:
    """``benchmark.md``, ``benchmark.csv``, ``benchmark.json``, ``benchmark.png`` in the output folder (atomically)."""
    out = table.out
    paths = {name: out / f"benchmark.{name}" for name in ("md", "csv", "json", "png")}
    atomic_write_bytes(paths["md"], table_markdown(table).encode())
    atomic_write_bytes(paths["csv"], table_csv(table).encode())
    atomic_write_json(paths["json"], table_json(table))
    atomic_write_bytes(paths["png"], table_png(table))
    return paths

