"""The action catalogue: 36 named motions, their reverse pairs, and the class split.

An action is a function from a per-frame *progress* profile (T,) in [0, 1] to the per-frame
state of the objects it moves (:class:`Track`). The motions are methods of :class:`Motions`,
whose ``ease`` (the curve from progress to displacement) is the one thing that differs between
generator versions: version 1 eases every motion in and out (smoothstep), version 2 moves at
the speed the clip's progress profile gives (constant, accelerating or decelerating), so the
still/move/still stages are sharp in the pixels. Every motion takes the same four arguments:

* ``progress`` (T,) float64 in [0, 1];
* ``motion``, the clip's :class:`~fsar.data.synth.params.Motion` (anchor, distance, turns ...);
* ``main_radius`` / ``other_radius``, the radii of the main and the second object (fractions
  of the frame side), for motions that place one object relative to the other.

Reverse actions evaluate their forward motion at ``1 - progress`` (:func:`played_backwards`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from fsar.data.synth.params import Motion

__all__ = [
    "PHASES",
    "ActionSpec",
    "Motions",
    "Track",
    "TrackFn",
    "build_catalogue",
    "played_backwards",
    "smoothstep",
    "SPLIT_FRACTIONS",
    "PAIR_FRACTIONS",
    "default_split",
    "ACTIONS",
    "ACTION_BY_NAME",
    "CATALOGUES",
    "MOTIONS_BY_VERSION",
    "class_names",
    "get_action",
    "reverse_pairs",
]

PHASES: tuple[str, str, str] = ("onset", "progression", "completion")


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


#: (progress, motion, main_radius, other_radius) -> tracks
TrackFn = Callable[[np.ndarray, "Motion", float, float], list[Track]]


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

    def tracks(self, progress: np.ndarray, motion: Motion, main_radius: float, other_radius: float) -> list[Track]:
        """Per-frame object states for a progress profile (T,) in [0, 1]."""
        return self.tracks_fn(np.asarray(progress, dtype=np.float64), motion, main_radius, other_radius)


def smoothstep(progress: np.ndarray) -> np.ndarray:
    """Smoothstep; symmetric (s(1-p) = 1-s(p)), so reversed actions stay exact reversals."""
    return progress * progress * (3.0 - 2.0 * progress)


def _constant(progress: np.ndarray, value: float) -> np.ndarray:
    return np.full_like(progress, value, dtype=np.float64)


def _span_centre(centre: float, span: float, lo: float = 0.12, hi: float = 0.88) -> float:
    """Move a centre so a segment of length ``span`` around it stays inside [lo, hi]."""
    half = span / 2.0
    return float(min(max(centre, lo + half), hi - half))


class Motions:
    """The forward motions, functions of progress in [0, 1]; reverse actions call them with 1 - p.

    ease: progress -> displacement fraction for the motions that ease (version 1: smoothstep;
        version 2: the identity, the clip's progress profile sets the speed). It must be
        symmetric (``ease(1 - p) = 1 - ease(p)``) so that reverse actions stay exact reversals.
    circle_radius: radius of "moving something in a circle", a fraction of the frame side.
    """

    def __init__(self, ease: Callable[[np.ndarray], np.ndarray] = smoothstep, *, circle_radius: float = 0.2) -> None:
        self.ease = ease
        self.circle_radius = circle_radius

    def left_to_right(self, progress, motion, main_radius, other_radius):
        d = motion.dist
        c = _span_centre(motion.cx, d)
        return [Track(x=c - d / 2 + d * self.ease(progress), y=_constant(progress, motion.cy))]

    def diagonal_up(self, progress, motion, main_radius, other_radius):
        d = 0.75 * motion.dist
        cx, cy = _span_centre(motion.cx, d), _span_centre(motion.cy, d)
        e = self.ease(progress)
        return [Track(x=cx - d / 2 + d * e, y=cy + d / 2 - d * e)]

    def falling(self, progress, motion, main_radius, other_radius):
        top, drop = 0.2, motion.dist + 0.1
        return [Track(x=_constant(progress, motion.cx), y=top + drop * progress * progress)]  # accelerating, like gravity

    def push_towards_camera(self, progress, motion, main_radius, other_radius):
        # Constant approach speed in depth: apparent scale 1/z grows faster as the object nears;
        # nearer objects sit lower in the frame.
        scale = 1.0 / (1.0 - (1.0 - 1.0 / motion.grow) * progress)
        cy = min(max(motion.cy, 0.35), 0.55)
        return [Track(x=_constant(progress, motion.cx), y=cy + 0.06 * (scale - 1.0), sx=scale, sy=scale)]

    def appearing(self, progress, motion, main_radius, other_radius):
        e = self.ease(progress)
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy),
                      sx=0.85 + 0.15 * e, sy=0.85 + 0.15 * e, opacity=e)]

    def covering(self, progress, motion, main_radius, other_radius):
        # The object sits off-centre, away from the side the cover comes from; the cover starts
        # beside it (a small gap, fully or mostly in view) and ends centred on it.
        obj_x = 0.5 - motion.side * 0.12 + 0.2 * (motion.cx - 0.5)
        start = main_radius + other_radius + 0.06
        cover_x = obj_x + motion.side * start * (1.0 - self.ease(progress))
        return [
            Track(x=_constant(progress, obj_x), y=_constant(progress, motion.cy), layer=0),
            Track(x=cover_x, y=_constant(progress, motion.cy), kind="other", layer=1),
        ]

    def splitting(self, progress, motion, main_radius, other_radius):
        e = self.ease(progress)
        offset = (0.5 * motion.dist) * e
        scale = 1.0 - 0.25 * e
        cx = _span_centre(motion.cx, motion.dist + 2 * main_radius)
        return [
            Track(x=cx - offset, y=_constant(progress, motion.cy), sx=scale, sy=scale),
            Track(x=cx + offset, y=_constant(progress, motion.cy), sx=scale, sy=scale),
        ]

    def rotating_clockwise(self, progress, motion, main_radius, other_radius):
        # Image y points down, so a growing angle turns the object clockwise on screen.
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy),
                      angle=motion.turn * self.ease(progress))]

    def expanding(self, progress, motion, main_radius, other_radius):
        scale = 1.0 + (motion.grow - 1.0) * self.ease(progress)
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy), sx=scale, sy=scale)]

    def approaching(self, progress, motion, main_radius, other_radius):
        side = motion.side
        target_x = 0.5 + side * 0.3
        stop_x = target_x - side * (main_radius + other_radius + 0.02)
        start_x = stop_x - side * min(motion.dist, abs(stop_x - (0.5 - side * 0.4)))  # start inside the frame
        e = 1.0 - (1.0 - progress) ** 2  # decelerates into the stop
        return [
            Track(x=start_x + (stop_x - start_x) * e, y=_constant(progress, motion.cy)),
            Track(x=_constant(progress, target_x), y=_constant(progress, motion.cy), kind="other"),
        ]

    def squeezing(self, progress, motion, main_radius, other_radius):
        e = self.ease(progress)
        sy, sx = 1.0 - 0.45 * e, 1.0 + 0.3 * e
        return [Track(x=_constant(progress, motion.cx), y=motion.cy + main_radius * (1.0 - sy), sx=sx, sy=sy)]  # bottom edge stays put

    def stretching(self, progress, motion, main_radius, other_radius):
        e = self.ease(progress)
        sy, sx = 1.0 + 0.45 * e, 1.0 - 0.3 * e
        return [Track(x=_constant(progress, motion.cx), y=motion.cy - main_radius * (sy - 1.0), sx=sx, sy=sy)]

    def bouncing(self, progress, motion, main_radius, other_radius):
        floor, height = 0.78, 0.9 * motion.dist
        y = floor - height * np.abs(np.sin(math.pi * motion.cycles * progress)) * (1.0 - progress) ** 0.6
        x = _span_centre(motion.cx, 0.15) + motion.direction * 0.12 * (progress - 0.5)
        return [Track(x=x, y=y)]

    def circle(self, progress, motion, main_radius, other_radius):
        radius = self.circle_radius
        cx, cy = _span_centre(motion.cx, 2 * radius + 0.1), _span_centre(motion.cy, 2 * radius + 0.1)
        a = motion.phase0 + motion.direction * 2.0 * math.pi * progress
        return [Track(x=cx + radius * np.cos(a), y=cy + radius * np.sin(a))]

    def shaking(self, progress, motion, main_radius, other_radius):
        return [Track(x=motion.cx + motion.amp * np.sin(2.0 * math.pi * (motion.cycles + 2) * progress),
                      y=_constant(progress, motion.cy))]

    def zigzag(self, progress, motion, main_radius, other_radius):
        d = motion.dist
        c = _span_centre(motion.cx, d)
        x = c + motion.direction * (d * progress - d / 2)
        phase = (motion.cycles * 2 * progress) % 2.0
        tri = np.where(phase < 1.0, phase, 2.0 - phase) * 2.0 - 1.0  # triangle wave in [-1, 1]
        y = min(max(motion.cy, 0.3), 0.7) + 1.5 * motion.amp * (tri + 1.0)
        return [Track(x=x, y=y)]

    def out_and_back(self, sign: int) -> TrackFn:
        """Move to the left (``sign`` -1) or right (+1) and return."""

        def fn(progress, motion, main_radius, other_radius):
            d = 0.6 * motion.dist
            start = min(max(motion.cx, 0.15 + d), 0.85) if sign < 0 else max(min(motion.cx, 0.85 - d), 0.15)
            return [Track(x=start + sign * d * np.sin(math.pi * progress), y=_constant(progress, motion.cy))]

        return fn

    def throw_and_catch(self, progress, motion, main_radius, other_radius):
        base, height = 0.78, motion.dist + 0.1
        return [Track(x=_constant(progress, motion.cx), y=base - height * 4.0 * progress * (1.0 - progress),
                      angle=motion.direction * math.pi * progress)]

    def changing_colour(self, progress, motion, main_radius, other_radius):
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy), mix=self.ease(progress))]

    def spinning(self, progress, motion, main_radius, other_radius):
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy),
                      angle=motion.direction * 2.0 * math.pi * motion.spin_turns * progress)]

    def wobbling(self, progress, motion, main_radius, other_radius):
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy),
                      angle=0.4 * np.sin(2.0 * math.pi * motion.cycles * progress))]

    def blinking(self, progress, motion, main_radius, other_radius):
        return [Track(x=_constant(progress, motion.cx), y=_constant(progress, motion.cy),
                      opacity=0.5 + 0.5 * np.cos(2.0 * math.pi * motion.cycles * progress))]

    def passing(self, layer: int) -> TrackFn:
        """Move across a static second object, drawn under (layer 0) or over (layer 2) it."""

        def fn(progress, motion, main_radius, other_radius):
            mid = 0.5 + 0.1 * (motion.cx - 0.5)
            x = mid + motion.direction * (0.36 * progress * 2.0 - 0.36)
            return [
                Track(x=x, y=_constant(progress, motion.cy), layer=layer),
                Track(x=_constant(progress, mid), y=_constant(progress, motion.cy), kind="other", layer=1),
            ]

        return fn

    def pendulum(self, progress, motion, main_radius, other_radius):
        pivot_x, pivot_y, length = _span_centre(motion.cx, 0.6), 0.08, 0.5
        phi = 0.6 * np.sin(2.0 * math.pi * max(motion.cycles - 1, 1) * progress) * motion.direction
        return [Track(x=pivot_x + length * np.sin(phi), y=pivot_y + length * np.cos(phi), angle=-phi)]


def played_backwards(forward: TrackFn) -> TrackFn:
    """The time reverse: the same motion evaluated at 1 - progress."""

    @functools.wraps(forward)
    def backwards(progress, motion, main_radius, other_radius):
        return forward(1.0 - progress, motion, main_radius, other_radius)

    return backwards


def build_catalogue(motions: Motions) -> list[ActionSpec]:
    """The 36 action classes in canonical order, their tracks drawn by ``motions``."""
    specs: list[ActionSpec] = []

    def pair(name: str, stages: tuple[str, str, str], rev_name: str, rev_stages: tuple[str, str, str], fn: TrackFn):
        specs.append(ActionSpec(name, rev_name, stages, fn))
        specs.append(ActionSpec(rev_name, name, rev_stages, played_backwards(fn)))

    def single(name: str, stages: tuple[str, str, str], fn: TrackFn):
        specs.append(ActionSpec(name, None, stages, fn))

    # Canonical order interleaves reverse pairs and single actions, so that the first N classes
    # (render_dataset(classes=N)) always mix order-sensitive pairs with other motions.
    pair(
        "moving something from left to right",
        ("something rests on the left side", "something moves steadily to the right", "something rests on the right side"),
        "moving something from right to left",
        ("something rests on the right side", "something moves steadily to the left", "something rests on the left side"),
        motions.left_to_right,
    )
    single(
        "bouncing something",
        ("something rests on the floor", "something bounces up and down on the floor", "something settles on the floor"),
        motions.bouncing,
    )
    pair(
        "something appearing",
        ("the scene is empty", "something fades into view", "something is fully visible"),
        "something disappearing",
        ("something is fully visible", "something fades out of view", "the scene is empty"),
        motions.appearing,
    )
    single(
        "shaking something",
        ("something rests in place", "something shakes quickly from side to side", "something rests in place again"),
        motions.shaking,
    )
    pair(
        "pushing something towards the camera",
        ("something is far from the camera", "something comes closer and grows larger", "something is close and large"),
        "pulling something away from the camera",
        ("something is close to the camera and large", "something moves away and shrinks", "something is far and small"),
        motions.push_towards_camera,
    )
    single(
        "moving something in a circle",
        ("something rests at a point", "something travels around a circle", "something is back at its start point"),
        motions.circle,
    )
    pair(
        "covering something",
        ("something lies uncovered beside a cover", "the cover slides over something", "something is hidden under the cover"),
        "uncovering something",
        ("something is hidden under a cover", "the cover slides away from something", "something lies uncovered"),
        motions.covering,
    )
    single(
        "zig-zagging something",
        ("something rests at one side", "something moves across in a zig-zag", "something rests at the other side"),
        motions.zigzag,
    )
    pair(
        "something falling down",
        ("something is held high up", "something drops faster and faster", "something lies at the bottom"),
        "lifting something up",
        ("something lies at the bottom", "something is lifted up and slows down", "something is held high up"),
        motions.falling,
    )
    single(
        "throwing something up and catching it",
        ("something is held low", "something flies up in an arc and comes back down", "something is caught low again"),
        motions.throw_and_catch,
    )
    pair(
        "splitting something into two",
        ("one thing sits in place", "the thing splits and two halves move apart", "two things sit apart"),
        "merging two things into one",
        ("two things sit apart", "the two things move together", "one thing sits in place"),
        motions.splitting,
    )
    single(
        "changing colour of something",
        ("something shows its first colour", "the colour of something fades into another", "something shows its new colour"),
        motions.changing_colour,
    )
    pair(
        "rotating something clockwise",
        ("something rests upright", "something turns clockwise", "something rests turned"),
        "rotating something counterclockwise",
        ("something rests turned", "something turns counterclockwise", "something rests upright"),
        motions.rotating_clockwise,
    )
    single(
        "spinning something quickly",
        ("something rests in place", "something spins around quickly", "something rests in place again"),
        motions.spinning,
    )
    pair(
        "sliding something diagonally up",
        ("something rests at the lower left", "something slides diagonally up to the right", "something rests at the upper right"),
        "sliding something diagonally down",
        ("something rests at the upper right", "something slides diagonally down to the left", "something rests at the lower left"),
        motions.diagonal_up,
    )
    single(
        "wobbling something",
        ("something rests upright", "something tilts back and forth", "something rests upright again"),
        motions.wobbling,
    )
    pair(
        "expanding something",
        ("something has its normal size", "something swells in place", "something is large"),
        "shrinking something",
        ("something is large", "something shrinks in place", "something has its normal size"),
        motions.expanding,
    )
    single(
        "squeezing something",
        ("something has its normal shape", "something is pressed flat from above", "something stays squashed"),
        motions.squeezing,
    )
    pair(
        "approaching something then stopping",
        ("something rests far from another thing", "something moves towards the other thing and slows", "something stops next to the other thing"),
        "moving something away from something",
        ("something rests next to another thing", "something speeds away from the other thing", "something rests far from the other thing"),
        motions.approaching,
    )
    single(
        "stretching something",
        ("something has its normal shape", "something is pulled taller and thinner", "something stays stretched"),
        motions.stretching,
    )
    single(
        "moving something to the left and back",
        ("something rests in place", "something moves to the left and returns", "something rests where it started"),
        motions.out_and_back(-1),
    )
    single(
        "moving something to the right and back",
        ("something rests in place", "something moves to the right and returns", "something rests where it started"),
        motions.out_and_back(+1),
    )
    single(
        "making something blink",
        ("something is visible", "something flashes on and off", "something is visible again"),
        motions.blinking,
    )
    single(
        "moving something behind something",
        ("something rests beside a bigger thing", "something passes behind the bigger thing", "something rests on its other side"),
        motions.passing(layer=0),
    )
    single(
        "moving something in front of something",
        ("something rests beside a bigger thing", "something passes in front of the bigger thing", "something rests on its other side"),
        motions.passing(layer=2),
    )
    single(
        "swinging something like a pendulum",
        ("something hangs still", "something swings from side to side", "something hangs still again"),
        motions.pendulum,
    )
    return specs


#: All action classes in canonical order (reverse pairs interleaved with single actions).


def _linear(progress: np.ndarray) -> np.ndarray:
    """No easing: displacement follows the progress profile (version 2's speed profiles)."""
    return progress


#: Generator versions -> their motions. Version 1 (the set of the first demo figures) eases
#: every motion in and out; version 2 moves at the progress profile's own speed.
MOTIONS_BY_VERSION: dict[int, Motions] = {1: Motions(smoothstep), 2: Motions(_linear, circle_radius=0.26)}
#: All action classes of each generator version, in canonical order (the same names and
#: reverse pairs in every version).
CATALOGUES: dict[int, list[ActionSpec]] = {v: build_catalogue(m) for v, m in MOTIONS_BY_VERSION.items()}
#: Version 1's catalogue (the default for the module-level helpers).
ACTIONS: list[ActionSpec] = CATALOGUES[1]
ACTION_BY_NAME: dict[str, ActionSpec] = {a.name: a for a in ACTIONS}
_BY_VERSION: dict[int, dict[str, ActionSpec]] = {v: {a.name: a for a in c} for v, c in CATALOGUES.items()}
assert len(ACTION_BY_NAME) == len(ACTIONS), "duplicate action names"
assert all(list(c) == list(ACTION_BY_NAME) for c in _BY_VERSION.values()), "versions must share class names"


def class_names() -> list[str]:
    """All synthetic action names in canonical order (the same in every generator version)."""
    return [a.name for a in ACTIONS]


def get_action(name: str, version: int = 1) -> ActionSpec:
    """The :class:`ActionSpec` called ``name`` in generator ``version``."""
    try:
        catalogue = _BY_VERSION[version]
    except (KeyError, TypeError):
        raise ValueError(f"unknown synthetic generator version {version!r}; known: {sorted(_BY_VERSION)}") from None
    try:
        return catalogue[name]
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

