"""Per-clip parameters of the synthetic set: what a clip looks like, how it moves, when.

Every clip is a pure function of ``(seed, clip index, action, generator version, frames,
size)``. Appearance, motion, phase boundaries and (version 2) the speed profile come from
independent RNG streams keyed by ``(seed, stream, clip index)`` -- never by the action -- so the
same clip index looks and moves alike in every class.

Generator versions:

* **1** (the first demo figures): objects 9-15 % of the frame side in radius, translations over
  35-55 % of it, motions eased in and out (smoothstep) between still onset and completion.
* **2** (the default of ``fsar demo``): objects 17-24 % in radius (a large part of the frame,
  as in SSv2), translations over 50-70 % of it, and per-clip *speed profiles* -- constant,
  accelerating or decelerating between a still onset and a still completion -- so the stage
  changes are sharp in the pixels and CLUSTER-Segment has something to find.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from fsar.data.synth.actions import get_action

__all__ = [
    "SHAPES", "TEXTURES", "BACKGROUNDS", "COVER_SHAPES", "GENERATOR_VERSIONS", "DEFAULT_VERSION", "SPEED_PROFILES",
    "Look", "Appearance", "Motion", "ClipParams",
    "draw_appearance", "draw_motion", "draw_boundaries", "draw_speed", "draw_clip_params", "mirror_params",
    "progress_profile", "check_size",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "diamond")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "noise")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "clutter")
#: Shapes of the second object (the cover, the target, the thing passed behind): solid bodies.
COVER_SHAPES: tuple[str, ...] = ("circle", "square", "hexagon")
#: Generator versions (see the module docstring); version 1 reproduces the first demo figures.
GENERATOR_VERSIONS: tuple[int, ...] = (1, 2)
#: The version ``render_dataset`` and ``fsar data synth`` use unless told otherwise.
DEFAULT_VERSION = 1
#: Speed of the motion during the progression phase (version 2 draws one per clip).
SPEED_PROFILES: tuple[str, ...] = ("constant", "accelerating", "decelerating")
_MIRRORED_SPEED = {"constant": "constant", "accelerating": "decelerating", "decelerating": "accelerating"}
#: Independent RNG streams per clip; appearance never shares a stream with anything class-related.
_STREAM_APPEARANCE = 0xA11
_STREAM_MOTION = 0x307
_STREAM_PHASES = 0x5A9
_STREAM_SPEED = 0x5BD


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
    """Everything :func:`~fsar.data.synth.render.render_clip` needs; a pure function of it."""

    action: str
    frames: int
    size: int
    boundaries: tuple[int, int]  # first frame of progression, first frame of completion
    appearance: Appearance
    motion: Motion
    version: int = 1  # generator version (which motions, see fsar.data.synth.actions)
    speed: str = "constant"  # progression speed profile, one of SPEED_PROFILES



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


#: Main-object radius range per generator version (fractions of the frame side).
_MAIN_RADIUS = {1: (0.09, 0.15), 2: (0.17, 0.24)}
#: Upper bound of the second object's radius per version.
_OTHER_RADIUS_CAP = {1: 0.24, 2: 0.36}


def draw_appearance(seed: int, clip_index: int, version: int = 1) -> Appearance:
    """Appearance of clip ``clip_index``: a function of (seed, clip index, version) only, never the action."""
    _check_version(version)
    rng = _rng(seed, _STREAM_APPEARANCE, clip_index)
    background = str(rng.choice(BACKGROUNDS))
    # Backgrounds are muted (low saturation) and either dark or light; objects are saturated.
    dark = bool(rng.integers(0, 2))
    value = (0.05, 0.35) if dark else (0.8, 1.0)
    bg1 = _colour(rng, (0.0, 0.45), value)
    bg2 = _colour(rng, (0.0, 0.45), value)
    bg_angle = round(float(rng.uniform(0.0, 2.0 * math.pi)), 4)
    bg_seed = int(rng.integers(0, 2**31 - 1))
    main = _look(rng, _MAIN_RADIUS[version], avoid=(bg1, bg2))
    # The second object covers / hides the main one in some actions, so it is a solid-bodied
    # shape (no ring, star, cross) at least 1.45x larger: its inscribed circle covers the main
    # object's full extent. Drawn the same way for every clip, whatever the action.
    r_other = (1.45 * main.radius, min(1.7 * main.radius, _OTHER_RADIUS_CAP[version]))
    other = _look(rng, r_other, avoid=(bg1, bg2, main.colour), shapes=COVER_SHAPES)
    return Appearance(main=main, other=other, background=background, bg_colours=(bg1, bg2), bg_angle=bg_angle, bg_seed=bg_seed)


def draw_motion(seed: int, clip_index: int, version: int = 1) -> Motion:
    """Motion parameters of clip ``clip_index`` (same draw order for every action).

    Version 2 draws larger displacements, oscillations and rotations (motions over a large
    part of the frame) and smaller growth (its objects are already large).
    """
    _check_version(version)
    rng = _rng(seed, _STREAM_MOTION, clip_index)
    r = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)  # noqa: E731
    if version == 1:
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
    return Motion(
        cx=r(0.35, 0.65),
        cy=r(0.35, 0.65),
        dist=r(0.5, 0.7),
        turn=r(0.6 * math.pi, 1.2 * math.pi),
        spin_turns=r(1.5, 2.5),
        grow=r(1.5, 1.8),
        amp=r(0.1, 0.15),
        cycles=int(rng.integers(2, 4)),
        direction=int(rng.choice([-1, 1])),
        side=int(rng.choice([-1, 1])),
        phase0=r(0.0, 2.0 * math.pi),
    )


def draw_speed(seed: int, clip_index: int, version: int = 1) -> str:
    """Progression speed profile of a clip: always "constant" in version 1 (its motions ease in
    and out themselves); version 2 draws constant, accelerating or decelerating per clip."""
    _check_version(version)
    if version == 1:
        return "constant"
    rng = _rng(seed, _STREAM_SPEED, clip_index)
    return SPEED_PROFILES[int(rng.integers(0, len(SPEED_PROFILES)))]


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


def draw_clip_params(
    action: str, *, seed: int, clip_index: int, frames: int = 16, size: int = 112, version: int = 1
) -> ClipParams:
    """All parameters of one clip; appearance, motion, phases and speed come from independent streams."""
    get_action(action, version)
    check_size(frames, size)
    return ClipParams(
        action=action,
        frames=frames,
        size=size,
        boundaries=draw_boundaries(seed, clip_index, frames),
        appearance=draw_appearance(seed, clip_index, version),
        motion=draw_motion(seed, clip_index, version),
        version=version,
        speed=draw_speed(seed, clip_index, version),
    )


def mirror_params(params: ClipParams) -> ClipParams:
    """The parameters of the time-reversed clip: the reverse action with mirrored phase durations.

    An accelerating clip played backwards decelerates, so the speed profile is mirrored too.
    ``render_clip(mirror_params(p))`` equals ``render_clip(p)[::-1]`` frame for frame.
    """
    spec = get_action(params.action, params.version)
    if spec.reverse_of is None:
        raise ValueError(f"action {params.action!r} has no reverse action")
    a, b = params.boundaries
    return replace(params, action=spec.reverse_of, boundaries=(params.frames - b, params.frames - a),
                   speed=_MIRRORED_SPEED[params.speed])


def _accelerate(along: np.ndarray) -> np.ndarray:
    return along * (1.0 + 2.0 * along) / 3.0


def progress_profile(frames: int, boundaries: tuple[int, int], speed: str = "constant") -> np.ndarray:
    """Motion progress per frame (T,): 0 during onset, rising in progression, 1 in completion.

    Progression frame k of P is at u = (k + 0.5) / P along the phase, so the profile of mirrored
    boundaries is exactly 1 - the reversed profile, and the first progression frame already
    differs from onset. ``speed`` shapes the rise: "constant" u; "accelerating" u (1 + 2u) / 3,
    whose speed grows five-fold over the phase yet whose first step is still visible; and
    "decelerating", the accelerating profile played backwards, 1 - a(1 - u).
    """
    a, b = boundaries
    if not 0 < a < b < frames:
        raise ValueError(f"invalid phase boundaries {boundaries} for {frames} frames (need 0 < a < b < frames)")
    if speed not in SPEED_PROFILES:
        raise ValueError(f"unknown speed profile {speed!r}; one of {SPEED_PROFILES}")
    p = np.zeros(frames, dtype=np.float64)
    along = (np.arange(b - a) + 0.5) / (b - a)
    if speed == "accelerating":
        along = _accelerate(along)
    elif speed == "decelerating":
        along = 1.0 - _accelerate(along[::-1])
    p[a:b] = along
    p[b:] = 1.0
    return p


def _check_version(version: int) -> None:
    if isinstance(version, bool) or version not in GENERATOR_VERSIONS:
        raise ValueError(f"unknown synthetic generator version {version!r}; known: {list(GENERATOR_VERSIONS)}")


def check_size(frames: int, size: int) -> None:
    """Refuse frame sizes yuv420p cannot hold and clips too short for three phases."""
    if size < 16 or size % 2:
        raise ValueError(f"synthetic frame size must be an even number >= 16 (yuv420p), got size={size}")
    if frames < 3:
        raise ValueError(f"synthetic clips need at least 3 frames (one per phase), got frames={frames}")
