"""Data set manifests: which clips exist, and which class each belongs to.

Two sources:

(a) a folder layout ``root/<class name>/<video file or frame folder>``
    (:meth:`Manifest.from_folder`): the practitioner's "a folder per action";

(b) a standard few-shot split file, one ``label/video_id`` per line
    (:meth:`Manifest.from_split_file`): CMN's Kinetics-100 and SSv2-Small, ARN's UCF101
    and HMDB51, OTAM's SSv2-Full. Each entry is looked up under ``root`` as, in order,

    1. ``root/<label>/<video_id>/``           (a frame folder)
    2. ``root/<label>/<video_id>.<ext>``      (a video file; also ``<video_id>`` if it has its extension)
    3. ``root/<video_id>/``                    (flat layouts)
    4. ``root/<video_id>.<ext>``               (flat layouts, e.g. SSv2's raw ``<id>.webm``)

    SSv2-Full (OTAM split) anonymises labels as ``train8/78687``: ``N`` in ``trainN``
    indexes ``classnames_train.txt`` from 0 (checked against the files: ``train0`` clips
    are "Bending [something] until it breaks", the file's first line). The classnames
    file is given with ``classnames_file`` or, when every label is ``<split stem><N>``,
    found beside the split file as ``classnames_<stem>.txt``. The OTAM split ships no
    ``classnames_val.txt``, so validation labels stay as written (``val2``).
    For directory lookup, a class name is also tried without square brackets
    ("Closing [something]" -> "Closing something"), the spelling of SSv2 folder names.

A missing or unreadable entry does not stop anything: it becomes a :class:`Skipped`
with the reason, counted and reported by ``fsar data check``. Whether the remaining
clips can serve an episode is the episode sampler's question, answered with an error
naming the short classes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsar.data.video import (
    VIDEO_EXTENSIONS,
    VideoReadError,
    is_video_file,
    natural_key,
    open_video,
    unreachable_reason,
)
from fsar.errors import DataError

log = logging.getLogger(__name__)


class ManifestError(DataError):
    """A data root or split file that cannot be turned into a manifest at all."""


@dataclass(frozen=True)
class Clip:
    """One video (file or frame folder) and its class; ``label`` indexes ``Manifest.classes``."""

    path: Path
    label: int
    class_name: str


@dataclass(frozen=True)
class Skipped:
    """An entry left out of a manifest, and why (missing, unreadable, not a video, duplicate)."""

    path: Path
    reason: str
    class_name: str | None = None


@dataclass
class Manifest:
    """The clips of a data set, grouped by class. ``classes[label]`` names a clip's class.

    Classes whose every clip was skipped stay in ``classes`` (with no clips) so that labels
    keep their meaning and ``fsar data check`` can name them.
    """

    root: Path
    classes: list[str]
    clips: list[Clip]
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._by_class: dict[str, list[Clip]] = {name: [] for name in self.classes}
        if len(self._by_class) != len(self.classes):
            raise ManifestError(f"{self.root}: duplicate class names in {self.classes}")
        for clip in self.clips:
            if clip.class_name not in self._by_class:
                raise ManifestError(f"{clip.path}: class {clip.class_name!r} is not among the manifest's classes")
            if self.classes[clip.label] != clip.class_name:
                raise ManifestError(f"{clip.path}: label {clip.label} does not name class {clip.class_name!r}")
            self._by_class[clip.class_name].append(clip)

    def __len__(self) -> int:
        return len(self.clips)

    def clips_of(self, class_name: str) -> list[Clip]:
        """The clips of one class, in manifest order."""
        try:
            return list(self._by_class[class_name])
        except KeyError:
            raise ValueError(f"class {class_name!r} is not in the manifest of {self.root}") from None

    def counts(self) -> dict[str, int]:
        """Usable clips per class, in class order."""
        return {name: len(clips) for name, clips in self._by_class.items()}

    def subset(self, class_names: Iterable[str]) -> "Manifest":
        """The manifest restricted to ``class_names``, relabelled 0.. in the order given."""
        names = list(class_names)
        unknown = [name for name in names if name not in self._by_class]
        if unknown:
            raise ValueError(f"classes not in the manifest of {self.root}: {unknown}")
        clips = [Clip(c.path, names.index(c.class_name), c.class_name) for n in names for c in self._by_class[n]]
        wanted = set(names)
        skipped = [s for s in self.skipped if s.class_name in wanted]
        return Manifest(self.root, names, clips, skipped)

    # ----------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, root: str | Path, *, validate: bool = True, progress: bool = False) -> "Manifest":
        """``root/<class name>/<video file or frame folder>``.

        Names starting with '.' are ignored, and so are non-video files directly under ``root``
        (metadata such as ``synth.json``); anything else that is not a clip is a :class:`Skipped`.
        """
        root = _existing_dir(root)
        classes: list[str] = []
        candidates: list[tuple[Path, str]] = []
        skipped: list[Skipped] = []
        for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                # Metadata beside the classes (synth.json, README, split files) is not data; a video is misplaced.
                if entry.is_symlink() and not entry.exists():
                    skipped.append(Skipped(entry, f"class folder unreachable: {unreachable_reason(entry)}"))
                elif is_video_file(entry):
                    skipped.append(Skipped(entry, "video directly under the data root; expected ROOT/<class>/<video>"))
                continue
            classes.append(entry.name)
            for item in sorted(entry.iterdir(), key=lambda p: natural_key(p.name)):
                if item.name.startswith("."):
                    continue
                if item.is_symlink() and not item.exists():
                    skipped.append(Skipped(item, unreachable_reason(item), entry.name))
                elif item.is_dir() or is_video_file(item):
                    candidates.append((item, entry.name))
                else:
                    skipped.append(
                        Skipped(item, f"not a video file ({', '.join(VIDEO_EXTENSIONS)}) or frame folder", entry.name)
                    )
        if not classes:
            raise ManifestError(f"{root}: no class folders found (expected ROOT/<class name>/<video>)")
        return cls._build(root, classes, candidates, skipped, validate=validate, progress=progress)

    @classmethod
    def from_split_file(
        cls,
        root: str | Path,
        split_file: str | Path,
        *,
        classnames_file: str | Path | None = None,
        validate: bool = True,
        progress: bool = False,
    ) -> "Manifest":
        """Entries of a ``label/video_id`` split file, resolved under ``root`` (see the module docstring)."""
        root = _existing_dir(root)
        split_file = Path(split_file)
        entries = parse_split_file(split_file)
        classnames_path = Path(classnames_file) if classnames_file is not None else _sibling_classnames(split_file, entries)
        if classnames_path is not None:
            classes = read_classnames(classnames_path)
            class_of = {label: _resolve_anonymised(label, classes, split_file, line) for label, _, line in entries}
            log.info("%s: labels resolved through %s", split_file, classnames_path)
        else:
            classes = sorted({label for label, _, _ in entries}, key=natural_key)
            class_of = {name: name for name in classes}

        finder = _Finder(root)
        root_text = str(root)
        candidates: list[tuple[Path, str]] = []
        skipped: list[Skipped] = []
        seen: set[tuple[str, str]] = set()
        for label, video_id, line in entries:
            class_name = class_of[label]
            if (class_name, video_id) in seen:
                skipped.append(Skipped(Path(os.path.join(root_text, class_name, video_id)), f"duplicate entry ({split_file}:{line})", class_name))
                continue
            seen.add((class_name, video_id))
            # Directory spellings to try: the class name, the raw (anonymised) label, the name without brackets.
            class_dirs = list(dict.fromkeys([class_name, label, class_name.replace("[", "").replace("]", "")]))
            path = finder.find(class_dirs, video_id)
            if path is None:
                skipped.append(
                    Skipped(
                        Path(os.path.join(root_text, class_name, video_id)),  # one parse: splits have 10^5 lines
                        f"not found under {root} (tried <class>/{video_id}[/ or .ext] and {video_id}[/ or .ext]; "
                        f"{split_file.name}:{line})",
                        class_name,
                    )
                )
                continue
            candidates.append((path, class_name))
        return cls._build(root, classes, candidates, skipped, validate=validate, progress=progress)

    @classmethod
    def _build(
        cls,
        root: Path,
        classes: list[str],
        candidates: Sequence[tuple[Path, str]],
        skipped: list[Skipped],
        *,
        validate: bool,
        progress: bool,
    ) -> "Manifest":
        label_of = {name: i for i, name in enumerate(classes)}
        clips: list[Clip] = []
        items: Iterable[tuple[Path, str]] = candidates
        if validate and progress:
            from tqdm import tqdm

            items = tqdm(candidates, desc="checking clips", unit="clip")
        for path, class_name in items:
            if validate:
                try:
                    open_video(path)
                except VideoReadError as error:
                    skipped.append(Skipped(path, error.reason, class_name))
                    continue
            clips.append(Clip(path, label_of[class_name], class_name))
        if skipped:
            log.warning("%s: %d entr%s skipped (missing or unreadable)", root, len(skipped), "y" if len(skipped) == 1 else "ies")
        return cls(root, classes, clips, skipped)


# --------------------------------------------------------------------------------------
# Split files


def parse_split_file(split_file: str | Path) -> list[tuple[str, str, int]]:
    """``(label, video_id, line number)`` per non-blank line of ``label/video_id``.

    The split is at the *last* '/', so video ids never contain one and class names may.
    """
    split_file = Path(split_file)
    entries = []
    for number, raw in _text_lines(split_file, "split file"):
        line = raw
        if not line:
            continue
        label, sep, video_id = line.rpartition("/")
        if not sep or not label or not video_id:
            raise ManifestError(f"{split_file}:{number}: expected 'label/video_id', got {raw!r}")
        entries.append((label, video_id, number))
    if not entries:
        raise ManifestError(f"{split_file}: split file has no entries")
    return entries


def _text_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of a UTF-8 text file, read as its author meant it:
    a byte-order mark (at the start, or where two files were concatenated) is not part of a
    name, CRLF and CR line ends are line ends, and surrounding whitespace is dropped (blank
    lines become empty strings, which callers skip)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: {what} is not UTF-8 text ({error})") from None
    except OSError as error:
        reason = unreachable_reason(path) if not path.exists() else error.strerror or str(error)
        raise ManifestError(f"{path}: cannot read {what} ({reason})") from None
    if "\x00" in text:
        raise ManifestError(f"{path}: {what} holds NUL bytes (a binary file, or UTF-16 text; save it as UTF-8)")
    return [(number, raw.replace("\ufeff", "").strip()) for number, raw in enumerate(text.splitlines(), start=1)]


def read_classnames(classnames_file: str | Path) -> list[str]:
    """One class name per non-blank line; line i (from 0) names anonymised label ``<split>i``."""
    path = Path(classnames_file)
    names = [line for _, line in _text_lines(path, "class names file") if line]
    if not names:
        raise ManifestError(f"{path}: class names file is empty")
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}: class names file repeats names")
    return names


_ANONYMISED = re.compile(r"^([A-Za-z_]*?)(\d+)$")


def _resolve_anonymised(label: str, classes: list[str], split_file: Path, line: int) -> str:
    match = _ANONYMISED.match(label)
    if match is None:
        raise ManifestError(f"{split_file}:{line}: label {label!r} is not of the form <split><N> the class names file needs")
    index = int(match.group(2))
    if index >= len(classes):
        raise ManifestError(
            f"{split_file}:{line}: label {label!r} indexes class {index}, but the class names file has {len(classes)}"
        )
    return classes[index]


def _sibling_classnames(split_file: Path, entries: list[tuple[str, str, int]]) -> Path | None:
    """``classnames_<stem>.txt`` beside the split file, if every label is ``<stem><N>``."""
    candidate = split_file.with_name(f"classnames_{split_file.stem}.txt")
    pattern = re.compile(rf"^{re.escape(split_file.stem)}\d+$")
    if candidate.is_file() and all(pattern.match(label) for label, _, _ in entries):
        return candidate
    return None


class _Finder:
    """Resolves ``label/video_id`` under a root, listing each directory once (no stat per guess)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[Path, tuple[set[str], dict[str, str]]] = {}

    def _listing(self, directory: Path) -> tuple[set[str], dict[str, str]]:
        """(sub-directory names, video stem -> file name) of ``directory``; empty when absent."""
        if directory not in self._listings:
            dirs: set[str] = set()
            videos: dict[str, str] = {}
            try:
                for entry in directory.iterdir():
                    if entry.is_dir():
                        dirs.add(entry.name)
                    elif is_video_file(entry):
                        videos.setdefault(entry.stem, entry.name)
                        videos.setdefault(entry.name, entry.name)
            except OSError:
                pass
            self._listings[directory] = (dirs, videos)
        return self._listings[directory]

    def find(self, class_dirs: list[str], video_id: str) -> Path | None:
        root_dirs, _ = self._listing(self.root)
        for name in class_dirs:
            if name not in root_dirs:
                continue
            directory = self.root / name
            dirs, videos = self._listing(directory)
            if video_id in dirs:
                return directory / video_id
            if video_id in videos:
                return directory / videos[video_id]
        dirs, videos = self._listing(self.root)
        if video_id in dirs and video_id not in class_dirs:
            return self.root / video_id
        if video_id in videos:
            return self.root / videos[video_id]
        return None


def _existing_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        reason = "a file, not a directory" if root.exists() else unreachable_reason(root)
        raise ManifestError(f"{root}: data root is not a directory ({reason})")
    return root
