"""The standard few-shot splits, shipped with fsar and addressed by name.

The papers of the field evaluate on five benchmarks whose class splits are fixed lists of
``label/video_id`` lines. They ship as package data under ``fsar/data/splits/<benchmark>/``
(``train.txt``, ``val.txt``, ``test.txt`` and, for SSv2-Full, the class-name files that
resolve its anonymised labels), each with a ``provenance.json`` giving where the split
comes from, its class and clip counts per part, and the SHA-256 of every file.

Names on the command line::

    --split ssv2-small          the test part (what an evaluation reads)
    --split ssv2-small:val      any part by name (train, val, test)
    --splits ssv2-small         the training pair: train + val (test is never opened)
    --split path/to/test.txt    a path still works (and --splits path/to/dir/)

The original folder names (``ssv2_CMN``, ``kinetics_CMN``, ``ssv2_OTAM``, ``ucf_ARN``,
``hmdb_ARN``) are accepted as aliases, so commands written for the TRX-family code bases
keep working. ``fsar data splits`` lists the benchmarks with their counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = [
    "PARTS",
    "Benchmark",
    "SplitError",
    "SplitRef",
    "TrainingSplits",
    "get_benchmark",
    "list_benchmarks",
    "near_benchmark_name",
    "resolve_split",
    "resolve_training_splits",
    "split_directory",
    "summarise_split_dir",
]

PARTS = ("train", "val", "test")
PROVENANCE_FILE = "provenance.json"


class SplitError(ValueError):
    """A split name or path that cannot be used (the message lists what is available)."""


@dataclass(frozen=True)
class PartInfo:
    """One part (train/val/test) of a benchmark: its file, class and clip counts, checksum."""

    file: str
    classes: int
    clips: int
    sha256: str
    classnames_file: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """A shipped benchmark split: name, provenance and per-part counts (from ``provenance.json``)."""

    name: str
    title: str
    directory: Path
    source: str
    protocol: str
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    parts: dict[str, PartInfo] = field(default_factory=dict)

    def part(self, part: str) -> PartInfo:
        if part not in self.parts:
            raise SplitError(f"split {self.name!r} has no part {part!r}; parts: {', '.join(self.parts)}")
        return self.parts[part]

    def path(self, part: str) -> Path:
        return self.directory / self.part(part).file

    def classnames_path(self, part: str) -> Path | None:
        info = self.part(part)
        return self.directory / info.classnames_file if info.classnames_file else None

    def provenance(self, part: str | None = None) -> dict:
        """What a result records about the split it used (name, source, counts, checksum)."""
        record = {"benchmark": self.name, "title": self.title, "source": self.source}
        if part is not None:
            info = self.part(part)
            record.update(part=part, file=info.file, classes=info.classes, clips=info.clips, sha256=info.sha256)
        return record


def split_directory() -> Path:
    """The folder of the shipped splits (inside the installed package)."""
    from importlib import resources

    return Path(str(resources.files("fsar.data") / "splits"))


@lru_cache(maxsize=1)
def _benchmarks() -> dict[str, Benchmark]:
    root = split_directory()
    found: dict[str, Benchmark] = {}
    for provenance in sorted(root.glob(f"*/{PROVENANCE_FILE}")):
        record = json.loads(provenance.read_text(encoding="utf-8"))
        parts = {name: PartInfo(**info) for name, info in record["parts"].items()}
        found[record["name"]] = Benchmark(
            name=record["name"], title=record["title"], directory=provenance.parent, source=record["source"],
            protocol=record["protocol"], aliases=tuple(record.get("aliases", ())), notes=tuple(record.get("notes", ())),
            parts=parts,
        )
    return found


def list_benchmarks() -> list[Benchmark]:
    """Every shipped benchmark split, in name order."""
    return list(_benchmarks().values())


def _lookup(name: str) -> Benchmark | None:
    key = name.strip().lower()
    for benchmark in _benchmarks().values():
        if key == benchmark.name or key in (alias.lower() for alias in benchmark.aliases):
            return benchmark
    return None


def near_benchmark_name(name: str) -> str | None:
    """The shipped benchmark whose name or alias ``name`` nearly spells (a typo), or None."""
    import difflib

    known = {alias.lower(): b.name for b in _benchmarks().values() for alias in (b.name, *b.aliases)}
    close = difflib.get_close_matches(name.strip().lower(), list(known), n=1, cutoff=0.8)
    return known[close[0]] if close else None


def get_benchmark(name: str) -> Benchmark:
    """The shipped benchmark ``name`` (or one of its aliases); unknown names list the known ones."""
    benchmark = _lookup(name)
    if benchmark is None:
        raise SplitError(f"unknown split {name!r}; shipped splits: {', '.join(_benchmarks())} (or give a path)")
    return benchmark


@dataclass(frozen=True)
class SplitRef:
    """A resolved evaluation split: the file to read, its class-names file, and where it came from."""

    path: Path
    classnames_file: Path | None
    benchmark: Benchmark | None = None
    part: str | None = None

    @property
    def label(self) -> str:
        return f"{self.benchmark.name}:{self.part}" if self.benchmark else str(self.path)

    def provenance(self) -> dict:
        if self.benchmark is not None:
            return self.benchmark.provenance(self.part)
        return {"file": str(self.path), "sha256": _sha256(self.path) if self.path.is_file() else None}


@dataclass(frozen=True)
class TrainingSplits:
    """The train and val split files of a benchmark (``--splits``); ``val`` may be absent for a folder."""

    train: SplitRef
    val: SplitRef | None

    @property
    def label(self) -> str:
        return self.train.benchmark.name if self.train.benchmark else str(self.train.path.parent)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.endswith(".txt")


def resolve_split(spec: str | Path, *, default_part: str = "test", classnames_file: str | Path | None = None) -> SplitRef:
    """``name``, ``name:part`` or a path to a split file -> :class:`SplitRef`.

    A path is used as given (its class-names file, if any, is found beside it by the manifest
    or passed as ``classnames_file``); a name takes ``default_part`` unless ``:part`` is given.
    """
    text = str(spec).strip()
    if not text:
        raise SplitError("empty split name")
    name, part = text, default_part
    if ":" in text:
        head, _, tail = text.rpartition(":")
        if _lookup(head) is not None:
            name, part = head, tail
    benchmark = _lookup(name)
    if benchmark is None:
        path = Path(text)
        if path.is_file():
            return SplitRef(path, Path(classnames_file) if classnames_file else None)
        if path.is_dir():
            raise SplitError(f"{path}: a split folder; --split takes a file (or NAME[:part]); --splits takes a folder")
        if _looks_like_path(text):
            raise SplitError(f"{path}: split file not found")
        get_benchmark(name)  # raises, listing the shipped names
    if part not in PARTS:
        raise SplitError(f"split {text!r}: unknown part {part!r}; parts: {', '.join(PARTS)}")
    classnames = Path(classnames_file) if classnames_file else benchmark.classnames_path(part)
    return SplitRef(benchmark.path(part), classnames, benchmark, part)


def resolve_training_splits(spec: str | Path) -> TrainingSplits:
    """``--splits``: a benchmark name (its train + val parts) or a folder with ``train.txt`` [+ ``val.txt``]."""
    text = str(spec).strip()
    benchmark = _lookup(text)
    if benchmark is not None:
        return TrainingSplits(resolve_split(f"{benchmark.name}:train"), resolve_split(f"{benchmark.name}:val"))
    path = Path(text)
    if path.is_dir():
        train = path / "train.txt"
        if not train.is_file():
            raise SplitError(f"{path}: no train.txt split file")
        val = path / "val.txt"
        return TrainingSplits(SplitRef(train, None), SplitRef(val, None) if val.is_file() else None)
    if path.is_file():
        raise SplitError(f"{path}: --splits takes a benchmark name or a folder with train.txt and val.txt, not a file")
    if _looks_like_path(text):
        raise SplitError(f"{path}: split folder not found")
    raise SplitError(f"unknown split {text!r}; shipped splits: {', '.join(_benchmarks())} (or give a folder)")


# --------------------------------------------------------------------------------------
# Provenance files: written once from the split files, checked by the tests.


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def summarise_split_dir(directory: str | Path) -> dict[str, dict]:
    """Per part: file, classes, clips and SHA-256, counted from the files themselves.

    Classes of an anonymised split (SSv2-Full ``train8``) are counted as distinct labels;
    ``classnames_file`` names the file that resolves them when one ships beside it.
    """
    from fsar.data.manifest import parse_split_file

    directory = Path(directory)
    parts: dict[str, dict] = {}
    for part in PARTS:
        path = directory / f"{part}.txt"
        if not path.is_file():
            continue
        entries = parse_split_file(path)
        classnames = directory / f"classnames_{part}.txt"
        parts[part] = {
            "file": path.name,
            "classes": len({label for label, _, _ in entries}),
            "clips": len(entries),
            "sha256": _sha256(path),
            "classnames_file": classnames.name if classnames.is_file() else None,
        }
    return parts


def comparability_note(ref: SplitRef, *, readable: int, missing_per_class: dict[str, int],
                       clips_per_class: dict[str, int], short_classes: dict[str, int]) -> list[str]:
    """What ``fsar data check --split NAME`` says about a local copy of a shipped split.

    How many of the listed clips are missing, the worst class, and whether a result on this
    copy stays comparable with the papers' tables (same protocol; the same clips only when
    nothing is missing).
    """
    if ref.benchmark is None:
        return []
    info = ref.benchmark.part(ref.part)
    missing = sum(missing_per_class.values())
    lines = [f"split {ref.label}: {ref.benchmark.title}; {ref.benchmark.source}",
             f"listed: {info.clips} clips of {info.classes} classes; found {readable}, missing or unreadable "
             f"{missing} ({100 * missing / max(1, info.clips):.1f}%)"]
    if missing == 0:
        lines.append("comparable: every listed clip is here, so episodes use exactly the papers' clips")
        return lines
    worst = max(missing_per_class, key=lambda c: missing_per_class[c] / max(1, missing_per_class[c] + clips_per_class.get(c, 0)))
    total = missing_per_class[worst] + clips_per_class.get(worst, 0)
    lines.append(f"worst class: {worst!r}, {missing_per_class[worst]} of {total} missing")
    if short_classes:
        lines.append("NOT comparable: some classes cannot fill an episode (listed below); find the missing videos")
    else:
        lines.append(
            "comparable in protocol, not clip for clip: episodes are drawn from the clips present (every class can "
            "still fill an episode). Report the count beside the accuracy (fsar eval's JSON records skipped_clips)."
        )
    if ref.benchmark.name == "kinetics-100":
        lines.append("Kinetics-100 clips are YouTube videos; ones taken down since 2018 cannot be downloaded again, "
                     "so most copies miss a few. Every copy's results should say how many.")
    return lines
