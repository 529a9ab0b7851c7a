"""The description cache of LGA's textual anatomy: one reviewable JSON file, and the
resolution cache -> LLM describer -> template fallback for a list of class names.

The cache (:class:`DescriptionCache`) is a JSON file with one entry per class name and
L, read first and written atomically (temporary file + ``os.replace``); entries can be
edited by hand and shipped with a data set::

    {"format": "fsar-lga-descriptions", "version": 1,
     "descriptions": {"Closing something": {"3": {"stages": ["...", "...", "..."],
                                                   "source": "chat:qwen2.5-7b-instruct"}}}}

An entry whose ``source`` is ``"template"`` was filled by the fallback and is replaced as
soon as an LLM describer is available; any other source (set it to ``"manual"`` after
editing) is kept as written. The describers are :mod:`fsar.lga.llm`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from fsar.lga.llm import TEMPLATE_SOURCE, Describer, TemplateDescriber, parse_stages
from fsar.options import MethodOption

__all__ = [
    "CACHE_FORMAT",
    "DESCRIPTIONS_OPTION",
    "DescriptionCache",
    "DescriptionReport",
    "descriptions_for",
    "load_descriptions",
    "read_class_names",
    "resolve_descriptions",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = "fsar-lga-descriptions"
CACHE_VERSION = 1

#: ``--descriptions CACHE.json`` of the lga method.
DESCRIPTIONS_OPTION = MethodOption(
    "descriptions", str,
    "LGA description cache (read first; missing classes are filled by the LLM or the template "
    "fallback and written back)",
    metavar="CACHE.json",
)

# ----------------------------------------------------------------------------- cache


@dataclass
class CacheEntry:
    stages: list[str]
    source: str


class DescriptionCache:
    """One JSON file of descriptions, one entry per (class name, L); see the module docstring.

    Reading validates every entry (errors name the file and the class). :meth:`save`
    writes atomically, so an interrupted run never leaves a half-written cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[int, CacheEntry]] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"description cache {self.path}: cannot read JSON: {error}") from None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"description cache {self.path}: not an {CACHE_FORMAT!r} file (missing 'format')"
            )
        if data.get("version") != CACHE_VERSION:
            raise ValueError(
                f"description cache {self.path}: unsupported version {data.get('version')!r}"
            )
        descriptions = data.get("descriptions")
        if not isinstance(descriptions, dict):
            raise ValueError(f"description cache {self.path}: 'descriptions' must be an object")
        for class_name, by_length in descriptions.items():
            if not isinstance(by_length, dict):
                raise ValueError(
                    f"description cache {self.path}: class {class_name!r} must map L to an entry"
                )
            for key, entry in by_length.items():
                where = f"description cache {self.path}: class {class_name!r}, L={key}"
                if not str(key).isdigit():
                    raise ValueError(f"{where}: L must be a positive integer")
                if not isinstance(entry, dict) or "stages" not in entry:
                    raise ValueError(f"{where}: entry must be an object with 'stages'")
                try:
                    stages = parse_stages(json.dumps({"stages": entry["stages"]}), int(key))
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from None
                source = entry.get("source", "manual")
                self.entries.setdefault(class_name, {})[int(key)] = CacheEntry(stages, str(source))

    def get(self, class_name: str, num_stages: int) -> CacheEntry | None:
        return self.entries.get(class_name, {}).get(num_stages)

    def put(self, class_name: str, stages: Sequence[str], source: str) -> None:
        self.entries.setdefault(class_name, {})[len(stages)] = CacheEntry(list(stages), source)

    def to_json(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "descriptions": {
                name: {
                    str(length): {"stages": entry.stages, "source": entry.source}
                    for length, entry in sorted(by_length.items())
                }
                for name, by_length in sorted(self.entries.items())
            },
        }

    def save(self) -> None:
        """Write the cache atomically (temporary file in the same folder, then os.replace)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# ----------------------------------------------------------------------------- resolution


@dataclass
class DescriptionReport:
    """Where each class's descriptions came from in one :func:`resolve_descriptions` call."""

    cached: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    template: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.cached)} from cache, {len(self.generated)} generated by the LLM, "
            f"{len(self.template)} from the template fallback"
        )


