"""``fsar data check``: can this data set serve the episodes you are about to ask of it?

Reports classes, videos per class, frames per video (min/median/max), missing and
unreadable entries (with reasons), non-image files inside frame folders, and
byte-identical duplicate videos (a duplicate across classes is label noise; across
support and query it inflates accuracy). Every clip is opened and its first and last frames
decoded together with the ``num_frames`` frames evaluation episodes sample (TSN segment
centres, T=8 by default), so a truncated file or a corrupt frame that evaluation would read
shows up here rather than in the middle of a 10,000-episode evaluation. Training samples a
random frame of each segment, so only ``deep=True`` (decode every frame) proves every frame
readable; the report says which of the two was done (``checked_frames``).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fsar.data.manifest import Clip, Manifest, Skipped
from fsar.data.video import FrameFolderReader, VideoReadError, natural_key, open_video


@dataclass
class ClassReport:
    name: str
    videos: int
    frames_min: int | None
    frames_median: float | None
    frames_max: int | None
    skipped: int


@dataclass
class CheckReport:
    """Everything ``fsar data check`` found; ``ok`` says whether the episode request can be served."""

    root: str
    split_file: str | None
    way: int
    shot: int
    queries: int
    classes: list[ClassReport]
    videos: int
    frames_min: int | None
    frames_median: float | None
    frames_max: int | None
    skipped: list[dict]
    ignored_files: dict[str, int]
    duplicates: list[list[str]]
    usable_classes: int
    short_classes: dict[str, int]
    ok: bool
    message: str
    #: Which frames of each clip were decoded: "all" (deep) or "first, last and the T evaluation frames".
    checked_frames: str = ""
    manifest: Manifest | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("manifest", None)
        return data

    def write_json(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_dict(), handle, indent=2, ensure_ascii=False)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def format(self, *, max_listed: int = 20) -> str:
        """Human-readable report."""
        lines = [f"data root: {self.root}"]
        if self.split_file:
            lines.append(f"split file: {self.split_file}")
        with_clips = sum(1 for c in self.classes if c.videos)
        lines.append(f"classes: {len(self.classes)} ({with_clips} with readable videos)")
        lines.append(f"videos: {self.videos} readable, {len(self.skipped)} skipped (missing or unreadable)")
        if self.videos:
            counts = [c.videos for c in self.classes]
            lines.append(
                f"videos per class: min {min(counts)} / median {_fmt(statistics.median(counts))} / max {max(counts)}"
            )
            lines.append(
                f"frames per video: min {self.frames_min} / median {_fmt(self.frames_median)} / max {self.frames_max}"
            )
        width = max((len(c.name) for c in self.classes), default=5)
        lines.append("")
        lines.append(f"  {'class':<{width}}  videos  frames min/median/max  skipped")
        for c in self.classes:
            frames = "-" if c.frames_min is None else f"{c.frames_min}/{_fmt(c.frames_median)}/{c.frames_max}"
            lines.append(f"  {c.name:<{width}}  {c.videos:>6}  {frames:>21}  {c.skipped:>7}")
        if self.skipped:
            lines.append("")
            lines.append(f"skipped ({len(self.skipped)}):")
            for s in self.skipped[:max_listed]:
                lines.append(f"  {s['path']}: {s['reason']}")
            if len(self.skipped) > max_listed:
                lines.append(f"  ... and {len(self.skipped) - max_listed} more (see --json)")
        if self.ignored_files:
            total = sum(self.ignored_files.values())
            lines.append("")
            lines.append(f"non-image files ignored in {len(self.ignored_files)} frame folder(s): {total}")
            for path, n in list(self.ignored_files.items())[:max_listed]:
                lines.append(f"  {path}: {n}")
        lines.append("")
        if self.duplicates:
            lines.append(f"byte-identical duplicates: {len(self.duplicates)} group(s)")
            for group in self.duplicates[:max_listed]:
                lines.append("  " + "  ==  ".join(group))
        else:
            lines.append("byte-identical duplicates: none")
        if self.checked_frames:
            lines.append("")
            lines.append(f"frames decoded per video: {self.checked_frames}")
        lines.append("")
        lines.append(("OK: " if self.ok else "NOT OK: ") + self.message)
        return "\n".join(lines)


def check_dataset(
    root: str | Path,
    *,
    split_file: str | Path | None = None,
    classnames_file: str | Path | None = None,
    way: int = 5,
    shot: int = 1,
    queries: int = 1,
    deep: bool = False,
    num_frames: int = 8,
    duplicates: bool = True,
    progress: bool = False,
) -> CheckReport:
    """Check a data root (folder layout, or entries of a split file) against a way/shot/queries request.

    Raises :class:`~fsar.data.manifest.ManifestError` when no manifest can be built at all
    (missing root, malformed split file); everything else is reported. Each clip's first and
    last frames and the ``num_frames`` evaluation (TSN centre) frames are decoded; ``deep``
    decodes every frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if split_file is not None:
        listed = Manifest.from_split_file(root, split_file, classnames_file=classnames_file, validate=False)
    else:
        listed = Manifest.from_folder(root, validate=False)
    skipped: list[Skipped] = list(listed.skipped)
    readable: list[Clip] = []
    frames_of: dict[Path, int] = {}
    ignored: dict[str, int] = {}
    clips = listed.clips
    if progress:
        from tqdm import tqdm

        clips = tqdm(clips, desc="checking videos", unit="video")
    for clip in clips:
        try:
            reader = open_video(clip.path)
            n = reader.num_frames
            reader.read(list(range(n)) if deep else _frames_to_check(n, num_frames))
            n = reader.num_frames  # a header that overstated the count is corrected by reading
        except VideoReadError as error:
            skipped.append(Skipped(clip.path, error.reason, clip.class_name))
            continue
        if isinstance(reader, FrameFolderReader) and reader.ignored_files:
            ignored[str(clip.path)] = reader.ignored_files
        frames_of[clip.path] = n
        readable.append(clip)
    manifest = Manifest(listed.root, listed.classes, readable, skipped)

    need = shot + queries
    counts = manifest.counts()
    skipped_per_class: dict[str, int] = defaultdict(int)
    for s in skipped:
        if s.class_name is not None:
            skipped_per_class[s.class_name] += 1
    class_reports = []
    for name in manifest.classes:
        frames = [frames_of[c.path] for c in manifest.clips_of(name)]
        class_reports.append(
            ClassReport(
                name=name,
                videos=len(frames),
                frames_min=min(frames) if frames else None,
                frames_median=statistics.median(frames) if frames else None,
                frames_max=max(frames) if frames else None,
                skipped=skipped_per_class.get(name, 0),
            )
        )
    all_frames = list(frames_of.values())
    usable = [name for name, n in counts.items() if n >= need]
    short = {name: n for name, n in counts.items() if n < need}
    ok = len(usable) >= way
    request = f"{way}-way {shot}-shot with {queries} quer{'y' if queries == 1 else 'ies'} per class"
    if ok:
        message = f"{request}: {len(usable)} of {len(counts)} classes have the {need} videos an episode needs"
        if short:
            message += f" ({len(short)} short class(es) will not be sampled: {_name_counts(short)})"
    else:
        message = (
            f"{request} needs {way} classes with at least {need} videos each; only {len(usable)} of "
            f"{len(counts)} classes qualify" + (f"; short: {_name_counts(short)}" if short else "")
        )
    return CheckReport(
        root=str(manifest.root),
        split_file=None if split_file is None else str(split_file),
        way=way,
        shot=shot,
        queries=queries,
        classes=class_reports,
        videos=len(readable),
        frames_min=min(all_frames) if all_frames else None,
        frames_median=statistics.median(all_frames) if all_frames else None,
        frames_max=max(all_frames) if all_frames else None,
        skipped=[{"path": str(s.path), "reason": s.reason, "class": s.class_name} for s in skipped],
        ignored_files=ignored,
        duplicates=find_duplicates(readable) if duplicates else [],
        usable_classes=len(usable),
        short_classes=short,
        ok=ok,
        message=message,
        checked_frames=(
            "all (--deep)" if deep else
            f"first, last and the {num_frames} frames evaluation samples (TSN segment centres, T={num_frames}); "
            "training may sample other frames: --deep decodes every frame"
        ),
        manifest=manifest,
    )


