"""TRX: Temporal-Relational CrossTransformer (Perrett et al., CVPR 2021), vectorised over classes.

For every tuple cardinality r (default 2 and 3), each clip is turned into its ``P = C(T, r)``
ordered frame tuples (``itertools.combinations``, lexicographic), each tuple the concatenation of
its frames' features (after adding a 0.1-scaled sinusoidal positional encoding). Keys are
``LayerNorm(W_k tuple + b_k)``, values ``W_v tuple + b_v`` (no norm). For class c, every query
tuple attends (softmax over all ``n_c * P`` tuples of the class's support clips, scaled by
``1/sqrt(out_dim)``) and builds a query-specific class prototype; the score is
``-|V_query - prototype|_F^2 / P``. Scores of the cardinalities are averaged.

Differences from tobyperrett/trx, all without effect on the output (reference README §3):

* classes are processed at once: supports are gathered into ``(way, max_shot)`` blocks
  (padding masked out of the softmax) instead of a Python loop over classes;
* the tuple projection is split per tuple slot, ``W [x_t0; x_t1] = W_0 x_t0 + W_1 x_t1``, so each
  frame is projected once instead of once per tuple (P/T times fewer FLOPs); for the supports'
  values the attention is carried to (slot, frame) instead, so the prototype product runs over
  ``shot * r * T`` rather than ``shot * P`` columns (2.3x fewer at T = 8, r = 3);
* queries are split into chunks when the all-class attention would exceed
  ``ATTENTION_CHUNK_ELEMENTS`` scores (long clips only; one chunk at T = 8);
* query and support may have different frame counts (each at most ``int(1.5 * seq_len)``,
  the positional-encoding length).

The parameter names equal the original's state dict (``transformers.{i}.pe.pe``,
``k_linear``, ``v_linear``, ``norm_k``, ``norm_v``) so that its weights load directly;
``norm_v`` is constructed but unused, exactly as in the original. Dropout (p = 0.1) acts on the
positionally encoded frames in training mode only.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar.metrics._common import check_finite_logits, class_index, validate_episode

ATTENTION_CHUNK_ELEMENTS = 1 << 25  # 32 M scores (128 MiB in float32) per chunk of queries


class PositionalEncoding(nn.Module):
    """Sinusoidal encoding scaled by 0.1: ``pe[t, 2k] = 0.1 sin(t / 10000^(2k/D))``, cos on odd."""

    def __init__(self, dim: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        inverse_frequency = torch.exp(
            torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim)
        )
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(position * inverse_frequency) * 0.1
        pe[:, 1::2] = torch.cos(position * inverse_frequency[: dim // 2]) * 0.1
        self.register_buffer("pe", pe[None])  # (1, max_len, D)

    def forward(self, x: Tensor) -> Tensor:
        """``x (n, T, D) -> (n, T, D)``."""
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(
                f"metric 'trx': {x.shape[1]} frames exceed the positional encoding length "
                f"{self.pe.shape[1]} (= int(1.5 * seq_len)); build with a larger seq_len"
            )
        return self.dropout(x + self.pe[:, : x.shape[1]].to(x.dtype))


class TemporalCrossTransformer(nn.Module):
    """One tuple cardinality of TRX: ``(support, support_labels, query, way) -> (n_query, way)``."""

    def __init__(
        self, *, in_dim: int, out_dim: int, seq_len: int, cardinality: int, dropout: float
    ) -> None:
        super().__init__()
        self.cardinality = int(cardinality)
        self.out_dim = int(out_dim)
        self.pe = PositionalEncoding(in_dim, dropout, max_len=int(seq_len * 1.5))
        self.k_linear = nn.Linear(in_dim * cardinality, out_dim)
        self.v_linear = nn.Linear(in_dim * cardinality, out_dim)
        self.norm_k = nn.LayerNorm(out_dim)
        self.norm_v = nn.LayerNorm(out_dim)  # unused in forward, kept for the original's state dict
        self._tuples: dict[int, Tensor] = {}

    def tuples(self, num_frames: int, device) -> Tensor:
        """``(P, r)`` frame indices of all ordered r-tuples, lexicographic (itertools.combinations)."""
        if num_frames < self.cardinality:
            raise ValueError(
                f"metric 'trx': {num_frames} frames are fewer than the tuple cardinality {self.cardinality}"
            )
        cached = self._tuples.get(num_frames)
        if cached is None:
            combos = list(itertools.combinations(range(num_frames), self.cardinality))
            cached = torch.tensor(combos, dtype=torch.long)
            self._tuples[num_frames] = cached
        return cached.to(device)

    def _slot_projections(self, frames: Tensor, linear: nn.Linear) -> list[Tensor]:
        """Each frame through each tuple slot's block of ``linear`` (no bias): ``(n, T, D) ->``
        ``r x (n, T, out)``. One product per slot on a strided view of the weight (slot k uses
        columns ``k*D:(k+1)*D``), so the weight is never copied."""
        n, num_frames, dim = frames.shape
        weight = linear.weight.view(self.out_dim, self.cardinality, dim)
        flat = frames.reshape(n * num_frames, dim)
        return [(flat @ weight[:, slot].T).view(n, num_frames, self.out_dim) for slot in range(self.cardinality)]

    def _slot_incidence(self, num_frames: int, like: Tensor) -> Tensor:
        """``(P, r T)`` 0/1 matrix: tuple p uses frame t in slot k <=> entry ``[p, k T + t]`` is 1."""
        tuples = self.tuples(num_frames, like.device)
        incidence = torch.zeros(tuples.shape[0], self.cardinality * num_frames, dtype=like.dtype, device=like.device)
        columns = tuples + torch.arange(self.cardinality, device=like.device) * num_frames
        return incidence.scatter_(1, columns, 1.0)

    def _project(self, frames: Tensor, linear: nn.Linear) -> Tensor:
        """Tuple projection ``W concat(x_t0, ..., x_t{r-1}) + b`` for all tuples: ``(n, T, D) -> (n, P, out)``."""
        num_frames = frames.shape[1]
        tuples = self.tuples(num_frames, frames.device)  # (P, r)
        per_slot = self._slot_projections(frames, linear)  # r x (n, T, out)
        # sum the slots' projections one slot at a time: never materialise (n, P, r, out)
        projected = per_slot[0][:, tuples[:, 0]] + linear.bias  # (n, P, out)
        for slot in range(1, self.cardinality):
            projected += per_slot[slot][:, tuples[:, slot]]
        return projected

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> Tensor:
        support = self.pe(support)
        query = self.pe(query)
        support_keys = self.norm_k(self._project(support, self.k_linear))  # (n_s, P_s, out)
        query_keys = self.norm_k(self._project(query, self.k_linear))  # (n_q, P_q, out)
        query_values = self._project(query, self.v_linear)  # (n_q, P_q, out)
        # Values are linear in the frames: a support tuple's value is the sum of its frames' slot
        # projections (+ bias), so the prototypes attention @ values are formed per frame and slot
        # instead of per tuple: (shot * r * T) instead of (shot * P) columns in the product.
        support_slot_values = torch.stack(self._slot_projections(support, self.v_linear), 1)  # (n_s, r, T_s, out)

        index, valid = class_index(support_labels, way)  # (way, max_shot)
        max_shot, tuples_s = index.shape[1], support_keys.shape[1]
        class_keys = support_keys[index].reshape(way, max_shot * tuples_s, self.out_dim)
        class_values = support_slot_values[index].reshape(way, -1, self.out_dim)  # (way, shot * r * T_s, out)
        incidence = self._slot_incidence(support.shape[1], class_values)  # (P_s, r * T_s)
        n_query, tuples_q, _ = query_keys.shape
        # The attention of all classes at once holds way * n_query * P_q * max_shot * P_s scores;
        # queries are processed in chunks that keep it below ATTENTION_CHUNK_ELEMENTS (memory bound
        # for long clips, e.g. T = 16 gives P = 560 triples). At T = 8 there is a single chunk.
        per_query = way * tuples_q * max_shot * tuples_s
        chunk = max(1, ATTENTION_CHUNK_ELEMENTS // per_query)
        padding = None
        if not bool(valid.all()):
            padding = ~valid[:, :, None].expand(way, max_shot, tuples_s).reshape(way, 1, -1)
        distances = [
            self._class_distances(
                query_keys[start : start + chunk], query_values[start : start + chunk],
                class_keys, class_values, incidence, padding,
            )
            for start in range(0, n_query, chunk)
        ]
        return -torch.cat(distances)

    def _class_distances(
        self, query_keys: Tensor, query_values: Tensor, class_keys: Tensor, class_values: Tensor,
        incidence: Tensor, padding: Tensor | None,
    ) -> Tensor:
        """``-logits (n_query, way)`` for a chunk of queries against all classes at once.

        ``class_values (way, shot * r * T_s, out)`` are the supports' per-frame slot projections;
        ``incidence (P_s, r * T_s)`` maps tuples to (slot, frame).
        """
        way = class_keys.shape[0]
        n_query, tuples_q, _ = query_keys.shape
        tuples_s = incidence.shape[0]
        flat_query_keys = query_keys.reshape(1, n_query * tuples_q, self.out_dim)
        scores = flat_query_keys @ class_keys.transpose(1, 2) / math.sqrt(self.out_dim)  # (way, n_q*P_q, shot*P_s)
        if padding is not None:
            scores = scores.masked_fill(padding, float("-inf"))
        attention = F.softmax(scores, dim=-1)
        # attention on tuples -> attention on (slot, frame) of each shot. Its rows sum to 1, so the
        # value bias would add once to every prototype: it is taken off the query values instead.
        per_frame = attention.view(way, n_query * tuples_q, -1, tuples_s) @ incidence  # (way, N, shot, r*T_s)
        prototypes = (per_frame.view(way, n_query * tuples_q, -1) @ class_values).view(
            way, n_query, tuples_q, self.out_dim
        )
        query_values = query_values - self.v_linear.bias
        if torch.is_grad_enabled() and (prototypes.requires_grad or query_values.requires_grad):
            difference = query_values[None] - prototypes  # (way, n_q, P_q, out)
            squares = difference.pow(2)
        else:  # in place on the fresh prototypes: two (way, n_q, P_q, out) temporaries fewer
            squares = prototypes.sub_(query_values[None]).square_()
        distance = squares.sum((2, 3)) / tuples_q  # (way, n_q)
        return distance.T


class TRX(nn.Module):
    """TRX head with configurable tuple cardinalities; logits = mean over cardinalities.

    Args:
        feature_dim: D of the frame features (``trans_linear_in_dim``).
        out_dim: key/value size (``trans_linear_out_dim``; 1152 in the original ``run.py``).
        seq_len: nominal frame count T; clips may have up to ``int(1.5 * seq_len)`` frames.
        cardinalities: tuple sizes (``temp_set``), default (2, 3).
        dropout: positional-encoding dropout (train mode only).
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        out_dim: int = 1152,
        seq_len: int = 8,
        cardinalities: Sequence[int] = (2, 3),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        cardinalities = [int(r) for r in cardinalities]
        if not cardinalities or min(cardinalities) < 1:
            raise ValueError(f"metric 'trx': cardinalities must be positive ints, got {cardinalities}")
        if max(cardinalities) > seq_len:
            raise ValueError(
                f"metric 'trx': cardinality {max(cardinalities)} exceeds seq_len {seq_len}"
            )
        self.feature_dim = int(feature_dim)
        self.cardinalities = tuple(cardinalities)
        self.transformers = nn.ModuleList(
            TemporalCrossTransformer(
                in_dim=feature_dim, out_dim=out_dim, seq_len=seq_len, cardinality=r, dropout=dropout
            )
            for r in cardinalities
        )

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, cardinalities={self.cardinalities}"

    def forward_per_cardinality(
        self, support: Tensor, support_labels: Tensor, query: Tensor, way: int
    ) -> list[Tensor]:
        """Logits of each cardinality, ``[(n_query, way), ...]`` in ``cardinalities`` order."""
        support, support_labels, query = validate_episode(
            support, support_labels, query, way, metric="trx"
        )
        if support.shape[-1] != self.feature_dim:
            raise ValueError(
                f"metric 'trx': mismatched feature sizes: built for D={self.feature_dim}, "
                f"got D={support.shape[-1]}"
            )
        return [
            check_finite_logits(transformer(support, support_labels, query, way), support, query, metric="trx")
            for transformer in self.transformers
        ]

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> Tensor:
        per_cardinality = self.forward_per_cardinality(support, support_labels, query, way)
        return torch.stack(per_cardinality).mean(0)