def resolve_descriptions(
    class_names: Sequence[str],
    *,
    num_stages: int = 3,
    cache: DescriptionCache | None = None,
    describer: Describer | None = None,
    progress: bool = False,
    on_generated: Callable[[], None] | None = None,
) -> tuple[dict[str, list[str]], DescriptionReport]:
    """Descriptions for every class: cache first, then ``describer``, then the template.

    A cached ``"template"`` entry counts as missing when an LLM ``describer`` is given.
    New entries are put into ``cache`` (the caller saves it; ``on_generated`` is called
    after each LLM answer so long runs can save as they go). Logs a warning naming the
    classes that fell back to the template.
    """
    report = DescriptionReport()
    out: dict[str, list[str]] = {}
    template = TemplateDescriber()
    names = list(dict.fromkeys(class_names))
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="describing classes", unit="class")
    for name in iterator:
        entry = cache.get(name, num_stages) if cache is not None else None
        if entry is not None and not (entry.source == TEMPLATE_SOURCE and describer is not None):
            out[name] = entry.stages
            (report.template if entry.source == TEMPLATE_SOURCE else report.cached).append(name)
            continue
        if describer is not None:
            stages = describer.describe(name, num_stages)
            report.generated.append(name)
            source = describer.source
        else:
            stages = template.describe(name, num_stages)
            report.template.append(name)
            source = TEMPLATE_SOURCE
        out[name] = stages
        if cache is not None:
            cache.put(name, stages, source)
            if on_generated is not None and source != TEMPLATE_SOURCE:
                on_generated()
    if report.template:
        shown = ", ".join(repr(n) for n in report.template[:5])
        more = f" and {len(report.template) - 5} more" if len(report.template) > 5 else ""
        log.warning(
            "no LLM description for %d class(es) (%s%s): using the template fallback "
            "'the start/middle/end of <label>' -- configure --llm-url/--llm-model or "
            "--llm-folder, or edit the cache, for real textual anatomy",
            len(report.template),
            shown,
            more,
        )
    return out, report


def load_descriptions(
    class_names: Sequence[str],
    *,
    cache_path: str | Path | None = None,
    describer: Describer | None = None,
    num_stages: int = 3,
    save: bool = True,
    progress: bool = False,
) -> dict[str, list[str]]:
    """Descriptions for ``class_names`` from the cache file, filling gaps and saving it back.

    Without a cache file the describer (or the template) fills everything in memory.
    The cache is saved after every LLM answer, so an interrupted run keeps its work.
    """
    cache = DescriptionCache(cache_path) if cache_path is not None else None
    save_now = cache.save if (cache is not None and save) else None
    descriptions, report = resolve_descriptions(
        class_names,
        num_stages=num_stages,
        cache=cache,
        describer=describer,
        progress=progress,
        on_generated=save_now,
    )
    if save_now is not None and (report.generated or report.template):
        save_now()
    log.info("LGA descriptions: %s", report.summary())
    return descriptions


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line; blank lines are skipped, duplicates are an error."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read class names from {path}: {error}") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise ValueError(f"{path}:{number}: class {name!r} repeats line {seen[name]}")
        seen[name] = number
        names.append(name)
    if not names:
        raise ValueError(f"{path}: no class names (expected one per line)")
    return names


def descriptions_for(
    cache_path: str | Path | None,
    *,
    describer: Describer | None,
    class_names: Sequence[str] | None,
    num_stages: int,
) -> dict[str, list[str]] | None:
    """What LGA starts from: with ``class_names`` and a cache file, the cache read and
    completed for those classes (and saved); with a cache file alone, its entries of length
    ``num_stages`` (template entries are left out when an LLM is available: the method
    re-describes them); without a cache file, the describer's answers for ``class_names``
    (None when there is neither)."""
    if cache_path is not None:
        if class_names:
            return load_descriptions(class_names, cache_path=cache_path, describer=describer, num_stages=num_stages)
        cache = DescriptionCache(cache_path)
        return {
            name: by_length[num_stages].stages
            for name, by_length in cache.entries.items()
            if num_stages in by_length
            and not (describer is not None and by_length[num_stages].source == TEMPLATE_SOURCE)
        }
    if class_names and describer is not None:
        return load_descriptions(class_names, describer=describer, num_stages=num_stages)
    return None
