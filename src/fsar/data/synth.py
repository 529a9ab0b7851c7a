"""Synthetic actions: the embedded default data set and the video fixture for tests.

Why this exists: real few-shot benchmarks (SSv2, Kinetics) cannot ship with the package, yet a
newcomer should run the whole few-shot loop on a laptop in minutes, and every test that needs a
video needs one that is small, deterministic and has known ground truth.

What it renders: short clips of one simple object (shape x colour x texture on a background)
performing a *named motion* ("moving something from left to right", "something falling down",
"covering something" ...). Every action runs through the same three phases LGA's action anatomy
names -- **onset** (object still), **progression** (the motion), **completion** (object still in its
end state) -- with a random duration split per clip, and ``synth.json`` records the frame indices
where the phases change, so LGA's CLUSTER-Segment can be scored against known stage boundaries.

Design choices that make the set useful for few-shot *temporal* matching:

* **Appearance carries no class signal.** Shape, colours, texture, background and object size
  are drawn from an RNG keyed only by ``(seed, clip index)`` -- never by the action -- so the
  same clip index looks the same whichever action it performs (tested).
* **Order-sensitive pairs.** Ten actions come with their time reverse (left->right vs
  right->left, appearing vs disappearing, covering vs uncovering, splitting vs merging ...). The
  reverse action evaluates the same motion at ``1 - progress``: with mirrored phase durations a
  clip of the reverse action is *exactly* the frame-reversed clip of the forward one (tested), so
  a set of frames alone cannot separate the two; only temporal order (OTAM, AB-MHM ...) can.
* **Look-alike classes.** Pushing towards the camera vs expanding, moving in front of vs behind
  something, shaking vs wobbling, squeezing vs stretching: single frames are ambiguous.

Rendering is numpy-vectorised (no per-pixel Python): each object's mask is a level function of
coordinate grids mapped into its rotated, scaled local frame, with a one-pixel soft edge,
evaluated on its bounding box per frame; every object carries a small contrasting marker dot so
rotations of symmetric shapes are visible. Clips are encoded with PyAV (MPEG-4 part 2, yuv420p)
and written atomically. Everything is deterministic from the seed.

Layout written by :func:`render_dataset`::

    out_dir/<action name>/<clip id>.mp4
    out_dir/synth.json          # seed, parameters, classes, default split, per-clip ground truth
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fsar.errors import DataError

__all__ = [
    "PHASES",
    "SHAPES",
    "TEXTURES",
    "BACKGROUNDS",
    "COVER_SHAPES",
    "FORMAT_VERSION",
    "ActionSpec",
    "ACTIONS",
    "ACTION_BY_NAME",
    "Appearance",
    "Look",
    "Motion",
    "ClipParams",
    "Track",
    "SynthDatasetError",
    "class_names",
    "get_action",
    "reverse_pairs",
    "default_split",
    "draw_boundaries",
    "draw_appearance",
    "draw_motion",
    "draw_clip_params",
    "mirror_params",
    "progress_profile",
    "render_clip",
    "encode_mp4",
    "render_dataset",
    "load_metadata",
    "phase_of_frames",
]

PHASES: tuple[str, str, str] = ("onset", "progression", "completion")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "diamond")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "noise")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "clutter")
#: Shapes of the second object (the cover, the target, the thing passed behind): solid bodies.
COVER_SHAPES: tuple[str, ...] = ("circle", "square", "hexagon")
FORMAT_VERSION = 1
#: Frames per second written into the mp4 container (16 frames = 2 s, a short SSv2-like clip).
FPS = 8
#: Independent RNG streams per clip; appearance never shares a stream with anything class-related.
_STREAM_APPEARANCE = 0xA11
_STREAM_MOTION = 0x307
_STREAM_PHASES = 0x5A9
_NOISE_CELLS = 8  # resolution of the "noise" texture table in object-local coordinates
#: Clip index = canonical class index * this + video index, so a clip keeps its identity (and its
#: bytes) whichever subset of classes or number of videos is rendered.
_MAX_VIDEOS_PER_CLASS = 10_000


class SynthDatasetError(DataError):
    """A synthetic data set folder cannot be (re)used as asked (names the folder and the reason)."""


# --------------------------------------------------------------------------------------------
# Per-clip parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """Appearance of one object: drawn per clip, independent of the action."""

    shape: str
    colour: tuple[float, float, float]  # RGB in [0, 1]
    colour_to: tuple[float, float, float]  # end colour for "changing colour of something"
    texture: str
    texture_freq: float  # stripes / checker period in object-local units
    texture_angle: float  # stripes orientation (radians, object-local)
    texture_seed: int  # seed of the "noise" texture table
    marker: tuple[float, float, float]  # small contrasting dot that makes rotation visible
    radius: float  # base radius as a fraction of the frame side
    angle0: float  # initial orientation (radians)


@dataclass(frozen=True)
class Appearance:
    """Everything visual about a clip except the motion: main object, second object, background."""

    main: Look
    other: Look  # drawn for every clip (used by covering, approaching, behind/in front ...)
    background: str
    bg_colours: tuple[tuple[float, float, float], tuple[float, float, float]]
    bg_angle: float  # gradient direction
    bg_seed: int  # seed of the noise / clutter background


@dataclass(frozen=True)
class Motion:
    """Motion parameters in frame-normalised units (x right, y down, 1.0 = frame side).

    Drawn in a fixed order for every clip whatever the action, so a clip index gets the same
    values in every class; each action uses the fields it needs.
    """

    cx: float  # anchor point
    cy: float
    dist: float  # displacement of translations ("speed": divided by the random progression length)
    turn: float  # rotation amount for rotating (radians)
    spin_turns: float  # full turns for spinning quickly
    grow: float  # scale factor for pushing / expanding
    amp: float  # oscillation amplitude (shaking, zig-zag)
    cycles: int  # oscillation count (bouncing, shaking, wobbling, blinking ...)
    direction: int  # +1 / -1 for actions whose direction is not part of the class
    side: int  # +1 / -1 side of a second object
    phase0: float  # start angle on the circle


@dataclass(frozen=True)
class ClipParams:
    """Everything :func:`render_clip` needs; a pure function of it."""

    action: str
    frames: int
    size: int
    boundaries: tuple[int, int]  # first frame of progression, first frame of completion
    appearance: Appearance
    motion: Motion


@dataclass
class Track:
    """Per-frame state of one drawn object, arrays of shape (T,) in frame-normalised units.

    ``kind`` says whose :class:`Look` to use ("main" or "other"); ``layer`` orders drawing
    (higher on top). ``angle`` is added to the look's initial orientation.
    """

    x: np.ndarray
    y: np.ndarray
    sx: np.ndarray | float = 1.0
    sy: np.ndarray | float = 1.0
    angle: np.ndarray | float = 0.0
    opacity: np.ndarray | float = 1.0
    mix: np.ndarray | float = 0.0  # 0 = look.colour, 1 = look.colour_to
    kind: str = "main"
    layer: int = 0


# --------------------------------------------------------------------------------------------
# Action specs
# --------------------------------------------------------------------------------------------

TrackFn = Callable[[np.ndarray, Motion, float, float], list[Track]]


@dataclass(frozen=True)
class ActionSpec:
    """One action class.

    ``stages`` are one-sentence descriptions of its onset / progression / completion phases
    (subject, motion, object), usable as LGA's textual anatomy for the synthetic set.
    ``reverse_of`` names the action that is this one played backwards (None if there is none).
    """

    name: str
    reverse_of: str | None
    stages: tuple[str, str, str]
    tracks_fn: TrackFn = field(repr=False, compare=False)

    @property
    def phases(self) -> tuple[str, str, str]:
        return PHASES

    def tracks(self, progress: np.ndarray, motion: Motion, r_main: float, r_other: float) -> list[Track]:
        """Per-frame object states for a progress profile (T,) in [0, 1]."""
        return self.tracks_fn(np.asarray(progress, dtype=np.float64), motion, r_main, r_other)


def _smooth(p: np.ndarray) -> np.ndarray:
    """Smoothstep; symmetric (s(1-p) = 1-s(p)), so reversed actions stay exact reversals."""
    return p * p * (3.0 - 2.0 * p)


def _full(p: np.ndarray, value: float) -> np.ndarray:
    return np.full_like(p, value, dtype=np.float64)


def _span_centre(c: float, span: float, lo: float = 0.12, hi: float = 0.88) -> float:
    """Move a centre so a segment of length ``span`` around it stays inside [lo, hi]."""
    half = span / 2.0
    return float(min(max(c, lo + half), hi - half))


# Forward motions (functions of progress p in [0, 1]); reverse actions call them with 1 - p.


def _left_to_right(p, m, r, ro):
    d = m.dist
    c = _span_centre(m.cx, d)
    return [Track(x=c - d / 2 + d * _smooth(p), y=_full(p, m.cy))]


def _diagonal_up(p, m, r, ro):
    d = 0.75 * m.dist
    cx, cy = _span_centre(m.cx, d), _span_centre(m.cy, d)
    e = _smooth(p)
    return [Track(x=cx - d / 2 + d * e, y=cy + d / 2 - d * e)]


def _falling(p, m, r, ro):
    top, drop = 0.2, m.dist + 0.1
    return [Track(x=_full(p, m.cx), y=top + drop * p * p)]  # accelerating, like gravity


def _push_towards_camera(p, m, r, ro):
    # Constant approach speed in depth: apparent scale 1/z grows faster as the object nears;
    # nearer objects sit lower in the frame.
    scale = 1.0 / (1.0 - (1.0 - 1.0 / m.grow) * p)
    cy = min(max(m.cy, 0.35), 0.55)
    return [Track(x=_full(p, m.cx), y=cy + 0.06 * (scale - 1.0), sx=scale, sy=scale)]


def _appearing(p, m, r, ro):
    e = _smooth(p)
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), sx=0.85 + 0.15 * e, sy=0.85 + 0.15 * e, opacity=e)]


def _covering(p, m, r, ro):
    # The object sits off-centre, away from the side the cover comes from; the cover starts
    # beside it (a small gap, fully or mostly in view) and ends centred on it.
    obj_x = 0.5 - m.side * 0.12 + 0.2 * (m.cx - 0.5)
    start = r + ro + 0.06
    cover_x = obj_x + m.side * start * (1.0 - _smooth(p))
    return [
        Track(x=_full(p, obj_x), y=_full(p, m.cy), layer=0),
        Track(x=cover_x, y=_full(p, m.cy), kind="other", layer=1),
    ]


def _splitting(p, m, r, ro):
    e = _smooth(p)
    offset = (0.5 * m.dist) * e
    scale = 1.0 - 0.25 * e
    cx = _span_centre(m.cx, m.dist + 2 * r)
    return [
        Track(x=cx - offset, y=_full(p, m.cy), sx=scale, sy=scale),
        Track(x=cx + offset, y=_full(p, m.cy), sx=scale, sy=scale),
    ]


def _rotating_clockwise(p, m, r, ro):
    # Image y points down, so a growing angle turns the object clockwise on screen.
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), angle=m.turn * _smooth(p))]


def _expanding(p, m, r, ro):
    scale = 1.0 + (m.grow - 1.0) * _smooth(p)
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), sx=scale, sy=scale)]


def _approaching(p, m, r, ro):
    target_x = 0.5 + m.side * 0.3
    stop_x = target_x - m.side * (r + ro + 0.02)
    start_x = stop_x - m.side * min(m.dist, abs(stop_x - (0.5 - m.side * 0.4)))  # start inside the frame
    e = 1.0 - (1.0 - p) ** 2  # decelerates into the stop
    return [
        Track(x=start_x + (stop_x - start_x) * e, y=_full(p, m.cy)),
        Track(x=_full(p, target_x), y=_full(p, m.cy), kind="other"),
    ]


def _squeezing(p, m, r, ro):
    e = _smooth(p)
    sy, sx = 1.0 - 0.45 * e, 1.0 + 0.3 * e
    return [Track(x=_full(p, m.cx), y=m.cy + r * (1.0 - sy), sx=sx, sy=sy)]  # bottom edge stays put


def _stretching(p, m, r, ro):
    e = _smooth(p)
    sy, sx = 1.0 + 0.45 * e, 1.0 - 0.3 * e
    return [Track(x=_full(p, m.cx), y=m.cy - r * (sy - 1.0), sx=sx, sy=sy)]


def _bouncing(p, m, r, ro):
    floor, height = 0.78, 0.9 * m.dist
    y = floor - height * np.abs(np.sin(math.pi * m.cycles * p)) * (1.0 - p) ** 0.6
    x = _span_centre(m.cx, 0.15) + m.direction * 0.12 * (p - 0.5)
    return [Track(x=x, y=y)]


def _circle(p, m, r, ro):
    radius = 0.2
    cx, cy = _span_centre(m.cx, 2 * radius + 0.1), _span_centre(m.cy, 2 * radius + 0.1)
    a = m.phase0 + m.direction * 2.0 * math.pi * p
    return [Track(x=cx + radius * np.cos(a), y=cy + radius * np.sin(a))]


def _shaking(p, m, r, ro):
    return [Track(x=m.cx + m.amp * np.sin(2.0 * math.pi * (m.cycles + 2) * p), y=_full(p, m.cy))]


def _zigzag(p, m, r, ro):
    d = m.dist
    c = _span_centre(m.cx, d)
    x = c + m.direction * (d * p - d / 2)
    phase = (m.cycles * 2 * p) % 2.0
    tri = np.where(phase < 1.0, phase, 2.0 - phase) * 2.0 - 1.0  # triangle wave in [-1, 1]
    y = min(max(m.cy, 0.3), 0.7) + 1.5 * m.amp * (tri + 1.0)
    return [Track(x=x, y=y)]


def _out_and_back(sign: int) -> TrackFn:
    def fn(p, m, r, ro):
        d = 0.6 * m.dist
        start = min(max(m.cx, 0.15 + d), 0.85) if sign < 0 else max(min(m.cx, 0.85 - d), 0.15)
        return [Track(x=start + sign * d * np.sin(math.pi * p), y=_full(p, m.cy))]

    return fn


def _throw_and_catch(p, m, r, ro):
    base, height = 0.78, m.dist + 0.1
    return [Track(x=_full(p, m.cx), y=base - height * 4.0 * p * (1.0 - p), angle=m.direction * math.pi * p)]


def _changing_colour(p, m, r, ro):
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), mix=_smooth(p))]


def _spinning(p, m, r, ro):
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), angle=m.direction * 2.0 * math.pi * m.spin_turns * p)]


def _wobbling(p, m, r, ro):
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), angle=0.4 * np.sin(2.0 * math.pi * m.cycles * p))]


def _blinking(p, m, r, ro):
    return [Track(x=_full(p, m.cx), y=_full(p, m.cy), opacity=0.5 + 0.5 * np.cos(2.0 * math.pi * m.cycles * p))]


def _passing(layer: int) -> TrackFn:
    """Move across a static second object, drawn under (layer 0) or over (layer 2) it."""

    def fn(p, m, r, ro):
        mid = 0.5 + 0.1 * (m.cx - 0.5)
        x = mid + m.direction * (0.36 * p * 2.0 - 0.36)
        return [
            Track(x=x, y=_full(p, m.cy), layer=layer),
            Track(x=_full(p, mid), y=_full(p, m.cy), kind="other", layer=1),
        ]

    return fn


def _pendulum(p, m, r, ro):
    pivot_x, pivot_y, length = _span_centre(m.cx, 0.6), 0.08, 0.5
    phi = 0.6 * np.sin(2.0 * math.pi * max(m.cycles - 1, 1) * p) * m.direction
    return [Track(x=pivot_x + length * np.sin(phi), y=pivot_y + length * np.cos(phi), angle=-phi)]


def _reversed(fn: TrackFn) -> TrackFn:
    """The time reverse: the same motion evaluated at 1 - progress."""

    def rev(p, m, r, ro):
        return fn(1.0 - p, m, r, ro)

    return rev


def _build_actions() -> list[ActionSpec]:
    specs: list[ActionSpec] = []

    def pair(name: str, stages: tuple[str, str, str], rev_name: str, rev_stages: tuple[str, str, str], fn: TrackFn):
        specs.append(ActionSpec(name, rev_name, stages, fn))
        specs.append(ActionSpec(rev_name, name, rev_stages, _reversed(fn)))

    def single(name: str, stages: tuple[str, str, str], fn: TrackFn):
        specs.append(ActionSpec(name, None, stages, fn))

    # Canonical order interleaves reverse pairs and single actions, so that the first N classes
    # (render_dataset(classes=N)) always mix order-sensitive pairs with other motions.
    pair(
        "moving something from left to right",
        ("something rests on the left side", "something moves steadily to the right", "something rests on the right side"),
        "moving something from right to left",
        ("something rests on the right side", "something moves steadily to the left", "something rests on the left side"),
        _left_to_right,
    )
    single(
        "bouncing something",
        ("something rests on the floor", "something bounces up and down on the floor", "something settles on the floor"),
        _bouncing,
    )
    pair(
        "something appearing",
        ("the scene is empty", "something fades into view", "something is fully visible"),
        "something disappearing",
        ("something is fully visible", "something fades out of view", "the scene is empty"),
        _appearing,
    )
    single(
        "shaking something",
        ("something rests in place", "something shakes quickly from side to side", "something rests in place again"),
        _shaking,
    )
    pair(
        "pushing something towards the camera",
        ("something is far from the camera", "something comes closer and grows larger", "something is close and large"),
        "pulling something away from the camera",
        ("something is close to the camera and large", "something moves away and shrinks", "something is far and small"),
        _push_towards_camera,
    )
    single(
        "moving something in a circle",
        ("something rests at a point", "something travels around a circle", "something is back at its start point"),
        _circle,
    )
    pair(
        "covering something",
        ("something lies uncovered beside a cover", "the cover slides over something", "something is hidden under the cover"),
        "uncovering something",
        ("something is hidden under a cover", "the cover slides away from something", "something lies uncovered"),
        _covering,
    )
    single(
        "zig-zagging something",
        ("something rests at one side", "something moves across in a zig-zag", "something rests at the other side"),
        _zigzag,
    )
    pair(
        "something falling down",
        ("something is held high up", "something drops faster and faster", "something lies at the bottom"),
        "lifting something up",
        ("something lies at the bottom", "something is lifted up and slows down", "something is held high up"),
        _falling,
    )
    single(
        "throwing something up and catching it",
        ("something is held low", "something flies up in an arc and comes back down", "something is caught low again"),
        _throw_and_catch,
    )
    pair(
        "splitting something into two",
        ("one thing sits in place", "the thing splits and two halves move apart", "two things sit apart"),
        "merging two things into one",
        ("two things sit apart", "the two things move together", "one thing sits in place"),
        _splitting,
    )
    single(
        "changing colour of something",
        ("something shows its first colour", "the colour of something fades into another", "something shows its new colour"),
        _changing_colour,
    )
    pair(
        "rotating something clockwise",
        ("something rests upright", "something turns clockwise", "something rests turned"),
        "rotating something counterclockwise",
        ("something rests turned", "something turns counterclockwise", "something rests upright"),
        _rotating_clockwise,
    )
    single(
        "spinning something quickly",
        ("something rests in place", "something spins around quickly", "something rests in place again"),
        _spinning,
    )
    pair(
        "sliding something diagonally up",
        ("something rests at the lower left", "something slides diagonally up to the right", "something rests at the upper right"),
        "sliding something diagonally down",
        ("something rests at the upper right", "something slides diagonally down to the left", "something rests at the lower left"),
        _diagonal_up,
    )
    single(
        "wobbling something",
        ("something rests upright", "something tilts back and forth", "something rests upright again"),
        _wobbling,
    )
    pair(
        "expanding something",
        ("something has its normal size", "something swells in place", "something is large"),
        "shrinking something",
        ("something is large", "something shrinks in place", "something has its normal size"),
        _expanding,
    )
    single(
        "squeezing something",
        ("something has its normal shape", "something is pressed flat from above", "something stays squashed"),
        _squeezing,
    )
    pair(
        "approaching something then stopping",
        ("something rests far from another thing", "something moves towards the other thing and slows", "something stops next to the other thing"),
        "moving something away from something",
        ("something rests next to another thing", "something speeds away from the other thing", "something rests far from the other thing"),
        _approaching,
    )
    single(
        "stretching something",
        ("something has its normal shape", "something is pulled taller and thinner", "something stays stretched"),
        _stretching,
    )
    single(
        "moving something to the left and back",
        ("something rests in place", "something moves to the left and returns", "something rests where it started"),
        _out_and_back(-1),
    )
    single(
        "moving something to the right and back",
        ("something rests in place", "something moves to the right and returns", "something rests where it started"),
        _out_and_back(+1),
    )
    single(
        "making something blink",
        ("something is visible", "something flashes on and off", "something is visible again"),
        _blinking,
    )
    single(
        "moving something behind something",
        ("something rests beside a bigger thing", "something passes behind the bigger thing", "something rests on its other side"),
        _passing(layer=0),
    )
    single(
        "moving something in front of something",
        ("something rests beside a bigger thing", "something passes in front of the bigger thing", "something rests on its other side"),
        _passing(layer=2),
    )
    single(
        "swinging something like a pendulum",
        ("something hangs still", "something swings from side to side", "something hangs still again"),
        _pendulum,
    )
    return specs


#: All action classes in canonical order (reverse pairs interleaved with single actions).
ACTIONS: list[ActionSpec] = _build_actions()
ACTION_BY_NAME: dict[str, ActionSpec] = {a.name: a for a in ACTIONS}
assert len(ACTION_BY_NAME) == len(ACTIONS), "duplicate action names"


def class_names() -> list[str]:
    """All synthetic action names in canonical order."""
    return [a.name for a in ACTIONS]


def get_action(name: str) -> ActionSpec:
    try:
        return ACTION_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown synthetic action {name!r}; see fsar.data.synth.class_names()") from None


def reverse_pairs(names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Order-sensitive pairs (forward, reverse) among ``names`` (default: all actions)."""
    chosen = set(class_names() if names is None else names)
    pairs = []
    for a in ACTIONS:
        if a.reverse_of and a.name in chosen and a.reverse_of in chosen:
            key = (a.name, a.reverse_of)
            if (key[1], key[0]) not in pairs:
                pairs.append(key)
    return pairs


