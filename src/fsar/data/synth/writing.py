"""Writing the synthetic set: mp4 encoding, the data set folder, ``synth.json`` and reading it back.

Layout written by :func:`render_dataset`::

    out_dir/<action name>/<clip id>.mp4
    out_dir/synth.json          # seed, parameters, classes, default split, per-clip ground truth
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from fsar.data.synth.actions import ACTION_BY_NAME, PHASES, class_names, default_split, get_action, reverse_pairs
from fsar.data.synth.params import DEFAULT_VERSION, GENERATOR_VERSIONS, check_size, draw_clip_params, progress_profile
from fsar.data.synth.render import render_clip

__all__ = [
    "FPS", "CODEC", "CODEC_OPTIONS", "FORMAT_VERSIONS", "SynthDatasetError",
    "encode_mp4", "render_dataset", "load_metadata", "phase_of_frames",
]

#: synth.json schema version of each generator version: 2 = 1 plus ``generator_version`` and
#: each clip's ``speed`` profile and per-frame ``progress``.
FORMAT_VERSIONS: dict[int, int] = {1: 1, 2: 2}
#: Frames per second written into the mp4 container (16 frames = 2 s, a short SSv2-like clip).
FPS = 8
#: Clip index = canonical class index * this + video index, so a clip keeps its identity (and its
#: bytes) whichever subset of classes or number of videos is rendered.
_MAX_VIDEOS_PER_CLASS = 10_000


class SynthDatasetError(ValueError):
    """A synthetic data set folder cannot be (re)used as asked (names the folder and the reason)."""



#: Encoder settings. MPEG-4 part 2 is in every FFmpeg build PyAV bundles, decodes everywhere,
#: and encodes faster than libx264 for clips this small (x264 has ~5 ms of per-stream set-up).
#: Quantiser 1-2 and one key frame per clip keep the decoded frames within ~2 grey levels of
#: the render on average (most of it yuv420p chroma subsampling), at ~8 KB per clip; one
#: encoder thread keeps the bytes deterministic.
CODEC = "mpeg4"
CODEC_OPTIONS = {"qmin": "1", "qmax": "2", "g": "250"}


def encode_mp4(path: str | os.PathLike, frames: np.ndarray, *, fps: int = FPS) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3) to ``path`` atomically (temp file + os.replace)."""
    import av

    path = Path(path)
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sizes, got {H}x{W}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(CODEC, rate=fps, options=dict(CODEC_OPTIONS))
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            stream.codec_context.thread_count = 1
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _dump_meta(meta: dict) -> str:
    """JSON with one clip per line: readable header, compact yet greppable per-clip records."""
    head = {k: v for k, v in meta.items() if k != "clips"}
    text = json.dumps(head, indent=1)
    clips = ",\n".join("  " + json.dumps(c, separators=(",", ":")) for c in meta.get("clips", []))
    return text[:-2] + ',\n "clips": [\n' + clips + "\n ]\n}\n"


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(_dump_meta(obj), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _resolve_classes(classes: int | Sequence[str] | None) -> list[str]:
    all_names = class_names()
    if classes is None:
        return all_names
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 1 <= classes <= len(all_names):
            raise ValueError(f"classes must be in 1..{len(all_names)}, got {classes}")
        return all_names[: int(classes)]
    if isinstance(classes, str):
        raise ValueError("classes must be an int, a list of action names or None, not a single string")
    names = list(classes)
    for n in names:
        get_action(n)
    if len(set(names)) != len(names) or not names:
        raise ValueError("classes must be a non-empty list of distinct action names")
    return names


def _clip_id(canonical_index: int, video: int) -> str:
    return f"c{canonical_index:02d}_v{video:04d}"


def _r(x: float) -> float:
    return round(float(x), 4)


def render_dataset(
    out_dir: str | os.PathLike,
    *,
    classes: int | Sequence[str] | None = None,
    videos_per_class: int = 10,
    seed: int = 0,
    frames: int = 16,
    size: int = 112,
    progress: bool = True,
    overwrite: bool = False,
    version: int = DEFAULT_VERSION,
) -> Path:
    """Render the synthetic action data set into ``out_dir`` and return ``out_dir``.

    classes: None = all actions, an int N = the first N in canonical order (which mixes reverse
        pairs and single actions), or a list of action names.
    Determinism: every clip is a pure function of (seed, canonical class index, video index,
        frames, size); the same call writes the same bytes.
    Re-runs: if ``out_dir/synth.json`` already records the same parameters and every clip file
        exists, nothing is rendered. Different parameters raise :class:`SynthDatasetError` unless
        ``overwrite=True``, which re-renders and removes clips of the old set that the new one
        does not contain (only ``*.mp4`` inside action-named folders). A non-empty folder that is
        not a synthetic set (anything besides action folders) is refused.
    Writes are atomic (temp file + os.replace); synth.json is written last, so an interrupted
    run never looks complete.
    version: the generator version (:data:`~fsar.data.synth.params.GENERATOR_VERSIONS`); version 1
        writes exactly the files earlier fsar releases wrote.

    ``synth.json`` schema (format_version 1 for generator version 1, 2 for version 2; one clip
    record per line)::

        format: "fsar-synth"        format_version: 1 | 2     seed: int
        generator_version: 2        # format_version 2 only
        params: {classes: [name], videos_per_class, frames, size, fps, codec, codec_options}
        classes: [name]             # label order of this set
        phases: ["onset", "progression", "completion"]
        reverse_pairs: [[forward, reverse]]            # among the rendered classes
        default_split: {train: [name], val: [name], test: [name]}
        descriptions: {name: [onset, progression, completion sentence]}
        clips: [{
            id: "cNN_vVVVV", path: "<action name>/<id>.mp4" (relative, "/"), class, label,
            clip_index,             # (seed, clip_index) re-derives every parameter
            num_frames,
            boundaries: [a, b],     # first progression frame, first completion frame (0 < a < b < T)
            phases: {onset: [0, a], progression: [a, b], completion: [b, T]},  # half-open
            centroid: [[x, y]] * T, # pixels, main object (mean of the two parts for split/merge)
            scale: [float] * T, angle: [rad] * T, opacity: [float] * T,       # main object
            appearance: {...}, motion: {...}                                   # Appearance, Motion
            speed: "constant" | "accelerating" | "decelerating",   # format_version 2 only
            progress: [float] * T,  # motion progress per frame, 0 in onset, 1 in completion (2 only)
        }]
    """
    names = _resolve_classes(classes)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if not 1 <= videos_per_class <= _MAX_VIDEOS_PER_CLASS:
        raise ValueError(f"videos_per_class must be in 1..{_MAX_VIDEOS_PER_CLASS}, got {videos_per_class}")
    check_size(frames, size)
    if isinstance(version, bool) or version not in GENERATOR_VERSIONS:
        raise ValueError(f"unknown synthetic generator version {version!r}; known: {list(GENERATOR_VERSIONS)}")
    format_version = FORMAT_VERSIONS[version]
    out = Path(out_dir)
    params = {
        "classes": names,
        "videos_per_class": int(videos_per_class),
        "frames": int(frames),
        "size": int(size),
        "fps": FPS,
        "codec": CODEC,
        "codec_options": dict(CODEC_OPTIONS),
    }
    meta_path = out / "synth.json"

    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            old = (meta.get("format_version"), meta.get("seed"), meta.get("params"))
        except (OSError, ValueError, AttributeError) as exc:
            raise SynthDatasetError(f"{meta_path}: unreadable synth.json ({exc}); pass overwrite=True to re-render") from exc
        if old == (format_version, seed, params):
            missing = [c["path"] for c in meta.get("clips", []) if not (out / c["path"]).is_file()]
            if not missing:
                return out  # complete and identical: no-op
        elif not overwrite:
            diffs = [k for k in params if (meta.get("params") or {}).get(k) != params[k]]
            if meta.get("seed") != seed:
                diffs.insert(0, "seed")
            if meta.get("format_version") != format_version:
                diffs.insert(0, "format_version")
            raise SynthDatasetError(
                f"{out}: holds a synthetic data set rendered with different parameters ({', '.join(diffs)}); "
                "choose another folder or pass overwrite=True"
            )
    elif out.exists():
        foreign = [
            p.name for p in out.iterdir()
            if not (p.is_dir() and p.name in ACTION_BY_NAME) and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        ]
        if foreign:
            raise SynthDatasetError(
                f"{out}: folder is not empty and is not a synthetic data set (found {sorted(foreign)[:5]}); "
                "choose an empty or new folder"
            )

    out.mkdir(parents=True, exist_ok=True)
    canon = {n: i for i, n in enumerate(class_names())}
    wanted: set[Path] = set()
    clips = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(names) * videos_per_class, desc="synth clips", unit="clip", disable=not progress)
    try:
        for label, name in enumerate(names):
            class_dir = out / name
            class_dir.mkdir(exist_ok=True)
            for v in range(videos_per_class):
                clip_index = canon[name] * _MAX_VIDEOS_PER_CLASS + v  # stable across class subsets and counts
                p = draw_clip_params(name, seed=seed, clip_index=clip_index, frames=frames, size=size, version=version)
                video, tracks = render_clip(p)
                rel = f"{name}/{_clip_id(canon[name], v)}.mp4"
                encode_mp4(out / rel, video)
                wanted.add((out / rel).resolve())
                a, b = p.boundaries
                main = tracks[0]
                parts = [t for t in tracks if t.kind == "main"]
                cx = np.mean([np.broadcast_to(t.x, (frames,)) for t in parts], axis=0) * size
                cy = np.mean([np.broadcast_to(t.y, (frames,)) for t in parts], axis=0) * size
                record = {
                    "id": _clip_id(canon[name], v),
                    "path": rel,
                    "class": name,
                    "label": label,
                    "clip_index": clip_index,
                    "num_frames": frames,
                    "boundaries": [a, b],
                    "phases": {"onset": [0, a], "progression": [a, b], "completion": [b, frames]},
                    "centroid": [[_r(x), _r(y)] for x, y in zip(cx, cy)],
                    "scale": [_r(s) for s in np.sqrt(np.broadcast_to(main.sx, (frames,)) * np.broadcast_to(main.sy, (frames,)))],
                    "angle": [_r(t + p.appearance.main.angle0) for t in np.broadcast_to(main.angle, (frames,))],
                    "opacity": [_r(o) for o in np.broadcast_to(main.opacity, (frames,))],
                    "appearance": asdict(p.appearance),
                    "motion": asdict(p.motion),
                }
                if version >= 2:
                    record["speed"] = p.speed
                    record["progress"] = [_r(x) for x in progress_profile(frames, p.boundaries, p.speed)]
                clips.append(record)
                bar.update(1)
    finally:
        bar.close()

    # Remove clips of an older, different set (only our own files: *.mp4 in action folders).
    for d in out.iterdir():
        if d.is_dir() and d.name in ACTION_BY_NAME:
            for f in d.glob("*.mp4"):
                if f.resolve() not in wanted:
                    f.unlink()
            if d.name not in names and not any(d.iterdir()):
                d.rmdir()

    train, val, test = default_split(names)
    meta = {
        "format": "fsar-synth",
        "format_version": format_version,
        **({"generator_version": version} if version >= 2 else {}),
        "seed": seed,
        "params": params,
        "classes": names,
        "phases": list(PHASES),
        "reverse_pairs": [list(p) for p in reverse_pairs(names)],
        "default_split": {"train": train, "val": val, "test": test},
        "descriptions": {n: list(get_action(n).stages) for n in names},
        "clips": clips,
    }
    _write_json_atomic(meta_path, meta)
    return out