def _frames_to_check(num_frames_in_clip: int, segments: int) -> list[int]:
    """First, last and the evaluation-time TSN frames of a clip of ``num_frames_in_clip`` frames."""
    from fsar.data.sampling import sample_indices

    wanted = {0, num_frames_in_clip - 1}
    wanted.update(sample_indices(num_frames_in_clip, segments, mode="tsn", train=False))
    return sorted(wanted)


def find_duplicates(clips: list[Clip]) -> list[list[str]]:
    """Groups (of 2+) of byte-identical videos, as ``"<class>: <path>"`` strings.

    Files are grouped by size first and only same-size ones are hashed (SHA-256); a frame
    folder's content is its frames' bytes concatenated in natural order.
    """
    by_size: dict[int, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_size[_content_size(clip.path)].append(clip)
    by_hash: dict[str, list[Clip]] = defaultdict(list)
    for group in by_size.values():
        if len(group) < 2:
            continue
        for clip in group:
            by_hash[_content_hash(clip.path)].append(clip)
    groups = [
        [f"{c.class_name}: {c.path}" for c in sorted(group, key=lambda c: natural_key(str(c.path)))]
        for group in by_hash.values()
        if len(group) > 1
    ]
    return sorted(groups, key=lambda g: natural_key(g[0]))


def _frame_files(path: Path) -> list[Path]:
    return FrameFolderReader(path).frame_paths


def _content_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in _frame_files(path))
    return path.stat().st_size


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = _frame_files(path) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _name_counts(counts: dict[str, int], limit: int = 20) -> str:
    """'name' (n), ..., the fullest classes first: those are the ones a little more data would fix."""
    items = sorted(counts.items(), key=lambda item: -item[1])
    text = ", ".join(f"{name!r} ({n})" for name, n in items[:limit])
    if len(items) > limit:
        text += f" and {len(items) - limit} more"
    return text


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