# --------------------------------------------------------------------------------------------
# Class split
# --------------------------------------------------------------------------------------------

#: Fractions of classes in (train, val, test): 20 / 6 / 10 of the 36 actions, the same
#: proportions as a 64/16/20-style meta split but with enough test classes for 5-way episodes.
SPLIT_FRACTIONS = (20 / 36, 6 / 36, 10 / 36)
#: Fraction of reverse pairs given to (train, val, test): the test part gets a fair share of
#: order-sensitive pairs (3 of 10 for the full set) so evaluation probes temporal modelling.
PAIR_FRACTIONS = (0.6, 0.1, 0.3)


def default_split(names: Sequence[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Deterministic (train, val, test) split of synthetic class names.

    Keeps each reverse pair inside one part, so the test part contains order-sensitive pairs
    that only temporal matching separates. Class counts follow ``SPLIT_FRACTIONS`` (20/6/10 for
    the 36 actions); pairs are shared out by ``PAIR_FRACTIONS`` (train 6, val 1, test 3), then
    single actions fill each part up to its count. The result depends only on the set of names
    (not their order); each part is returned in canonical order. Unknown names raise ValueError.
    Small sets may get an empty validation part (fewer than 6 classes).
    """
    names = class_names() if names is None else list(names)
    for n in names:
        get_action(n)
    if len(set(names)) != len(names):
        raise ValueError("default_split: duplicate class names")
    canon = {n: i for i, n in enumerate(class_names())}
    chosen = sorted(set(names), key=canon.__getitem__)
    total = len(chosen)
    n_val = round(total * SPLIT_FRACTIONS[1])
    n_test = round(total * SPLIT_FRACTIONS[2])
    targets = [total - n_val - n_test, n_val, n_test]

    pairs = reverse_pairs(chosen)
    paired = {n for p in pairs for n in p}
    singles = [n for n in chosen if n not in paired]
    n_pairs = len(pairs)
    pair_quota = [0, min(round(n_pairs * PAIR_FRACTIONS[1]), targets[1] // 2), min(round(n_pairs * PAIR_FRACTIONS[2]), targets[2] // 2)]
    pair_quota[0] = n_pairs - pair_quota[1] - pair_quota[2]

    parts: list[list[str]] = [[], [], []]
    # Pairs and singles are dealt out in a fixed interleaved order (test, val, train first for
    # the scarce parts) so that the parts mix different motion families.
    order = [2, 1, 0]
    it = iter(pairs)
    while any(pair_quota):
        for k in order:
            if pair_quota[k]:
                parts[k].extend(next(it))
                pair_quota[k] -= 1
    remaining = [max(t - len(p), 0) for t, p in zip(targets, parts)]
    queue = list(singles)
    while queue:
        takers = [k for k in order if remaining[k]]
        if not takers:  # pairs overfilled a part; the rest goes to train
            parts[0].extend(queue)
            break
        for k in takers:
            if queue:
                parts[k].append(queue.pop(0))
                remaining[k] -= 1
    return tuple(sorted(p, key=canon.__getitem__) for p in parts)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Drawing parameters
# --------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, int(index)])


def _luma(c: Sequence[float]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _colour(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[float, float, float]:
    h = rng.uniform(0.0, 1.0)
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*s), rng.uniform(*v))
    return tuple(round(float(c), 4) for c in rgb)  # type: ignore[return-value]


def _distinct(a: Sequence[float], b: Sequence[float]) -> float:
    """Visual difference: luma gap plus a share of the RGB distance."""
    return abs(_luma(a) - _luma(b)) + 0.5 * float(np.linalg.norm(np.subtract(a, b))) / math.sqrt(3)


def _look(
    rng: np.random.Generator,
    radius_range: tuple[float, float],
    avoid: Sequence[Sequence[float]],
    shapes: Sequence[str] = SHAPES,
) -> Look:
    for _ in range(32):
        colour = _colour(rng, (0.55, 1.0), (0.55, 1.0))
        if all(_distinct(colour, a) > 0.3 for a in avoid):
            break
    for _ in range(32):
        colour_to = _colour(rng, (0.55, 1.0), (0.55, 1.0))
        if _distinct(colour, colour_to) > 0.3 and all(_distinct(colour_to, a) > 0.25 for a in avoid):
            break
    marker = (0.05, 0.05, 0.05) if _luma(colour) > 0.5 else (0.97, 0.97, 0.97)
    return Look(
        shape=str(rng.choice(shapes)),
        colour=colour,
        colour_to=colour_to,
        texture=str(rng.choice(TEXTURES)),
        texture_freq=round(float(rng.uniform(2.0, 4.0)), 4),
        texture_angle=round(float(rng.uniform(0.0, math.pi)), 4),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        marker=marker,
        radius=round(float(rng.uniform(*radius_range)), 4),
        angle0=round(float(rng.uniform(0.0, 2.0 * math.pi)), 4),
    )


def draw_appearance(seed: int, clip_index: int) -> Appearance:
    """Appearance of clip ``clip_index``: a function of (seed, clip index) only, never the action."""
    rng = _rng(seed, _STREAM_APPEARANCE, clip_index)
    background = str(rng.choice(BACKGROUNDS))
    # Backgrounds are muted (low saturation) and either dark or light; objects are saturated.
    dark = bool(rng.integers(0, 2))
    value = (0.05, 0.35) if dark else (0.8, 1.0)
    bg1 = _colour(rng, (0.0, 0.45), value)
    bg2 = _colour(rng, (0.0, 0.45), value)
    bg_angle = round(float(rng.uniform(0.0, 2.0 * math.pi)), 4)
    bg_seed = int(rng.integers(0, 2**31 - 1))
    main = _look(rng, (0.09, 0.15), avoid=(bg1, bg2))
    # The second object covers / hides the main one in some actions, so it is a solid-bodied
    # shape (no ring, star, cross) at least 1.45x larger: its inscribed circle covers the main
    # object's full extent. Drawn the same way for every clip, whatever the action.
    r_other = (1.45 * main.radius, min(1.7 * main.radius, 0.24))
    other = _look(rng, r_other, avoid=(bg1, bg2, main.colour), shapes=COVER_SHAPES)
    return Appearance(main=main, other=other, background=background, bg_colours=(bg1, bg2), bg_angle=bg_angle, bg_seed=bg_seed)


def draw_motion(seed: int, clip_index: int) -> Motion:
    """Motion parameters of clip ``clip_index`` (same draw order for every action)."""
    rng = _rng(seed, _STREAM_MOTION, clip_index)
    r = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)  # noqa: E731
    return Motion(
        cx=r(0.3, 0.7),
        cy=r(0.3, 0.7),
        dist=r(0.35, 0.55),
        turn=r(0.5 * math.pi, math.pi),
        spin_turns=r(1.5, 2.5),
        grow=r(1.7, 2.2),
        amp=r(0.06, 0.1),
        cycles=int(rng.integers(2, 4)),
        direction=int(rng.choice([-1, 1])),
        side=int(rng.choice([-1, 1])),
        phase0=r(0.0, 2.0 * math.pi),
    )


def draw_boundaries(seed: int, clip_index: int, frames: int) -> tuple[int, int]:
    """Random phase split: (first progression frame, first completion frame).

    Progression takes 40-70 % of the clip; onset and completion share the rest at random, each
    at least max(1, frames // 8) frames long.
    """
    min_phase = max(1, frames // 8)
    if frames < 3 * min_phase:
        raise ValueError(f"synthetic clips need at least 3 frames (one per phase), got frames={frames}")
    rng = _rng(seed, _STREAM_PHASES, clip_index)
    cap = frames - 2 * min_phase  # longest progression that leaves room for onset and completion
    lo = min(max(min_phase, math.ceil(0.4 * frames)), cap)
    hi = max(lo, min(cap, math.floor(0.7 * frames)))
    progression = int(rng.integers(lo, hi + 1))
    rest = frames - progression
    onset = int(rng.integers(min_phase, rest - min_phase + 1))
    return onset, onset + progression


def draw_clip_params(action: str, *, seed: int, clip_index: int, frames: int = 16, size: int = 112) -> ClipParams:
    """All parameters of one clip; appearance, motion and phases come from independent streams."""
    get_action(action)
    _check_size(frames, size)
    return ClipParams(
        action=action,
        frames=frames,
        size=size,
        boundaries=draw_boundaries(seed, clip_index, frames),
        appearance=draw_appearance(seed, clip_index),
        motion=draw_motion(seed, clip_index),
    )


def mirror_params(params: ClipParams) -> ClipParams:
    """The parameters of the time-reversed clip: the reverse action with mirrored phase durations.

    ``render_clip(mirror_params(p))`` equals ``render_clip(p)[::-1]`` frame for frame.
    """
    spec = get_action(params.action)
    if spec.reverse_of is None:
        raise ValueError(f"action {params.action!r} has no reverse action")
    a, b = params.boundaries
    return replace(params, action=spec.reverse_of, boundaries=(params.frames - b, params.frames - a))


def progress_profile(frames: int, boundaries: tuple[int, int]) -> np.ndarray:
    """Motion progress per frame (T,): 0 during onset, ramping in progression, 1 in completion.

    Progression frame k of P has progress (k + 0.5) / P, so the profile of mirrored boundaries is
    exactly 1 - the reversed profile, and the first progression frame already differs from onset.
    """
    a, b = boundaries
    if not 0 < a < b < frames:
        raise ValueError(f"invalid phase boundaries {boundaries} for {frames} frames (need 0 < a < b < frames)")
    p = np.zeros(frames, dtype=np.float64)
    p[a:b] = (np.arange(b - a) + 0.5) / (b - a)
    p[b:] = 1.0
    return p


def _check_size(frames: int, size: int) -> None:
    if size < 16 or size % 2:
        raise ValueError(f"synthetic frame size must be an even number >= 16 (yuv420p), got size={size}")
    if frames < 3:
        raise ValueError(f"synthetic clips need at least 3 frames (one per phase), got frames={frames}")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _shape_level(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Level function in object-local unit coordinates: < 1 inside, 1 on the edge.

    (1 - level) approximates the distance to the edge in units of the object radius.
    """
    if shape == "circle":
        return np.sqrt(u * u + v * v)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.8
    if shape == "diamond":
        return (np.abs(u) + np.abs(v)) / 1.0
    if shape == "ring":
        rho = np.sqrt(u * u + v * v)
        return 1.0 + np.maximum(rho - 1.0, 0.5 - rho)
    if shape == "cross":
        arm, half = 0.95, 0.32
        return np.minimum(np.maximum(np.abs(u) / arm, np.abs(v) / half * 1.0), np.maximum(np.abs(u) / half, np.abs(v) / arm))
    if shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        apothem = math.cos(math.pi / n)  # circumradius 1, first vertex on +u (the marker side)
        level = None
        for k in range(n):
            a = math.pi / n + 2.0 * math.pi * k / n  # edge normals between vertices
            d = (u * math.cos(a) + v * math.sin(a)) / apothem
            level = d if level is None else np.maximum(level, d)
        return level
    if shape == "star":
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        spikes = 0.5 + 0.5 * np.cos(5.0 * phi)
        return rho / (0.45 + 0.55 * spikes**2)
    raise ValueError(f"unknown shape {shape!r}")


_MARKER_AT = {"ring": 0.75}


@functools.lru_cache(maxsize=256)
def _noise_table(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(_NOISE_CELLS, _NOISE_CELLS)).astype(np.float32)


def _unit_clip(x: np.ndarray, hi: float = 1.0) -> np.ndarray:
    """In-place clip to [0, hi] (np.clip's Python wrapper dominates on small crops)."""
    np.maximum(x, np.float32(0.0), out=x)
    return np.minimum(x, np.float32(hi), out=x)


#: Every shape fits in this many radii from its centre (the square's corner is at 0.8 * sqrt 2).
_EXTENT = 1.15


def _draw_object(
    look: Look,
    size: int,
    *,
    x: float,
    y: float,
    sx: float = 1.0,
    sy: float = 1.0,
    angle: float = 0.0,
    opacity: float = 1.0,
    mix: float = 0.0,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """One object in one frame: (crop slices, alpha (h, w), colour (h, w, 3)), or None if unseen.

    Works on the object's bounding box only (a few hundred to a few thousand pixels), which is
    what makes rendering fast: the mask is a level function of the pixel coordinates mapped into
    the object's rotated, scaled local frame, with a one-pixel soft edge.
    """
    if opacity <= 0.0:
        return None
    cx, cy = x * size, y * size
    radius = look.radius * size
    rx, ry = radius * sx, radius * sy
    reach = _EXTENT * max(rx, ry) + 1.5
    x0, x1 = max(int(math.floor(cx - reach)), 0), min(int(math.ceil(cx + reach)), size)
    y0, y1 = max(int(math.floor(cy - reach)), 0), min(int(math.ceil(cy + reach)), size)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
    theta = angle + look.angle0
    cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    u = (dx * cos + dy * sin) / np.float32(rx)
    v = (dy * cos - dx * sin) / np.float32(ry)
    edge_px = np.float32(min(rx, ry))
    level = _shape_level(look.shape, u, v)
    alpha = _unit_clip((1.0 - level) * edge_px + np.float32(0.5))
    if opacity < 1.0:
        alpha *= np.float32(opacity)

    if look.texture == "solid":
        pattern = None
    elif look.texture == "stripes":
        w = u * np.float32(math.cos(look.texture_angle)) + v * np.float32(math.sin(look.texture_angle))
        pattern = (np.sin(w * np.float32(look.texture_freq * math.pi)) > 0).astype(np.float32)
    elif look.texture == "checker":
        f = np.float32(look.texture_freq * math.pi)
        pattern = (np.sin(u * f) * np.sin(v * f) > 0).astype(np.float32)
    elif look.texture == "noise":
        table = _noise_table(look.texture_seed)
        iu = np.clip(((u + 1.0) * (_NOISE_CELLS / 2)).astype(np.int64), 0, _NOISE_CELLS - 1)
        iv = np.clip(((v + 1.0) * (_NOISE_CELLS / 2)).astype(np.int64), 0, _NOISE_CELLS - 1)
        pattern = table[iv, iu]
    else:
        raise ValueError(f"unknown texture {look.texture!r}")

    base = (1.0 - mix) * np.asarray(look.colour, np.float32) + mix * np.asarray(look.colour_to, np.float32)
    if pattern is None:
        rgb = np.broadcast_to(base, alpha.shape + (3,))
    else:
        shade = 0.45 if _luma(look.colour) > 0.45 else 1.8  # darker pattern on light objects, lighter on dark
        accent = np.clip(base * shade + (0.0 if shade < 1 else 0.12), 0.0, 1.0)
        pattern = pattern[..., None]
        rgb = base * (1.0 - pattern) + accent * pattern
    mu = _MARKER_AT.get(look.shape, 0.45)
    marker = _unit_clip((np.float32(0.17) - np.sqrt((u - np.float32(mu)) ** 2 + v * v)) * edge_px + np.float32(0.5))[..., None]
    rgb = rgb * (1.0 - marker) + np.asarray(look.marker, np.float32) * marker
    return (slice(y0, y1), slice(x0, x1)), alpha, rgb


def _composite(canvas: np.ndarray, drawn) -> None:
    """Alpha-blend one drawn object into an (H, W, 3) float canvas in place."""
    if drawn is None:
        return
    (ys, xs), alpha, rgb = drawn
    a = alpha[..., None]
    canvas[ys, xs] = canvas[ys, xs] * (1.0 - a) + rgb * a


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small (n, n, C) grid to (size, size, C)."""
    n = grid.shape[0]
    pos = np.linspace(0.0, n - 1.0, size)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    f = (pos - i0).astype(np.float32)
    rows = grid[i0] * (1 - f)[:, None, None] + grid[i0 + 1] * f[:, None, None]
    return rows[:, i0] * (1 - f)[None, :, None] + rows[:, i0 + 1] * f[None, :, None]


def _background(app: Appearance, size: int) -> np.ndarray:
    """Static background (H, W, 3) float32: plain, gradient, smooth noise, or gradient + clutter."""
    c1, c2 = (np.asarray(c, np.float32) for c in app.bg_colours)
    rng = np.random.default_rng(app.bg_seed)
    if app.background == "noise":
        weights = rng.uniform(0.0, 1.0, size=(5, 5, 1)).astype(np.float32)
        return np.ascontiguousarray(_upsample(c1 * (1 - weights) + c2 * weights, size), dtype=np.float32)
    if app.background == "plain":
        return np.broadcast_to(c1, (size, size, 3)).astype(np.float32)
    if app.background not in ("gradient", "clutter"):
        raise ValueError(f"unknown background {app.background!r}")
    coords = np.arange(size, dtype=np.float32) + np.float32(0.5 - size / 2)
    t = (coords[None, :] * math.cos(app.bg_angle) + coords[:, None] * math.sin(app.bg_angle)) / size + 0.5
    t = np.clip(t, 0.0, 1.0)[..., None].astype(np.float32)
    canvas = (c1 * (1 - t) + c2 * t).astype(np.float32)
    if app.background == "clutter":
        # Static distractor shapes in muted tints of the background colour.
        for _ in range(int(rng.integers(4, 9))):
            tint = tuple(float(c) for c in np.clip(c1 + rng.uniform(-0.25, 0.25, size=3), 0.0, 1.0))
            look = Look(
                shape=str(rng.choice(SHAPES)), colour=tint, colour_to=tint, texture="solid",
                texture_freq=1.0, texture_angle=0.0, texture_seed=0, marker=tint,
                radius=float(rng.uniform(0.03, 0.07)), angle0=float(rng.uniform(0, 2 * math.pi)),
            )
            _composite(canvas, _draw_object(look, size, x=float(rng.uniform(0.05, 0.95)), y=float(rng.uniform(0.05, 0.95))))
    return canvas


def render_clip(params: ClipParams) -> tuple[np.ndarray, list[Track]]:
    """Render one clip: uint8 frames (T, H, W, 3) RGB and the object tracks that produced them."""
    _check_size(params.frames, params.size)
    spec = get_action(params.action)
    T, S = params.frames, params.size
    progress = progress_profile(T, params.boundaries)
    app = params.appearance
    tracks = spec.tracks(progress, params.motion, app.main.radius, app.other.radius)
    background = _background(app, S)
    canvas = np.empty((T, S, S, 3), dtype=np.float32)
    fields = ("x", "y", "sx", "sy", "angle", "opacity", "mix")
    layers = []
    for track in sorted(tracks, key=lambda t: t.layer):  # stable: list order within a layer
        look = app.main if track.kind == "main" else app.other
        values = np.stack([np.broadcast_to(np.asarray(getattr(track, k), dtype=np.float64), (T,)) for k in fields], 1)
        layers.append((look, values))
    for t in range(T):
        if t and all(np.array_equal(v[t], v[t - 1]) for _, v in layers):
            canvas[t] = canvas[t - 1]  # still frame (onset, completion): same state, same pixels
            continue
        canvas[t] = background
        for look, values in layers:
            _composite(canvas[t], _draw_object(look, S, **dict(zip(fields, values[t].tolist()))))
    canvas *= np.float32(255.0)
    canvas += np.float32(0.5)
    return _unit_clip(canvas, hi=255.0).astype(np.uint8), tracks


# --------------------------------------------------------------------------------------------
# Encoding and the data set
# --------------------------------------------------------------------------------------------

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

    ``synth.json`` schema (format_version 1; one clip record per line)::

        format: "fsar-synth"        format_version: 1         seed: int
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
        }]
    """
    names = _resolve_classes(classes)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if not 1 <= videos_per_class <= _MAX_VIDEOS_PER_CLASS:
        raise ValueError(f"videos_per_class must be in 1..{_MAX_VIDEOS_PER_CLASS}, got {videos_per_class}")
    _check_size(frames, size)
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
        if old == (FORMAT_VERSION, seed, params):
            missing = [c["path"] for c in meta.get("clips", []) if not (out / c["path"]).is_file()]
            if not missing:
                return out  # complete and identical: no-op
        elif not overwrite:
            diffs = [k for k in params if (meta.get("params") or {}).get(k) != params[k]]
            if meta.get("seed") != seed:
                diffs.insert(0, "seed")
            if meta.get("format_version") != FORMAT_VERSION:
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
                p = draw_clip_params(name, seed=seed, clip_index=clip_index, frames=frames, size=size)
                video, tracks = render_clip(p)
                rel = f"{name}/{_clip_id(canon[name], v)}.mp4"
                encode_mp4(out / rel, video)
                wanted.add((out / rel).resolve())
                a, b = p.boundaries
                main = tracks[0]
                parts = [t for t in tracks if t.kind == "main"]
                cx = np.mean([np.broadcast_to(t.x, (frames,)) for t in parts], axis=0) * size
                cy = np.mean([np.broadcast_to(t.y, (frames,)) for t in parts], axis=0) * size
                clips.append({
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
                })
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
        "format_version": FORMAT_VERSION,
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
    if meta.get("format_version") != FORMAT_VERSION:
        raise SynthDatasetError(f"{path}: format_version {meta.get('format_version')!r}, this fsar reads {FORMAT_VERSION}")
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
