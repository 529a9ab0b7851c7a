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
  reverse action evaluates the same motion at ``1 - progress``: with mirrored phase durations
  (and speed profile) a clip of the reverse action is *exactly* the frame-reversed clip of the
  forward one (tested), so a set of frames alone cannot separate the two; only temporal order
  (OTAM, AB-MHM ...) can.
* **Look-alike classes.** Pushing towards the camera vs expanding, moving in front of vs behind
  something, shaking vs wobbling, squeezing vs stretching: single frames are ambiguous.

Two generator versions (``render_dataset(version=...)``, ``fsar data synth --version``):
version 1 draws small objects (radius 9-15 % of the frame side) moving a short, eased way;
version 2 draws SSv2-like scales (radius 17-24 %, motions over 50-70 % of the frame) with
per-clip speed profiles (constant, accelerating, decelerating), so the still/move/still stages
are sharp in the pixels. Version 1 stays byte-for-byte what it was, so earlier figures reproduce.

The package is split by concern:

* :mod:`fsar.data.synth.actions` -- the action catalogue (motions, reverse pairs, class split);
* :mod:`fsar.data.synth.params` -- per-clip parameters (appearance, motion, phases, speed);
* :mod:`fsar.data.synth.render` -- drawing the frames;
* :mod:`fsar.data.synth.writing` -- mp4 encoding, the data set folder and ``synth.json``.

Clips are encoded with PyAV (MPEG-4 part 2, yuv420p) and written atomically. Everything is
deterministic from the seed.
"""

from __future__ import annotations

from fsar.data.synth.actions import (
    ACTION_BY_NAME,
    ACTIONS,
    CATALOGUES,
    PAIR_FRACTIONS,
    PHASES,
    SPLIT_FRACTIONS,
    ActionSpec,
    Motions,
    Track,
    class_names,
    default_split,
    get_action,
    played_backwards,
    reverse_pairs,
)
from fsar.data.synth.params import (
    BACKGROUNDS,
    COVER_SHAPES,
    DEFAULT_VERSION,
    GENERATOR_VERSIONS,
    SHAPES,
    SPEED_PROFILES,
    TEXTURES,
    Appearance,
    ClipParams,
    Look,
    Motion,
    draw_appearance,
    draw_boundaries,
    draw_clip_params,
    draw_motion,
    draw_speed,
    mirror_params,
    progress_profile,
)
from fsar.data.synth.render import render_clip
from fsar.data.synth.writing import (
    CODEC,
    CODEC_OPTIONS,
    FORMAT_VERSIONS,
    FPS,
    SynthDatasetError,
    encode_mp4,
    load_metadata,
    phase_of_frames,
    render_dataset,
)

__all__ = [
    "PHASES", "SHAPES", "TEXTURES", "BACKGROUNDS", "COVER_SHAPES", "GENERATOR_VERSIONS", "DEFAULT_VERSION",
    "SPEED_PROFILES", "FORMAT_VERSIONS", "FPS", "CODEC", "CODEC_OPTIONS", "SPLIT_FRACTIONS", "PAIR_FRACTIONS",
    "ActionSpec", "ACTIONS", "ACTION_BY_NAME", "CATALOGUES", "Motions", "Appearance", "Look", "Motion",
    "ClipParams", "Track", "SynthDatasetError",
    "class_names", "get_action", "reverse_pairs", "default_split", "played_backwards",
    "draw_boundaries", "draw_appearance", "draw_motion", "draw_speed", "draw_clip_params", "mirror_params",
    "progress_profile", "render_clip", "encode_mp4", "render_dataset", "load_metadata", "phase_of_frames",
]