def load_metadata(root: str | os.PathLike) -> dict:
    """Read ``root/synth.json`` (see :func:`render_dataset` for the schema).

    Raises :class:`SynthDatasetError` naming the file when it is missing, unreadable, or not a
    synthetic data set description of a known format version.
    """
    path = Path(root) / "synth.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthDatasetError(f"{path}: missing; {root} is not a rendered synthetic data set") from None
    except (OSError, ValueError) as exc:
        raise SynthDatasetError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "fsar-synth":
        raise SynthDatasetError(f"{path}: not an fsar-synth description (no format 'fsar-synth')")
    known = sorted(FORMAT_VERSIONS.values())
    if meta.get("format_version") not in known:
        raise SynthDatasetError(f"{path}: format_version {meta.get('format_version')!r}, this fsar reads {known}")
    return meta


def phase_of_frames(indices: Sequence[int], boundaries: Sequence[int]) -> list[int]:
    """Phase (0 onset, 1 progression, 2 completion) of each sampled frame index.

    Maps a clip's ground-truth ``boundaries`` (first progression frame, first completion frame)
    onto the frames a sampler picked, e.g. to score CLUSTER-Segment's stages against the truth.
    """
    a, b = (int(x) for x in boundaries)
    if not 0 < a < b:
        raise ValueError(f"invalid phase boundaries {tuple(boundaries)} (need 0 < a < b)")
    return [0 if i < a else 1 if i < b else 2 for i in (int(i) for i in indices)]
