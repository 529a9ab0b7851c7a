"""M-way K-shot episodes: ``way`` classes, ``shot`` support clips and ``queries`` query clips each.

Episode ``i`` of a sampler is a pure function of ``(seed, i)`` and the manifest: its
random generator is seeded from a hash of the two numbers, never from state carried
between episodes. So evaluation episode 7342 is the same clips for every method, in
any order of evaluation, resumed or split across workers — what makes accuracies of
different methods comparable on the same 10,000 episodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fsar.data.manifest import Clip, Manifest
from fsar.errors import DataError


class EpisodeError(DataError):
    """The manifest cannot serve the requested way/shot/queries; the message names the short classes."""


@dataclass(frozen=True)
class Episode:
    """One episode. Support and query are class-major: labels ``[0]*shot + [1]*shot + ...``;
    label ``c`` is ``class_names[c]``."""

    class_names: list[str]
    support: list[Clip]
    support_labels: list[int]
    query: list[Clip]
    query_labels: list[int]

    @property
    def way(self) -> int:
        return len(self.class_names)


def episode_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed from (seed, episode index), stable across runs and platforms."""
    digest = hashlib.sha256(f"fsar-episode:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EpisodeSampler:
    """Episodes of ``way`` classes x (``shot`` support + ``queries`` query clips).

    Only classes with at least ``shot + queries`` clips take part (``usable_classes``);
    fewer usable classes than ``way`` is an :class:`EpisodeError` naming the short ones.
    """

    def __init__(self, manifest: Manifest, *, way: int, shot: int, queries: int, seed: int) -> None:
        for name, value in (("way", way), ("shot", shot), ("queries", queries)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.manifest = manifest
        self.way, self.shot, self.queries, self.seed = way, shot, queries, seed
        need = shot + queries
        counts = manifest.counts()
        self.usable_classes = [name for name, n in counts.items() if n >= need]
        self.short_classes = {name: n for name, n in counts.items() if n < need}
        if len(self.usable_classes) < way:
            listed = list(self.short_classes.items())
            short = ", ".join(f"{name!r} ({n} clip{'s' if n != 1 else ''})" for name, n in listed[:20])
            if len(listed) > 20:
                short += f" and {len(listed) - 20} more"
            raise EpisodeError(
                f"{manifest.root}: a {way}-way {shot}-shot episode with {queries} quer{'y' if queries == 1 else 'ies'} "
                f"per class needs {way} classes with at least {need} clips each; {len(self.usable_classes)} of "
                f"{len(counts)} classes qualify" + (f"; short: {short}" if short else "")
            )
        self._clips = {name: manifest.clips_of(name) for name in self.usable_classes}

    def episode(self, index: int) -> Episode:
        """Episode ``index``: depends only on (seed, index) and the manifest."""
        generator = torch.Generator().manual_seed(episode_seed(self.seed, index))
        order = torch.randperm(len(self.usable_classes), generator=generator)[: self.way].tolist()
        class_names = [self.usable_classes[i] for i in order]
        support: list[Clip] = []
        query: list[Clip] = []
        for name in class_names:
            clips = self._clips[name]
            picks = torch.randperm(len(clips), generator=generator)[: self.shot + self.queries].tolist()
            support.extend(clips[i] for i in picks[: self.shot])
            query.extend(clips[i] for i in picks[self.shot :])
        return Episode(
            class_names=class_names,
            support=support,
            support_labels=[c for c in range(self.way) for _ in range(self.shot)],
            query=query,
            query_labels=[c for c in range(self.way) for _ in range(self.queries)],
        )

    def __iter__(self) -> Iterator[Episode]:
        """Episodes 0, 1, 2, ... without end."""
        index = 0
        while True:
            yield self.episode(index)
            index += 1

    def take(self, n: int, *, start: int = 0) -> list[Episode]:
        """Episodes ``start .. start + n - 1``."""
        return [self.episode(i) for i in range(start, start + n)]

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({self.way}-way {self.shot}-shot, {self.queries} quer{'y' if self.queries == 1 else 'ies'}, "
            f"seed={self.seed}, "
            f"{len(self.usable_classes)} usable classes)"
        )
