"""``fsar.Recognizer``: few-shot recognition for a practitioner's own actions.

A recogniser holds a support set (a few clips per action) in memory, already encoded, and
answers for new clips::

    from fsar import Recognizer

    recognizer = Recognizer.from_folder("my_actions/", method="otam", reject="auto")
    recognizer.add("waving", ["wave1.mp4", "wave2.mp4"])     # only the new clips are encoded
    recognizer.remove("clapping")
    prediction = recognizer.predict("new_clip.mp4")
    prediction.label, prediction.score, prediction.ranking    # "none of these" when rejected
    recognizer.explain("new_clip.mp4").save("why.png")       # see fsar.explain

Encoding once. With a frozen encoder (every training-free method, and the embedded
``effnet-lite0+minilm`` pair always) a clip's per-frame features never change, so each clip
is encoded once and its features are kept in memory and on disk (:class:`ClipStore`). The disk
store is keyed as the feature cache (:mod:`fsar.encoders.cache`) is: backbone name, weight
fingerprint, feature width, frames and sampling, the loader's transform key (and the encoder's
stream key where it has one) name a folder, and a SHA-256 of the clip's bytes names the file in
it, so a clip that is copied, renamed or uploaded again is found again, and another backbone,
weight set or frame count never reads stale features. With a trainable encoder (a checkpoint
with adapters or a fine-tuned CLIP) the decoded evaluation view of each support clip is kept in
memory instead and the encoder runs at every prediction, as the method was trained.

Scores. ``predict`` returns the method's class probabilities after temperature scaling fitted
on the support set itself (leave-one-out, see :class:`Calibration`); the ranking is the
method's, only the confidence is calibrated.

Open set ("none of these"). ``reject="off"`` always names an action; a float in (0, 1)
rejects a query whose top calibrated probability is below it; ``"auto"`` derives that
threshold from the support set alone (:meth:`Recognizer.calibration`, rule in
:class:`Calibration`).

Errors are :class:`RecognizerError` subclasses naming the file or action: a clip that is not a
readable video (:class:`NotAVideoError`), a support set with fewer than two actions or an action
without a readable clip (:class:`SupportSetError`), a checkpoint of another method or backbone
(:class:`IncompatibleCheckpointError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from fsar.errors import FsarError

__all__ = [
    "NONE_OF_THESE",
    "Calibration",
    "ClipStore",
    "IncompatibleCheckpointError",
    "NotAVideoError",
    "Prediction",
    "Recognizer",
    "RecognizerError",
    "SupportSetError",
    "parse_reject",
]

log = logging.getLogger(__name__)

#: The label of a rejected query.
NONE_OF_THESE = "none of these"
DEFAULT_METHOD = "otam"
DEFAULT_BACKBONE = "effnet-lite0+minilm"
STORE_FORMAT = "fsar-recognizer-clip/1"


class RecognizerError(FsarError, ValueError):
    """A practitioner's mistake the recogniser reports (one line, names the file or action)."""


class NotAVideoError(RecognizerError):
    """A query or support clip that is not a readable video file or frame folder."""


class SupportSetError(RecognizerError):
    """A support set that cannot serve: fewer than 2 actions, an action with no readable clip,
    an unknown or duplicate action name."""


class IncompatibleCheckpointError(RecognizerError):
    """A checkpoint of another method or backbone, or one that does not load into this model."""


# ---------------------------------------------------------------------------------------------
# reject option


