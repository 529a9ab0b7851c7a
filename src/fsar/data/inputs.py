"""The model-ready form of one episode (built by the data layer or the feature cache)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from fsar.errors import CacheError

#: Roles a named stream can have in an episode: one row per support clip, per query clip, or per class.
STREAM_ROLES = ("support", "query", "class")

#: The name of the primary per-frame stream (``support``/``query`` of a feature episode; the cache's
#: tensors named by bare clip path).
PRIMARY_STREAM = "features"


class MissingStreamError(CacheError, KeyError):
    """An episode (or a feature cache) lacks a named stream a method asked for.

    ``str()`` is a readable sentence: the stream, its role, the streams that are present, and how
    to get the missing one (extract it with the backbone that produces it).
    """

    def __init__(
        self,
        stream: str,
        role: str,
        present: Iterable[str] = (),
        *,
        where: str = "episode",
        how: str | None = None,
    ) -> None:
        self.stream = stream
        self.role = role
        self.present = tuple(sorted(present))
        self.where = where
        self.how = how or (
            f"streams besides the frames come from the feature cache: run `fsar extract --data ROOT --backbone B "
            f"--out DIR ...` with a backbone B whose encoder produces {stream!r} "
            f"(Encoder.clip_stream_names() / class_stream_names()), then train or evaluate with that cache"
        )
        shown = ", ".join(repr(s) for s in self.present) or "none"
        message = f"{where} has no {role} stream {stream!r} (its {role} streams: {shown}); {self.how}"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, eq=False)
class CachedRows:
    """Which cached clips the rows of a feature episode are, as the feature cache that built it
    names them: ``support[i]`` / ``query[i]`` name row i (the same name means the same features
    for as long as the cache is open; names of two caches never meet). The names describe exactly
    the tensors given here (this object, as it was built): :meth:`rows_of` answers for nothing
    else, so an episode whose features were replaced or modified carries no names.

    Per-clip memories of evaluation (:class:`fsar.methods.memo.ClipMemo`) find rows by these names
    instead of by content. They carry nothing about labels.
    """

    support: tuple
    query: tuple
    support_tensor: torch.Tensor
    query_tensor: torch.Tensor
    support_version: int
    query_version: int

    @classmethod
    def of(cls, support: torch.Tensor, support_ids, query: torch.Tensor, query_ids) -> "CachedRows":
        return cls(tuple(support_ids), tuple(query_ids), support, query, support._version, query._version)

    def rows_of(self, tensor: torch.Tensor) -> tuple | None:
        """The names of ``tensor``'s rows, when it is this episode's unmodified support or query."""
        if tensor is self.support_tensor and tensor._version == self.support_version:
            return self.support
        if tensor is self.query_tensor and tensor._version == self.query_version:
            return self.query
        return None


@dataclass
class EpisodeInputs:
    """One M-way K-shot episode, ready for a model.

    support: (n_support, T, C, H, W) normalised frames, or (n_support, T, D) features
        when ``features`` is True.
    support_labels: (n_support,) int64 in 0..way-1.
    query: (n_query, T, C, H, W) or (n_query, T, D).
    query_labels: (n_query,) int64, given in training (and evaluation, for scoring);
        a method must never let it influence its predictions.
    class_names: the way class names; index = episode label.
    features: True when support/query hold cached encoder features, not frames.
    support_streams: extra named per-clip streams, each (n_support, ...), rows in support order.
    query_streams: the same names, each (n_query, ...), rows in query order.
    class_streams: named per-class streams, each (way, ...), rows in ``class_names`` order.
    cached_rows: the feature cache's names of the support and query rows (:class:`CachedRows`),
        or None.

    The shape after the first dimension of each extra stream is the encoder's (documented in its
    docstring and recorded in the cache index). Read a stream with :meth:`stream`, which raises
    :class:`MissingStreamError` naming what is missing and how to extract it.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    class_names: list[str]
    query_labels: torch.Tensor | None = None
    features: bool = False
    support_streams: dict[str, torch.Tensor] = field(default_factory=dict)
    query_streams: dict[str, torch.Tensor] = field(default_factory=dict)
    class_streams: dict[str, torch.Tensor] = field(default_factory=dict)
    cached_rows: CachedRows | None = None

    @property
    def way(self) -> int:
        return len(self.class_names)

    def stream(self, name: str, role: str) -> torch.Tensor:
        """The stream ``name`` of ``role`` (``support``: (n_support, ...), ``query``: (n_query, ...),
        ``class``: (way, ...)). ``"features"`` of a feature episode is ``support``/``query`` itself."""
        if role not in STREAM_ROLES:
            raise ValueError(f"EpisodeInputs.stream: role must be one of {STREAM_ROLES}, got {role!r}")
        streams = {"support": self.support_streams, "query": self.query_streams, "class": self.class_streams}[role]
        if name in streams:
            return streams[name]
        if name == PRIMARY_STREAM and self.features and role != "class":
            return self.support if role == "support" else self.query
        present = set(streams)
        if self.features and role != "class":
            present.add(PRIMARY_STREAM)
        raise MissingStreamError(name, role, present)

    def to(self, device: torch.device | str) -> "EpisodeInputs":
        """A copy with every tensor (labels and named streams included) on ``device``."""
        return EpisodeInputs(
            support=self.support.to(device),
            support_labels=self.support_labels.to(device),
            query=self.query.to(device),
            class_names=self.class_names,
            query_labels=None if self.query_labels is None else self.query_labels.to(device),
            features=self.features,
            support_streams={k: v.to(device) for k, v in self.support_streams.items()},
            query_streams={k: v.to(device) for k, v in self.query_streams.items()},
            class_streams={k: v.to(device) for k, v in self.class_streams.items()},
            cached_rows=self.cached_rows,  # names only what is still the very same tensor (rows_of)
        )
