"""Rendering: one clip's parameters -> uint8 frames, numpy-vectorised (no per-pixel Python).

Each object's mask is a level function of coordinate grids mapped into its rotated, scaled
local frame, with a one-pixel soft edge, evaluated on its bounding box per frame; every object
carries a small contrasting marker dot so rotations of symmetric shapes are visible. Still
frames (onset, completion) reuse the previous frame's pixels.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fsar.data.synth.actions import Track, get_action
from fsar.data.synth.params import SHAPES, Appearance, ClipParams, Look, _luma, check_size, progress_profile

__all__ = ["render_clip"]

_NOISE_CELLS = 8  # resolution of the "noise" texture table in object-local coordinates


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
    check_size(params.frames, params.size)
    spec = get_action(params.action, params.version)
    T, S = params.frames, params.size
    progress = progress_profile(T, params.boundaries, params.speed)
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