def parse_reject(value: str | float | None) -> str | float:
    """``"off"``, ``"auto"`` or a threshold in (0, 1) (``--reject off|auto|<threshold>``)."""
    if value is None:
        return "off"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "auto"):
            return text
        try:
            value = float(text)
        except ValueError:
            raise RecognizerError(f"reject must be 'off', 'auto' or a probability in (0, 1), got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise RecognizerError(f"reject threshold must lie in (0, 1), got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# clip identity and the on-disk store


def clip_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a clip's content: a video file's bytes, or a frame folder's image names and bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        from fsar.data.video import is_image_file, natural_key

        for item in sorted((p for p in path.iterdir() if is_image_file(p)), key=lambda p: natural_key(p.name)):
            digest.update(item.name.encode() + b"\0")
            digest.update(item.read_bytes())
    else:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def encoder_key(encoder, loader, streams: Sequence[str] = ()) -> dict[str, Any]:
    """What names an encoder's features, as the feature cache's header does (minus the data root)."""
    from fsar.encoders.cache import loader_transform_key, weights_fingerprint

    key = {
        "format": STORE_FORMAT,
        "backbone": str(encoder.name),
        "weights_fingerprint": weights_fingerprint(encoder),
        "feature_dim": int(encoder.feature_dim),
        "transform_key": loader_transform_key(loader),
        "num_frames": int(loader.num_frames),
        "sampling": str(getattr(loader, "sampling", "tsn")),
        "streams": sorted(streams),
    }
    stream_key = getattr(encoder, "stream_key", None)
    if callable(stream_key):
        key["stream_key"] = stream_key()
    return key


class ClipStore:
    """Per-clip encoder outputs on disk: ``directory/<key digest>/<clip digest>.safetensors``.

    ``key`` (:func:`encoder_key`) is written beside the files as ``key.json``; a folder whose
    ``key.json`` differs from the digest's key is never read. Files are written atomically
    (temporary file + ``os.replace``), so an interrupted write leaves no half file.
    """

    def __init__(self, directory: str | os.PathLike, key: dict[str, Any]) -> None:
        text = json.dumps(key, sort_keys=True, default=str)
        self.key = key
        self.directory = Path(directory) / hashlib.sha256(text.encode()).hexdigest()[:20]
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if key_file.exists():
            try:
                stored = json.loads(key_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                stored = None
            if stored != json.loads(text):
                raise RecognizerError(f"clip store {self.directory}: key.json does not match its name (edited?)")
        else:
            _atomic_write(key_file, text.encode())

    def path(self, digest: str) -> Path:
        return self.directory / f"{digest}.safetensors"

    def get(self, digest: str) -> dict[str, torch.Tensor] | None:
        path = self.path(digest)
        if not path.exists():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # a foreign or damaged file: encode again
            log.warning("clip store: ignoring unreadable %s (%s)", path, error)
            return None

    def put(self, digest: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = self.path(digest)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def default_cache_dir() -> Path:
    """``$FSAR_CACHE`` or ``$XDG_CACHE_HOME/fsar`` (``~/.cache/fsar``), then ``/clips``."""
    root = os.environ.get("FSAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fsar"
    )
    return Path(root) / "clips"


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Prediction:
    """One query's answer.

    ranking: every action with its calibrated probability, most likely first (sums to 1).
    label: the top action, or :data:`NONE_OF_THESE` when the query was rejected.
    score: the top action's calibrated probability (what the threshold is compared with).
    threshold: the rejection threshold in force (None with ``reject="off"``).
    """

    query: str
    ranking: list[tuple[str, float]]
    label: str
    score: float
    threshold: float | None = None

    @property
    def rejected(self) -> bool:
        return self.label == NONE_OF_THESE

    @property
    def best(self) -> str:
        """The most likely action, rejected or not."""
        return self.ranking[0][0]

    def to_dict(self, top: int = 0) -> dict[str, Any]:
        ranking = self.ranking[:top] if top > 0 else self.ranking
        return {
            "query": self.query,
            "label": self.label,
            "rejected": self.rejected,
            "score": round(self.score, 6),
            "threshold": None if self.threshold is None else round(self.threshold, 6),
            "ranking": [{"class": name, "probability": round(p, 6)} for name, p in ranking],
        }


@dataclass
class Calibration:
    """What the support set says about the method's confidence, by leave-one-out.

    Known queries: every support clip of an action with >= 2 clips is scored against the
    support set without it (its action still present, with one shot fewer). Unknown queries:
    with >= 3 actions, every clip of an action is scored against the support set without that
    whole action (so it belongs to none of the remaining ones).

    temperature: T of ``softmax(log_probs / T)`` minimising the negative log-likelihood of the
        known queries' true actions, smoothed by Laplace's rule (:func:`fit_temperature`; 1.0,
        the method's own scale, when there are none).
    threshold ("auto"), on the top calibrated probability:

    * known and unknown queries: the threshold maximising balanced accuracy, the mean of the
      fraction of known queries kept and the fraction of unknown queries rejected (ties: the
      lowest such threshold, which keeps the most known queries);
    * unknown queries only (one clip per action): the median of their top probabilities, i.e.
      it aims to reject half of the clips of an unknown action; nothing measured says what it
      costs on known ones (``benchmarks/open_set.py`` does);
    * known queries only (two actions): the 5th percentile of their top probabilities (keeps
      about 95% of known clips);
    * neither (two actions of one clip each): no threshold (``auto`` is refused).

    Assumptions: a new query resembles the support clips as much as they resemble each other
    (same camera, same kind of clip), and an unknown action is as far from the known ones as
    they are from each other. The leave-one-out known queries see one shot fewer than a real
    query does, so the rule is slightly conservative (rejects a little more) for small K.
    """

    temperature: float
    threshold: float | None
    known_scores: list[float] = field(default_factory=list)
    known_correct: list[bool] = field(default_factory=list)
    unknown_scores: list[float] = field(default_factory=list)
    rule: str = ""

    @property
    def leave_one_out_accuracy(self) -> float | None:
        return sum(self.known_correct) / len(self.known_correct) if self.known_correct else None


def fit_temperature(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """T on a log grid (0.01 .. 100) minimising the cross-entropy of ``softmax(log_probs / T)``
    against the true labels, smoothed by Laplace's rule of succession; 1.0 without rows.

    The smoothing (the true class gets ``1 - ε``, the others share ``ε = 1 / (n + 2)`` for n
    rows) keeps a handful of perfectly separated leave-one-out answers from driving T to 0,
    which would make every probability 1.0 and every query, known or not, equally confident:
    after n right answers out of n the next one is right with probability (n + 1) / (n + 2),
    not 1.
    """
    if log_probs.numel() == 0:
        return 1.0
    rows = log_probs.double()
    n, way = rows.shape
    epsilon = 1.0 / (n + 2)
    targets = torch.full_like(rows, epsilon / max(way - 1, 1))
    targets.scatter_(1, labels[:, None], 1.0 - epsilon)
    grid = torch.logspace(-2, 2, 161, dtype=torch.float64)
    losses = torch.stack([-(targets * torch.log_softmax(rows / t, dim=-1)).sum(1).mean() for t in grid])
    return float(grid[int(torch.argmin(losses))])


def choose_threshold(known: Sequence[float], unknown: Sequence[float]) -> tuple[float | None, str]:
    """The ``auto`` threshold rule of :class:`Calibration` -> (threshold or None, rule text)."""
    known, unknown = sorted(known), sorted(unknown)
    if known and unknown:
        values = sorted(set(known) | set(unknown))
        candidates = [values[0] - 1e-9] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1e-9]
        best, best_value = None, -1.0
        for t in candidates:
            kept = sum(s >= t for s in known) / len(known)
            rejected = sum(s < t for s in unknown) / len(unknown)
            value = (kept + rejected) / 2
            if value > best_value + 1e-12:
                best, best_value = t, value
        return min(max(best, 1e-6), 1 - 1e-6), f"max balanced accuracy ({best_value:.2f}) on leave-one-out clips"
    if unknown:
        return min(max(_quantile(unknown, 0.5), 1e-6), 1 - 1e-6), "median of leave-one-action-out clips (1 clip per action)"
    if known:
        return min(max(_quantile(known, 0.05), 1e-6), 1 - 1e-6), "5th percentile of leave-one-out clips (2 actions)"
    return None, "no leave-one-out clip (2 actions of 1 clip): give a threshold"


def _quantile(values: Sequence[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(sorted(values), dtype=torch.float64), q))


# ---------------------------------------------------------------------------------------------
# the recogniser


@dataclass
class _Encoded:
    """One clip as the method reads it: features (T, D) (+ streams) or frames (T, C, H, W)."""

    path: Path
    tensors: dict[str, torch.Tensor]


class Recognizer:
    """A few-shot method, a clip loader and an encoded support set (see the module docstring).

    Build it with :meth:`from_folder` (or :meth:`from_method` around a ready method).
    """

    def __init__(
        self,
        method: torch.nn.Module,
        *,
        num_frames: int = 8,
        image_size: int | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        reject: str | float = "off",
        device: str | torch.device = "cpu",
        info: dict[str, Any] | None = None,
    ) -> None:
        from fsar.engine.sources import loader_for

        self.method = method.eval()
        self.device = torch.device(device)
        self.method.to(self.device)
        self.encoder = method.encoder
        self.loader = loader_for(self.encoder, num_frames=num_frames, image_size=image_size)
        self.frozen = bool(getattr(self.encoder, "is_frozen", False))
        required = getattr(method, "required_streams", None)
        self.streams: tuple[str, ...] = tuple(required()) if callable(required) else ()
        self.reject = parse_reject(reject)
        self.info = dict(info or {})
        self._store: ClipStore | None = None
        if self.frozen and cache_dir is not False:
            directory = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            self._store = ClipStore(directory, encoder_key(self.encoder, self.loader, self.streams))
        self._support: dict[str, list[_Encoded]] = {}
        self._calibration: Calibration | None = None
        #: clips encoded by this recogniser (the rest came from memory or the disk store)
        self.encoded_clips = 0

    # -------------------------------------------------------------- construction

    @classmethod
    def from_method(cls, method: torch.nn.Module, support: dict[str, Sequence[str | os.PathLike]] | None = None,
                    **kwargs: Any) -> "Recognizer":
        recognizer = cls(method, **kwargs)
        for name, clips in (support or {}).items():
            recognizer.add(name, clips)
        if support:
            recognizer._check_support()
        return recognizer

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        *,
        method: str | None = None,
        backbone: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        weights: str | None = None,
        method_options: dict[str, Any] | None = None,
        method_args: dict[str, Any] | None = None,
        descriptions: str | None = None,
        num_frames: int | None = None,
        image_size: int | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        reject: str | float = "off",
        device: str = "auto",
    ) -> "Recognizer":
        """``folder/<action>/<clip>``: a few clips per action (video files or frame folders).

        With ``checkpoint`` (a run directory of ``fsar train`` or its ``best.json``) the trained
        method is rebuilt from it (``method``/``backbone``, when given, must match); without it,
        the training-free ``method`` (default ``otam``) on ``backbone`` (default
        ``effnet-lite0+minilm``). ``method_options`` build the method (``-O KEY=VALUE``);
        ``method_args`` are the method's own resources (``FewShotMethod.options()``, e.g. LGA's
        ``descriptions`` cache and ``llm_*`` describer settings); ``descriptions`` is short for
        ``method_args={"descriptions": PATH}``.
        """
        support = support_folder(folder)
        built, info = build_recognizer_method(
            method=method, backbone=backbone, checkpoint=checkpoint, weights=weights,
            method_options=method_options, method_args=method_args, descriptions=descriptions,
            class_names=list(support),
        )
        saved_frames, saved_size = info.pop("num_frames", None), info.pop("image_size", None)
        frames = num_frames or saved_frames or 8
        image_size = image_size or saved_size
        info["support"] = str(folder)
        return cls.from_method(built, support, num_frames=frames, image_size=image_size, cache_dir=cache_dir,
                               reject=reject, device=resolve_device(device), info=info)

    # -------------------------------------------------------------- the action set

    @property
    def actions(self) -> list[str]:
        """Action names in support order."""
        return list(self._support)

    def shots(self) -> dict[str, int]:
        return {name: len(clips) for name, clips in self._support.items()}

    def support_paths(self, action: str) -> list[Path]:
        return [e.path for e in self._clips_of(action)]

    def add(self, name: str, clips: Iterable[str | os.PathLike] | str | os.PathLike) -> None:
        """Add action ``name`` with its clips (paths), or more clips to an existing action.
        Only these clips are encoded; an unreadable one is a :class:`NotAVideoError`."""
        if not isinstance(name, str) or not name.strip():
            raise SupportSetError(f"an action needs a non-empty name, got {name!r}")
        if name == NONE_OF_THESE:
            raise SupportSetError(f"{NONE_OF_THESE!r} is the rejection label; name the action otherwise")
        if isinstance(clips, (str, os.PathLike)):
            clips = [clips]
        paths = [Path(c) for c in clips]
        if not paths:
            raise SupportSetError(f"action {name!r}: no clips given")
        encoded = self._encode_many(paths, role=f"support clip of {name!r}", label=name)
        self._support.setdefault(name, []).extend(encoded)
        self._calibration = None

    def remove(self, name: str) -> None:
        """Drop action ``name`` (the other actions' clips stay encoded)."""
        if name not in self._support:
            raise SupportSetError(f"no action {name!r}; actions: {', '.join(self.actions) or 'none'}")
        del self._support[name]
        self._calibration = None

    def _clips_of(self, action: str) -> list[_Encoded]:
        try:
            return self._support[action]
        except KeyError:
            raise SupportSetError(f"no action {action!r}; actions: {', '.join(self.actions)}") from None

    def _check_support(self) -> None:
        if len(self._support) < 2:
            raise SupportSetError(
                f"a support set needs at least 2 actions, it has {len(self._support)}"
                + (f" ({', '.join(self.actions)})" if self._support else "")
            )

    # -------------------------------------------------------------- encoding

    def _digest(self, path: Path, role: str) -> str:
        try:
            return clip_digest(path)
        except OSError as error:
            raise NotAVideoError(f"{role} {path}: cannot read it ({error.strerror or error})") from None

    def _load(self, path: Path, role: str) -> torch.Tensor:
        from fsar.data.manifest import Clip
        from fsar.data.video import VideoReadError

        try:
            return self.loader.load(Clip(path, -1, "?"), train=False)
        except VideoReadError as error:
            raise NotAVideoError(f"{role} {path} is not a readable video: {error.reason}") from None
        except (OSError, RuntimeError, ValueError) as error:
            raise NotAVideoError(f"{role} {path} is not a readable video: {error}") from None

    def load_thumbnails(self, path: str | os.PathLike) -> torch.Tensor:
        """The sampled frames of a clip, uint8 ``(T, C, H, W)`` (what the explanation shows)."""
        from fsar.data.manifest import Clip
        from fsar.data.video import VideoReadError

        try:
            return self.loader.load_uint8(Clip(Path(path), -1, "?"), train=False)
        except VideoReadError as error:
            raise NotAVideoError(f"{path} is not a readable video: {error.reason}") from None

    def _label_streams(self) -> set[str]:
        hook = getattr(self.encoder, "label_stream_names", None)
        return set(hook()) & set(self.streams) if callable(hook) else set()

    def _encode_many(self, paths: list[Path], role: str, label: str | None = None) -> list[_Encoded]:
        """Encode clips (one batched encoder call for those not found in the store). ``label``: the
        action of support clips, given to an encoder's label-aware streams (never for queries; the
        store files such a support clip under its digest and that label)."""
        from fsar.data.video import VideoReadError, open_video

        results: list[_Encoded | None] = [None] * len(paths)
        missing: list[tuple[int, str | None, torch.Tensor]] = []
        for i, path in enumerate(paths):
            try:
                open_video(path)
            except VideoReadError as error:
                raise NotAVideoError(f"{role} {path} is not a readable video: {error.reason}") from None
            if self._store is not None:
                digest = self._digest(path, role)
                if label is not None and self._label_streams():
                    digest = f"{digest}-label-{hashlib.sha256(label.encode()).hexdigest()[:16]}"
                stored = self._store.get(digest)
                if stored is not None and "features" in stored:
                    results[i] = _Encoded(path, stored)
                    continue
            else:
                digest = None
            missing.append((i, digest, self._load(path, role)))
        if not self.frozen:
            for i, _, frames in missing:
                results[i] = _Encoded(paths[i], {"features": frames})
            return results  # type: ignore[return-value]
        for start in range(0, len(missing), 8):
            batch = missing[start : start + 8]
            frames = torch.stack([b[2] for b in batch]).to(self.device)
            with torch.inference_mode():
                outputs = self._encode_clips(frames, [label] * len(batch) if label is not None else None)
            self.encoded_clips += len(batch)
            for j, (i, digest, _) in enumerate(batch):
                tensors = {name: value[j].float().cpu().clone() for name, value in outputs.items()}
                if self._store is not None and digest is not None:
                    self._store.put(digest, tensors)
                results[i] = _Encoded(paths[i], tensors)
        return results  # type: ignore[return-value]

    def _encode_clips(self, frames: torch.Tensor, labels: list[str] | None = None) -> dict[str, torch.Tensor]:
        encode_clips = getattr(self.encoder, "encode_clips", None)
        if callable(encode_clips) and labels is not None and self._label_streams():
            outputs = dict(encode_clips(frames, labels=labels))
        elif callable(encode_clips):
            outputs = dict(encode_clips(frames))
        else:
            outputs = {"features": self.encoder.encode_frames(frames)}
        wanted = {"features", *self.streams}
        return {k: v for k, v in outputs.items() if k in wanted}

    # -------------------------------------------------------------- scoring

    def _episode(self, support: list[tuple[_Encoded, int]], query: list[_Encoded], class_names: list[str]):
        from fsar.data.inputs import EpisodeInputs

        def stack(items: list[_Encoded], name: str) -> torch.Tensor:
            return torch.stack([e.tensors[name] for e in items])

        support_items = [e for e, _ in support]
        values: dict[str, Any] = dict(
            support=stack(support_items, "features"),
            support_labels=torch.tensor([label for _, label in support], dtype=torch.long),
            query=stack(query, "features"),
            class_names=list(class_names),
            features=self.frozen,
        )
        if self.streams:
            values["support_streams"] = {s: stack(support_items, s) for s in self.streams if s in support_items[0].tensors}
            values["query_streams"] = {s: stack(query, s) for s in self.streams
                                       if s in query[0].tensors and s not in self._label_streams()}
            class_streams = getattr(self.encoder, "encode_class_streams", None)
            if callable(class_streams):
                with torch.no_grad():
                    values["class_streams"] = {k: v for k, v in class_streams(list(class_names)).items()
                                               if k in self.streams}
        return EpisodeInputs(**values).to(self.device)

    def _forward(self, support: list[tuple[_Encoded, int]], query: list[_Encoded], class_names: list[str]):
        from fsar.data.inputs import MissingStreamError

        inputs = self._episode(support, query, class_names)
        try:
            with torch.no_grad():
                return self.method(inputs)
        except MissingStreamError as error:  # the method reads a stream this encoder does not give
            raise RecognizerError(str(error)) from None

    def _support_pairs(self, without: set[int] | None = None, without_action: str | None = None):
        """(support pairs, class names) of the current set, leaving out clips by id or one action."""
        names = [n for n in self._support if n != without_action]
        pairs = []
        for label, name in enumerate(names):
            for e in self._support[name]:
                if without is None or id(e) not in without:
                    pairs.append((e, label))
        return pairs, names

    def log_probs(self, queries: list[_Encoded]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's raw log-probabilities (n_query, way) over :attr:`actions`, and its parts."""
        self._check_support()
        pairs, names = self._support_pairs()
        output = self._forward(pairs, queries, names)
        return output.log_probs.float().cpu(), {k: v.float().cpu() for k, v in (output.parts or {}).items()
                                                if v.dim() == 2 and v.shape == output.log_probs.shape}

    # -------------------------------------------------------------- calibration

    def calibration(self) -> Calibration:
        """Leave-one-out temperature and threshold of the current support set (cached until it changes)."""
        if self._calibration is not None:
            return self._calibration
        self._check_support()
        known_rows, known_labels = [], []
        for label, name in enumerate(self._support):
            clips = self._support[name]
            if len(clips) < 2:
                continue
            for e in clips:
                pairs, names = self._support_pairs(without={id(e)})
                known_rows.append(self._forward(pairs, [e], names).log_probs.float().cpu()[0])
                known_labels.append(label)
        unknown_rows = []
        if len(self._support) >= 3:
            for name in self._support:
                pairs, names = self._support_pairs(without_action=name)
                unknown_rows.extend(self._forward(pairs, self._support[name], names).log_probs.float().cpu())
        known = torch.stack(known_rows) if known_rows else torch.empty(0, len(self._support))
        labels = torch.tensor(known_labels, dtype=torch.long)
        temperature = fit_temperature(known, labels)
        known_probs = torch.softmax(known.double() / temperature, -1) if known_rows else known
        known_scores = [float(r.max()) for r in known_probs]
        known_correct = [int(r.argmax()) == int(y) for r, y in zip(known_probs, labels)]
        unknown_scores = [float(torch.softmax(r.double() / temperature, -1).max()) for r in unknown_rows]
        threshold, rule = choose_threshold(known_scores, unknown_scores)
        self._calibration = Calibration(temperature, threshold, known_scores, known_correct, unknown_scores, rule)
        return self._calibration

    def threshold(self) -> float | None:
        """The rejection threshold in force (None with ``reject="off"``)."""
        if self.reject == "off":
            return None
        if self.reject == "auto":
            calibration = self.calibration()
            if calibration.threshold is None:
                raise SupportSetError(f"reject 'auto': {calibration.rule}")
            return calibration.threshold
        return float(self.reject)

    # -------------------------------------------------------------- prediction

    def encode_queries(self, clips: Sequence[str | os.PathLike]) -> list[_Encoded]:
        return self._encode_many([Path(c) for c in clips], role="query")

    def predict(self, clip_or_clips: str | os.PathLike | Sequence[str | os.PathLike]):
        """Ranked actions with calibrated probabilities for one clip (-> :class:`Prediction`)
        or a list of clips (-> list of them)."""
        single = isinstance(clip_or_clips, (str, os.PathLike))
        clips = [clip_or_clips] if single else list(clip_or_clips)
        if not clips:
            raise RecognizerError("predict: no query clips given")
        predictions = self.predict_encoded(self.encode_queries(clips))
        return predictions[0] if single else predictions

    def predict_encoded(self, queries: list[_Encoded]) -> list[Prediction]:
        raw, _ = self.log_probs(queries)
        probabilities = self.calibrate(raw)
        threshold = self.threshold()
        return [self._prediction(str(q.path), row, threshold) for q, row in zip(queries, probabilities)]

    def calibrate(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities ``softmax(log_probs / T)`` of raw method log-probabilities."""
        return torch.softmax(log_probs.double() / self.calibration().temperature, dim=-1).float()

    def _prediction(self, query: str, row: torch.Tensor, threshold: float | None) -> Prediction:
        order = row.argsort(descending=True).tolist()
        ranking = [(self.actions[i], float(row[i])) for i in order]
        score = ranking[0][1]
        label = NONE_OF_THESE if threshold is not None and score < threshold else ranking[0][0]
        return Prediction(query, ranking, label, score, threshold)

    def explain(self, clip: str | os.PathLike, *, top: int = 3, name: str | None = None):
        """What the method matched for one query (-> :class:`fsar.explain.Explanation`;
        ``.save(path)`` draws it). ``name``: what the picture calls the query."""
        from fsar.explain import explain

        return explain(self, clip, top=top, name=name)

    def __repr__(self) -> str:
        name = getattr(self.method, "name", type(self.method).__name__)
        return (f"Recognizer({name} on {getattr(self.encoder, 'name', '?')}, actions={self.shots()}, "
                f"reject={self.reject!r})")


# ---------------------------------------------------------------------------------------------
# helpers shared with the CLI and the app


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise RecognizerError(f"device {device!r}: {error}") from None


def support_folder(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """``folder/<action>/<clip>`` -> {action: clip paths}; errors name the folder and the problem."""
    from fsar.data.manifest import Manifest, ManifestError

    folder = Path(folder)
    try:
        manifest = Manifest.from_folder(folder)
    except (ManifestError, FileNotFoundError, NotADirectoryError) as error:
        raise SupportSetError(f"support folder {folder}: {error}") from None
    empty = [name for name, count in manifest.counts().items() if count == 0]
    if empty:
        reasons = [f"{s.path.name}: {s.reason}" for s in manifest.skipped if s.class_name in empty][:3]
        raise SupportSetError(
            f"support folder {folder}: action folder(s) {', '.join(repr(str(folder / n)) for n in empty)} "
            f"hold no readable clip" + (f" ({'; '.join(reasons)})" if reasons else "")
        )
    if len(manifest.classes) < 2:
        raise SupportSetError(
            f"support folder {folder}: needs at least 2 action folders, found {len(manifest.classes)}"
            + (f" ({manifest.classes[0]!r})" if manifest.classes else "")
        )
    return {name: [c.path for c in manifest.clips_of(name)] for name in manifest.classes}


def build_recognizer_method(
    *,
    method: str | None,
    backbone: str | None,
    checkpoint: str | os.PathLike | None,
    weights: str | None = None,
    method_options: dict[str, Any] | None = None,
    method_args: dict[str, Any] | None = None,
    descriptions: str | None = None,
    class_names: list[str] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The method to recognise with, and what describes it (method, backbone, checkpoint, frames)."""
    from fsar.engine.checkpoint import CheckpointError, CheckpointMismatchError, read_checkpoint
    from fsar.engine.config import ConfigError
    from fsar.engine.run import build_method, method_from_checkpoint

    method_args = {k: v for k, v in dict(method_args or {}).items() if v is not None}
    if descriptions is not None:
        method_args["descriptions"] = str(descriptions)
    try:
        if checkpoint:
            if weights is not None or method_options:
                raise IncompatibleCheckpointError(
                    "weights and method options come from the checkpoint; drop them or the checkpoint"
                )
            record = read_checkpoint(checkpoint)
            built, saved = method_from_checkpoint(record, method=method, backbone=backbone, class_names=class_names,
                                                  method_args=method_args)
            info = {"method": saved.method, "backbone": saved.backbone, "checkpoint": str(checkpoint),
                    "num_frames": saved.num_frames, "image_size": saved.image_size}
        else:
            name, chosen = method or DEFAULT_METHOD, backbone or DEFAULT_BACKBONE
            built = build_method(name, backbone=chosen, weights=weights, method_options=method_options,
                                 method_args=method_args, class_names=class_names)
            info = {"method": name, "backbone": chosen, "checkpoint": None}
    except CheckpointMismatchError as error:
        raise IncompatibleCheckpointError(str(error)) from None
    except CheckpointError as error:
        raise IncompatibleCheckpointError(f"checkpoint {checkpoint}: {error}") from None
    except (ConfigError, ValueError, TypeError, KeyError, OSError) as error:
        if isinstance(error, RecognizerError):
            raise
        raise RecognizerError(str(error)) from None
    return built, info
