"""Evaluation-time memory of per-clip computations on cached features.

With a frozen encoder, an evaluation of 10,000 episodes visits the same few thousand test
clips again and again (100 distinct clips serve 60,000 support slots in 2000 5-shot
episodes), and everything a method computes for one clip before the episode-level matching
(the projection into the joint space, TPCM / prototype modulation, the temporal mean) is a
pure function of that clip's features and, for a support clip, its class text. :class:`ClipMemo`
computes it once per clip and serves later episodes from memory.

It is active only when nothing can change between calls: the method in eval mode, autograd
off, cached features (``features=True``) on the CPU. It forgets everything whenever the method's
mode changes (``train()``/``eval()``, which the engine calls before every loop, and after
loading weights), so a validation pass during training never sees features of older weights.

Two ways to find a row, both exact:

* **by identity** (the fast path): an episode read from a feature cache carries
  :class:`~fsar.data.inputs.CachedRows`, the cache's id of every support and query row, valid
  for exactly the tensors the cache built (same object, not modified since: checked by
  :meth:`ClipMemo.note`). A lookup is then a dictionary lookup per row and one index gather
  per output from the memo's tables;
* **by content** (episodes built by hand): 64 values spread over the clip find the candidate,
  a comparison of the whole clip (all candidates of a call at once) decides; a collision is
  recomputed, never served.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["ClipMemo"]


class _Table:
    """Rows of one output signature, stored contiguously so a call's rows are one gather."""

    def __init__(self, example: tuple[torch.Tensor, ...]) -> None:
        self.rows = 0
        self.data = [torch.empty((64, *t.shape[1:]), dtype=t.dtype) for t in example]

    def append(self, tensors: tuple[torch.Tensor, ...]) -> int:
        n, start = tensors[0].shape[0], self.rows
        if start + n > self.data[0].shape[0]:
            capacity = max(2 * self.data[0].shape[0], start + n)
            grown = []
            for old in self.data:
                new = torch.empty((capacity, *old.shape[1:]), dtype=old.dtype)
                new[:start] = old[:start]
                grown.append(new)
            self.data = grown
        for store, tensor in zip(self.data, tensors):
            store[start:start + n] = tensor
        self.rows += n
        return start