def trx_from_reference(
    constructor_args: Mapping[str, object], state_dict: Mapping[str, np.ndarray]
) -> TRX:
    """Build a :class:`TRX` from the original's constructor arguments and weights.

    ``constructor_args`` uses the original's names (``trans_linear_in_dim``,
    ``trans_linear_out_dim``, ``seq_len``, ``temp_set``, ``trans_dropout``; ``way`` is ignored);
    ``state_dict`` maps the original's keys (minus ``resnet.*``) to arrays. The module is returned
    in eval mode, as the reference outputs were produced.
    """
    if "constructor_args" in constructor_args:  # accept the whole *_constructor.json object too
        constructor_args = constructor_args["constructor_args"]  # type: ignore[assignment]
    required = ("trans_linear_in_dim", "trans_linear_out_dim", "seq_len", "temp_set")
    missing = [key for key in required if key not in constructor_args]
    if missing:
        raise ValueError(f"trx_from_reference: constructor_args lack {missing}")
    module = TRX(
        feature_dim=int(constructor_args["trans_linear_in_dim"]),
        out_dim=int(constructor_args["trans_linear_out_dim"]),
        seq_len=int(constructor_args["seq_len"]),
        cardinalities=[int(r) for r in constructor_args["temp_set"]],  # type: ignore[union-attr]
        dropout=float(constructor_args.get("trans_dropout", 0.1)),
    )
    tensors = {
        key: torch.from_numpy(np.array(value)) for key, value in state_dict.items()
        if not key.startswith("resnet.")
    }
    expected = module.state_dict()
    wrong = [
        f"{key}: {tuple(value.shape)} != {tuple(expected[key].shape)}"
        for key, value in tensors.items() if key in expected and value.shape != expected[key].shape
    ]
    if wrong:
        raise ValueError(f"trx_from_reference: shape mismatch: {'; '.join(wrong)}")
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ValueError(f"trx_from_reference: state_dict does not fit: {error}") from None
    return module.eval()
