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
Lookups are exact: a short fingerprint finds the candidates, ``torch.equal`` on the whole clip
decides.
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
        self._store: dict[Hashable, list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]] = {}
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

    @staticmethod
    def _fingerprint(row: torch.Tensor) -> bytes:
        flat = row.reshape(-1)
        return flat[:16].numpy().tobytes() + flat[-16:].numpy().tobytes()

    def map(
        self,
        compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
        clips: torch.Tensor,
        contexts: Sequence[Hashable],
    ) -> tuple[torch.Tensor, ...]:
        if len(contexts) != clips.shape[0]:
            raise ValueError(f"ClipMemo: {len(contexts)} contexts for {clips.shape[0]} clips")
        found: list[tuple[torch.Tensor, ...] | None] = []
        keys = []
        for row, context in zip(clips, contexts):
            key = (context, tuple(row.shape), self._fingerprint(row))
            keys.append(key)
            result = None
            for stored, outputs in self._store.get(key, ()):
                if torch.equal(stored, row):
                    result = outputs
                    break
            found.append(result)
        missing = [i for i, result in enumerate(found) if result is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = compute(torch.tensor(missing, dtype=torch.long))
            for j, i in enumerate(missing):
                outputs = tuple(t[j].clone() for t in computed)
                found[i] = outputs
                if self._size < self.max_entries:
                    self._store.setdefault(keys[i], []).append((clips[i].clone(), outputs))
                    self._size += 1
        return tuple(torch.stack([result[k] for result in found]) for k in range(len(found[0])))