def _signature(tensors: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((tuple(t.shape[1:]), t.dtype) for t in tensors)


class ClipMemo:
    """``map(compute, clips, contexts)``: per-row outputs of ``compute``, each row computed once.

    ``compute(index)`` gets the rows (a LongTensor into ``clips``) not seen before and returns a
    tuple of tensors whose first dimension is ``len(index)``; ``contexts[i]`` is whatever else
    row i's result depends on (e.g. its class name). ``max_entries`` bounds the memory.
    ``ids`` (or the ids given to :meth:`note` for ``clips``) name the rows exactly; without them rows are
    found by content.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._store: dict[Hashable, tuple[torch.Tensor | None, int, int]] = {}  # key -> (clip or None, table, row)
        self._tables: list[_Table] = []
        self._table_of: dict[tuple, int] = {}
        self._indices: dict[int, torch.Tensor] = {}
        self._noted: list[tuple[torch.Tensor, int, tuple]] = []
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._store.clear()
        self._tables.clear()
        self._table_of.clear()
        self._noted.clear()

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def applies(module: torch.nn.Module, features: bool, tensor: torch.Tensor) -> bool:
        """True when results cannot change between episodes: eval mode, no autograd, cached CPU features."""
        return features and not module.training and not torch.is_grad_enabled() and tensor.device.type == "cpu"

    def note(self, tensor: torch.Tensor, ids: Sequence[Hashable] | None) -> None:
        """Remember that the rows of ``tensor`` (this very object, as it is now) are the clips
        ``ids``; a later :meth:`map` of the same, unmodified tensor finds its rows by id. Only the
        tensors of the last few episodes are remembered."""
        if ids is None:
            return
        if len(ids) != tensor.shape[0]:
            raise ValueError(f"ClipMemo.note: {len(ids)} ids for {tensor.shape[0]} rows")
        self._noted = [*self._noted[-3:], (tensor, tensor._version, tuple(ids))]

    def _noted_ids(self, clips: torch.Tensor) -> tuple | None:
        for tensor, version, ids in reversed(self._noted):
            if tensor is clips and clips._version == version:
                return ids
        return None

    def _sample_index(self, size: int) -> torch.Tensor:
        """Up to 64 positions spread over a flattened clip (every frame gets some)."""
        index = self._indices.get(size)
        if index is None:
            index = self._indices[size] = torch.linspace(0, size - 1, min(size, 64)).round().long()
        return index

    def map(
        self,
        compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
        clips: torch.Tensor | None,
        contexts: Sequence[Hashable],
        *,
        ids: Sequence[Hashable] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The outputs of ``compute`` for every row. ``ids``: an exact name of each row (the same
        name must mean the same input for as long as the memo lives); ``clips`` may then be None."""
        rows, computed = self._resolve(compute, clips, contexts, ids)
        tables = {table for table, _ in rows}
        if len(tables) == 1 and None not in tables:
            table = self._tables[rows[0][0]]
            index = torch.tensor([row for _, row in rows], dtype=torch.long)
            return tuple(data.index_select(0, index) for data in table.data)
        return self._row_by_row(rows, computed)

    def group_means(
        self,
        compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
        contexts: Sequence[Hashable],
        *,
        ids: Sequence[Hashable],
        group: int,
    ) -> tuple[torch.Tensor, ...]:
        """``map(compute, None, contexts, ids=ids)`` averaged over consecutive groups of ``group`` rows:
        each output (n / group, ...), the mean of its group's rows (a K-shot prototype of per-clip
        results). From the memo's tables directly (``embedding_bag``), without gathering the rows."""
        n = len(contexts)
        if group < 1 or n % group:
            raise ValueError(f"ClipMemo.group_means: {n} rows do not split into groups of {group}")
        rows, computed = self._resolve(compute, None, contexts, ids)
        tables = {table for table, _ in rows}
        if len(tables) != 1 or None in tables:  # rows beyond the bound: gather, then average
            return tuple(t.view(n // group, group, *t.shape[1:]).mean(1) for t in self._row_by_row(rows, computed))
        table = self._tables[rows[0][0]]
        bags = torch.tensor([row for _, row in rows], dtype=torch.long).view(n // group, group)
        return tuple(
            F.embedding_bag(bags, data[:table.rows].reshape(table.rows, -1), mode="mean").view(n // group, *data.shape[1:])
            for data in table.data
        )

    def _row_by_row(self, rows: list, computed: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Rows beyond the bound, or of other output shapes under one call: row by row."""
        width = len(computed) if computed else len(self._tables[rows[0][0]].data)
        return tuple(
            torch.stack([computed[k][row] if table is None else self._tables[table].data[k][row] for table, row in rows])
            for k in range(width)
        )

    def _resolve(self, compute, clips, contexts, ids) -> tuple[list, tuple[torch.Tensor, ...]]:
        """(per row: (table, row) in the memo, or (None, j): row j of ``computed``), computing the
        rows not seen before."""
        n = len(contexts)
        if ids is None and clips is not None:
            ids = self._noted_ids(clips)
        if ids is not None:
            if len(ids) != n:
                raise ValueError(f"ClipMemo: {len(ids)} ids for {n} contexts")
            keys = [(context, "id", row_id) for context, row_id in zip(contexts, ids)]
            found = [self._store.get(key) for key in keys]
        else:
            if clips is None or clips.shape[0] != n:
                raise ValueError(f"ClipMemo: {n} contexts for {0 if clips is None else clips.shape[0]} clips")
            flat = clips.reshape(n, -1)
            samples = flat[:, self._sample_index(flat.shape[1])].numpy()  # one gather for every row's key
            shape = tuple(clips.shape[1:])
            keys = [(context, shape, samples[i].tobytes()) for i, context in enumerate(contexts)]
            found = [self._store.get(key) for key in keys]
            hits = [i for i, entry in enumerate(found) if entry is not None]
            if hits:
                # Exact check of every candidate at once: the whole stored clip against the whole row.
                stored = torch.stack([found[i][0] for i in hits]).reshape(len(hits), -1)
                for i, equal in zip(hits, (stored == flat[hits]).all(dim=1).tolist()):
                    if not equal:
                        found[i] = None
        missing = [i for i, entry in enumerate(found) if entry is None]
        self.hits += n - len(missing)
        self.misses += len(missing)
        rows: list[tuple[int, int] | tuple[None, int]] = [(entry[1], entry[2]) if entry else (None, 0) for entry in found]
        computed: tuple[torch.Tensor, ...] = ()
        if missing:
            # A name met twice in one call (a clip in several episodes of a batch) is computed once;
            # by content, equal keys may still be other clips, so each row is its own there.
            first: dict[Hashable, int] = {}
            unique: list[int] = []  # the rows computed
            position: list[int] = []  # per missing row: its row of ``computed``
            for i in missing:
                p = first.setdefault(keys[i] if ids is not None else i, len(unique))
                if p == len(unique):
                    unique.append(i)
                position.append(p)
            computed = tuple(t.detach() for t in compute(torch.tensor(unique, dtype=torch.long)))
            kept, room = [], self.max_entries - len(self._store)
            for j, i in enumerate(unique):
                if keys[i] in self._store or room > 0:
                    kept.append(j)
                    room -= keys[i] not in self._store
            for i, p in zip(missing, position):
                rows[i] = (None, p)
            if kept:
                signature = _signature(computed)
                table_index = self._table_of.get(signature)
                if table_index is None:
                    table_index = self._table_of[signature] = len(self._tables)
                    self._tables.append(_Table(computed))
                index = torch.tensor(kept, dtype=torch.long)
                start = self._tables[table_index].append(tuple(t.index_select(0, index) for t in computed))
                stored = {}
                for offset, j in enumerate(kept):
                    i = unique[j]
                    stored[j] = (table_index, start + offset)
                    # a collision (same key, other content) replaces its entry
                    self._store[keys[i]] = (None if ids is not None else clips[i].clone(), table_index, start + offset)
                for i, p in zip(missing, position):
                    if p in stored:
                        rows[i] = stored[p]
        return rows, computed
