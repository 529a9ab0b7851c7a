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
Lookups are exact: 64 values spread over the clip find the candidate, a comparison of the whole
clip (all candidates of a call at once) decides; a collision is recomputed, never served.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

__all__ = ["ClipMemo"]


class ClipMemo:
    """``map(compute, clips, contexts)``: per-row outputs of ``compute``, each row computed once.

    ``compute(index)`` gets the rows (a LongTensor into ``clips``) not seen before and returns a
    tuple of tensors whose first dimension is ``len(index)``; ``contexts[i]`` is whatever else
    row i's result depends on (e.g. its class name). ``max_entries`` bounds the memory.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._store: dict[Hashable, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self._indices: dict[int, torch.Tensor] = {}
        self._size = 0
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._store.clear()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @staticmethod
    def applies(module: torch.nn.Module, features: bool, tensor: torch.Tensor) -> bool:
        """True when results cannot change between episodes: eval mode, no autograd, cached CPU features."""
        return features and not module.training and not torch.is_grad_enabled() and tensor.device.type == "cpu"

    def _sample_index(self, size: int) -> torch.Tensor:
        """Up to 64 positions spread over a flattened clip (every frame gets some)."""
        index = self._indices.get(size)
        if index is None:
            index = self._indices[size] = torch.linspace(0, size - 1, min(size, 64)).round().long()
        return index

    def map(
        self,
        compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
        clips: torch.Tensor,
        contexts: Sequence[Hashable],
    ) -> tuple[torch.Tensor, ...]:
        n = clips.shape[0]
        if len(contexts) != n:
            raise ValueError(f"ClipMemo: {len(contexts)} contexts for {n} clips")
        flat = clips.reshape(n, -1)
        samples = flat[:, self._sample_index(flat.shape[1])].numpy()  # one gather for every row's key
        shape = tuple(clips.shape[1:])
        keys = [(context, shape, samples[i].tobytes()) for i, context in enumerate(contexts)]
        found: list[tuple[torch.Tensor, ...] | None] = [None] * n
        hits = [i for i, key in enumerate(keys) if key in self._store]
        if hits:
            # Exact check of every candidate at once: the whole stored clip against the whole row.
            stored = torch.stack([self._store[keys[i]][0] for i in hits]).reshape(len(hits), -1)
            same = (stored == flat[hits]).all(dim=1).tolist()
            for i, equal in zip(hits, same):
                if equal:
                    found[i] = self._store[keys[i]][1]
        missing = [i for i, result in enumerate(found) if result is None]
        self.hits += n - len(missing)
        self.misses += len(missing)
        if missing:
            computed = compute(torch.tensor(missing, dtype=torch.long))
            for j, i in enumerate(missing):
                outputs = tuple(t[j].clone() for t in computed)
                found[i] = outputs
                if keys[i] in self._store or self._size < self.max_entries:  # a collision replaces its entry
                    self._size += keys[i] not in self._store
                    self._store[keys[i]] = (clips[i].clone(), outputs)
        return tuple(torch.stack([result[k] for result in found]) for k in range(len(found[0])))
