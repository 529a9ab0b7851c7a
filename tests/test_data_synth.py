"""Tests for fsar.data.synth: the synthetic action set (catalogue, rendering, files, split)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from fsar.data import synth as S



def _pairs() -> list[tuple[str, str]]:
    return S.reverse_pairs()


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ----------------------------------------------------------------------------- catalogue


def test_catalogue_has_30_plus_named_actions_with_symmetric_reverse_links():
    names = S.class_names()
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    assert names == [a.name for a in S.ACTIONS]
    for spec in S.ACTIONS:
        assert spec.phases == ("onset", "progression", "completion")
        assert len(spec.stages) == 3 and all(isinstance(s, str) and s for s in spec.stages)
        if spec.reverse_of is not None:
            assert spec.reverse_of != spec.name
            assert S.get_action(spec.reverse_of).reverse_of == spec.name
    pairs = _pairs()
    assert len(pairs) >= 8
    required = {
        frozenset({"moving something from left to right", "moving something from right to left"}),
        frozenset({"something appearing", "something disappearing"}),
        frozenset({"pushing something towards the camera", "pulling something away from the camera"}),
        frozenset({"covering something", "uncovering something"}),
        frozenset({"splitting something into two", "merging two things into one"}),
        frozenset({"lifting something up", "something falling down"}),
    }
    assert required <= {frozenset(p) for p in pairs}
    with pytest.raises(ValueError, match="unknown synthetic action"):
        S.get_action("juggling something")


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("forward,reverse", S.reverse_pairs())
def test_reverse_action_renders_the_exact_frame_reversed_clip(forward, reverse):
    params = S.draw_clip_params(forward, seed=3, clip_index=17)
    mirrored = S.mirror_params(params)
    assert mirrored.action == reverse
    a, b = params.boundaries
    assert mirrored.boundaries == (params.frames - b, params.frames - a)
    frames, tracks = S.render_clip(params)
    frames_rev, tracks_rev = S.render_clip(mirrored)
    assert np.array_equal(frames_rev, frames[::-1])
    # The ground-truth centroid trajectory is the reversed one as well.
    x = np.broadcast_to(tracks[0].x, (params.frames,))
    x_rev = np.broadcast_to(tracks_rev[0].x, (params.frames,))
    np.testing.assert_allclose(x_rev, x[::-1], atol=1e-12)
    # ...and the motion is not trivially time-symmetric: the clip differs from its reverse.
    assert not np.array_equal(frames, frames[::-1])


def test_mirror_params_refuses_actions_without_reverse():
    with pytest.raises(ValueError, match="no reverse"):
        S.mirror_params(S.draw_clip_params("bouncing something", seed=0, clip_index=0))


@pytest.mark.parametrize("seed", [0, 1])
def test_every_action_is_still_in_onset_and_completion_and_moves_at_the_stage_changes(seed):
    """The recorded phase boundaries are exactly where the visible motion starts and stops."""
    for i, spec in enumerate(S.ACTIONS):
        params = S.draw_clip_params(spec.name, seed=seed, clip_index=100 + i)
        frames, _ = S.render_clip(params)
        a, b = params.boundaries
        T = params.frames
        assert frames.shape == (T, params.size, params.size, 3) and frames.dtype == np.uint8
        for t in range(1, a):
            assert np.array_equal(frames[t], frames[0]), (spec.name, "onset not still")
        for t in range(b + 1, T):
            assert np.array_equal(frames[t], frames[b]), (spec.name, "completion not still")
        assert not np.array_equal(frames[a], frames[a - 1]), (spec.name, "motion does not start at onset end")
        assert not np.array_equal(frames[b], frames[b - 1]), (spec.name, "motion does not end at completion start")
        motion = np.abs(np.diff(frames[a - 1 : b + 1].astype(np.int16), axis=0)).sum()
        assert motion > 2000, (spec.name, motion)


def test_direction_of_motion_matches_the_class_name():
    p = S.progress_profile(16, (4, 12))
    m = S.draw_motion(0, 5)
    lr = S.get_action("moving something from left to right").tracks(p, m, 0.1, 0.18)[0]
    rl = S.get_action("moving something from right to left").tracks(p, m, 0.1, 0.18)[0]
    assert np.all(np.diff(lr.x) >= 0) and lr.x[-1] - lr.x[0] > 0.3
    assert np.all(np.diff(rl.x) <= 0) and rl.x[0] - rl.x[-1] > 0.3
    fall = S.get_action("something falling down").tracks(p, m, 0.1, 0.18)[0]
    assert fall.y[-1] > fall.y[0]  # image y points down
    push = S.get_action("pushing something towards the camera").tracks(p, m, 0.1, 0.18)[0]
    assert push.sx[-1] > 1.5 and push.sx[0] == 1.0
    cw = S.get_action("rotating something clockwise").tracks(p, m, 0.1, 0.18)[0]
    assert cw.angle[-1] > cw.angle[0]  # positive angle = clockwise on screen (y down)


def test_appearance_is_drawn_independently_of_the_class():
    names = S.class_names()
    base = S.draw_clip_params(names[0], seed=7, clip_index=42)
    for name in names[1:]:
        other = S.draw_clip_params(name, seed=7, clip_index=42)
        assert other.appearance == base.appearance
        assert other.motion == base.motion
        assert other.boundaries == base.boundaries
    # Static-start actions at the same (seed, clip index) show the very same first frame.
    first = [
        S.render_clip(S.draw_clip_params(n, seed=7, clip_index=42))[0][0]
        for n in ("rotating something clockwise", "spinning something quickly", "wobbling something", "changing colour of something")
    ]
    for f in first[1:]:
        assert np.array_equal(f, first[0])
    # Appearance does vary across clips and covers the catalogue of looks.
    apps = [S.draw_appearance(0, i) for i in range(300)]
    assert {a.main.shape for a in apps} == set(S.SHAPES)
    assert {a.main.texture for a in apps} == set(S.TEXTURES)
    assert {a.background for a in apps} == set(S.BACKGROUNDS)
    assert len({a.main.colour for a in apps}) == 300
    assert S.draw_appearance(0, 1) != S.draw_appearance(1, 1)


def test_phase_boundaries_vary_and_respect_minimum_lengths():
    seen = Counter()
    for i in range(200):
        a, b = S.draw_boundaries(0, i, 16)
        assert 2 <= a and b - a >= 7 and 16 - b >= 2
        seen[(a, b)] += 1
    assert len(seen) >= 10
    for frames in (3, 8, 32):
        a, b = S.draw_boundaries(1, 0, frames)
        assert 0 < a < b < frames
    with pytest.raises(ValueError, match="at least 3 frames"):
        S.draw_boundaries(0, 0, 2)
    with pytest.raises(ValueError, match="invalid phase boundaries"):
        S.progress_profile(16, (0, 8))


def test_progress_profile_is_mirror_symmetric():
    p = S.progress_profile(16, (3, 11))
    q = S.progress_profile(16, (5, 13))
    np.testing.assert_allclose(q, 1.0 - p[::-1])
    assert p[:3].max() == 0.0 and p[11:].min() == 1.0 and np.all(np.diff(p[3:11]) > 0)


# ----------------------------------------------------------------------------- split


def test_default_split_is_20_6_10_and_keeps_reverse_pairs_together():
    train, val, test = S.default_split(S.class_names())
    assert (len(train), len(val), len(test)) == (20, 6, 10)
    assert set(train) | set(val) | set(test) == set(S.class_names())
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    part_of = {n: k for k, part in enumerate((train, val, test)) for n in part}
    for a, b in S.reverse_pairs():
        assert part_of[a] == part_of[b]
    assert len(S.reverse_pairs(test)) >= 2, "the test split must contain order-sensitive pairs"
    # Deterministic and independent of the order of the input names.
    assert S.default_split(list(reversed(S.class_names()))) == (train, val, test)
    assert S.default_split() == (train, val, test)


def test_default_split_on_a_subset_and_bad_names():
    names = S.class_names()[:12]
    train, val, test = S.default_split(names)
    assert sorted(train + val + test) == sorted(names)
    part_of = {n: k for k, part in enumerate((train, val, test)) for n in part}
    for a, b in S.reverse_pairs(names):
        assert part_of[a] == part_of[b]
    assert S.reverse_pairs(test)
    with pytest.raises(ValueError, match="unknown synthetic action"):
        S.default_split(["not an action"])
    with pytest.raises(ValueError, match="duplicate"):
        S.default_split([names[0], names[0]])


# ----------------------------------------------------------------------------- data set


def _render(tmp_path: Path, name: str = "ds", **kw) -> Path:
    kw.setdefault("classes", 4)
    kw.setdefault("videos_per_class", 2)
    return S.render_dataset(tmp_path / name, progress=False, **kw)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_dataset_layout_metadata_and_decodable_clips(tmp_path):
    root = _render(tmp_path)
    meta = json.loads((root / "synth.json").read_text())
    names = S.class_names()[:4]
    assert meta["format"] == "fsar-synth" and meta["seed"] == 0
    assert meta["classes"] == names and meta["params"]["classes"] == names
    assert meta["params"]["videos_per_class"] == 2 and meta["params"]["frames"] == 16 and meta["params"]["size"] == 112
    assert meta["phases"] == ["onset", "progression", "completion"]
    assert [tuple(p) for p in meta["reverse_pairs"]] == S.reverse_pairs(names)
    assert sorted(sum(meta["default_split"].values(), [])) == sorted(names)
    assert set(meta["descriptions"]) == set(names)
    assert sorted(p.name for p in root.iterdir()) == sorted(names + ["synth.json"])
    assert not list(root.rglob("*.tmp"))
    assert len(meta["clips"]) == 8
    for clip in meta["clips"]:
        path = root / clip["path"]
        assert path.parent.name == clip["class"] and path.suffix == ".mp4"
        assert clip["label"] == names.index(clip["class"])
        a, b = clip["boundaries"]
        assert 0 < a < b < clip["num_frames"] == 16
        assert clip["phases"] == {"onset": [0, a], "progression": [a, b], "completion": [b, 16]}
        assert len(clip["centroid"]) == len(clip["scale"]) == len(clip["angle"]) == len(clip["opacity"]) == 16
        decoded = _decode(path)
        assert decoded.shape == (16, 112, 112, 3)
        # The file holds the rendered clip (lossy, but close), re-derivable from the JSON.
        params = S.draw_clip_params(clip["class"], seed=0, clip_index=clip["clip_index"])
        assert list(params.boundaries) == clip["boundaries"]
        rendered, _ = S.render_clip(params)
        assert np.abs(decoded.astype(np.int16) - rendered).mean() < 6.0
        assert np.abs(np.diff(decoded.astype(np.int16), axis=0)).sum() > 0  # something moves
        xs = [c[0] for c in clip["centroid"]]
        if clip["class"] == "moving something from left to right":
            assert xs[-1] - xs[0] > 20
        if clip["class"] == "moving something from right to left":
            assert xs[0] - xs[-1] > 20


def test_render_dataset_is_deterministic_from_the_seed(tmp_path):
    a = _digests(_render(tmp_path, "a", seed=5))
    b = _digests(_render(tmp_path, "b", seed=5))
    c = _digests(_render(tmp_path, "c", seed=6))
    assert a == b
    mp4 = [k for k in a if k.endswith(".mp4")]
    assert all(a[k] != c[k] for k in mp4)


def test_render_dataset_rerun_is_noop_and_other_params_are_refused(tmp_path):
    root = _render(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert _render(tmp_path) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    with pytest.raises(S.SynthDatasetError, match="videos_per_class"):
        _render(tmp_path, videos_per_class=1)
    with pytest.raises(S.SynthDatasetError, match="seed"):
        _render(tmp_path, seed=1)
    # A missing clip makes the set incomplete: the same call renders it again.
    victim = next(root.rglob("*.mp4"))
    victim.unlink()
    _render(tmp_path)
    assert victim.is_file()
    # overwrite=True re-renders and removes clips the new set does not contain.
    _render(tmp_path, classes=3, videos_per_class=1, overwrite=True)
    meta = json.loads((root / "synth.json").read_text())
    assert meta["params"]["videos_per_class"] == 1
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4")) == sorted(c["path"] for c in meta["clips"])
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(S.class_names()[:3])


def test_render_dataset_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        _render(tmp_path, size=113)
    with pytest.raises(ValueError, match="classes must be in"):
        _render(tmp_path, classes=0)
    with pytest.raises(ValueError, match="unknown synthetic action"):
        _render(tmp_path, classes=["moving something from left to right", "dancing"])
    with pytest.raises(ValueError, match="videos_per_class"):
        _render(tmp_path, videos_per_class=0)
    with pytest.raises(ValueError, match="seed must be"):
        _render(tmp_path, seed=-1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(S.SynthDatasetError, match="not a synthetic data set"):
        S.render_dataset(foreign, classes=2, videos_per_class=1, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "synth.json").write_text("{not json")
    with pytest.raises(S.SynthDatasetError, match="unreadable synth.json"):
        S.render_dataset(broken, classes=2, videos_per_class=1, progress=False)


def test_render_dataset_accepts_class_names_and_other_sizes(tmp_path):
    names = ["covering something", "uncovering something"]
    root = S.render_dataset(tmp_path / "named", classes=names, videos_per_class=1, frames=8, size=64, progress=False)
    meta = json.loads((root / "synth.json").read_text())
    assert meta["classes"] == names
    for clip in meta["clips"]:
        assert _decode(root / clip["path"]).shape == (8, 64, 64, 3)
    # Clip identity is stable across class subsets: same (seed, class, video) -> same file bytes.
    full = _render(tmp_path, "full", classes=S.class_names()[:2], videos_per_class=1)
    again = _render(tmp_path, "subset", classes=[S.class_names()[1]], videos_per_class=1)
    name = S.class_names()[1]
    rel = next((full / name).glob("*.mp4")).relative_to(full)
    assert (full / rel).read_bytes() == (again / rel).read_bytes()


def test_encode_mp4_validates_and_leaves_no_temp_files(tmp_path):
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    frames[:, 8:16, 8:16] = 255
    out = S.encode_mp4(tmp_path / "x.mp4", frames)
    assert _decode(out).shape == (4, 32, 32, 3)
    with pytest.raises(ValueError, match="uint8"):
        S.encode_mp4(tmp_path / "y.mp4", frames.astype(np.float32))
    with pytest.raises(ValueError, match="even"):
        S.encode_mp4(tmp_path / "z.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def test_load_metadata_and_phase_of_frames(tmp_path):
    root = _render(tmp_path, classes=2, videos_per_class=1)
    meta = S.load_metadata(root)
    clip = meta["clips"][0]
    a, b = clip["boundaries"]
    phases = S.phase_of_frames(range(16), clip["boundaries"])
    assert phases == [0] * a + [1] * (b - a) + [2] * (16 - b)
    assert S.phase_of_frames([0, 15], (1, 2)) == [0, 2]
    with pytest.raises(ValueError, match="invalid phase boundaries"):
        S.phase_of_frames([0], (3, 3))
    with pytest.raises(S.SynthDatasetError, match="missing"):
        S.load_metadata(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "synth.json").write_text('{"format": "something else"}')
    with pytest.raises(S.SynthDatasetError, match="not an fsar-synth"):
        S.load_metadata(tmp_path / "other")


def test_covering_hides_the_object_completely_and_uncovering_reveals_it():
    import dataclasses

    for i in range(6):
        params = S.draw_clip_params("covering something", seed=4, clip_index=i)
        assert params.appearance.other.shape in S.COVER_SHAPES
        frames, _ = S.render_clip(params)
        main = params.appearance.main
        tiny = dataclasses.replace(params.appearance, main=dataclasses.replace(main, radius=1e-4))
        without_object, _ = S.render_clip(dataclasses.replace(params, appearance=tiny))
        assert np.array_equal(frames[-1], without_object[-1])  # hidden under the cover at the end
        assert not np.array_equal(frames[0], without_object[0])  # visible at the start


# ----------------------------------------------------------------------------- generator versions

#: Digests computed with the single-module generator of the first demo figures (before the
#: split into actions / params / render / writing): version 1 must keep rendering them.
_V1_FRAMES_SHA256 = "001d501edd639401b2b50892cfdca26d1f9ef1a617ddf0e76490983fe98d8f5a"
_V1_SYNTH_JSON_SHA256 = "00b7335140f914e6b4cfad9a5f78f4beefa1d164a0edc897d1b7ca803b32a46f"


def test_version_1_renders_the_frames_and_metadata_of_the_first_release(tmp_path):
    digest = hashlib.sha256()
    for i, name in enumerate(S.class_names()):
        params = S.draw_clip_params(name, seed=11, clip_index=7 * i + 3, frames=12, size=48, version=1)
        digest.update(S.render_clip(params)[0].tobytes())
    assert digest.hexdigest() == _V1_FRAMES_SHA256
    root = S.render_dataset(tmp_path / "s", classes=6, videos_per_class=1, frames=6, size=32, seed=2,
                            progress=False, version=1)
    assert hashlib.sha256((root / "synth.json").read_bytes()).hexdigest() == _V1_SYNTH_JSON_SHA256


@pytest.mark.parametrize("forward,reverse", S.reverse_pairs())
def test_version_2_reverse_action_is_the_frame_reversed_clip_with_the_mirrored_speed(forward, reverse):
    for clip_index in range(3):  # covers the three speed profiles among the pairs
        params = S.draw_clip_params(forward, seed=3, clip_index=clip_index + 40 * len(forward), version=2)
        mirrored = S.mirror_params(params)
        assert mirrored.version == 2
        assert mirrored.speed == {"constant": "constant", "accelerating": "decelerating",
                                  "decelerating": "accelerating"}[params.speed]
        frames, _ = S.render_clip(params)
        assert np.array_equal(S.render_clip(mirrored)[0], frames[::-1])


def test_version_2_stages_are_sharp_in_the_pixels_for_every_action_and_speed():
    speeds = Counter()
    for i, spec in enumerate(S.ACTIONS):
        for seed in (0, 1):
            params = S.draw_clip_params(spec.name, seed=seed, clip_index=100 + i, version=2)
            speeds[params.speed] += 1
            frames, _ = S.render_clip(params)
            a, b = params.boundaries
            assert all(np.array_equal(frames[t], frames[0]) for t in range(1, a)), spec.name
            assert all(np.array_equal(frames[t], frames[b]) for t in range(b + 1, params.frames)), spec.name
            assert not np.array_equal(frames[a], frames[a - 1]), (spec.name, params.speed)
            assert not np.array_equal(frames[b], frames[b - 1]), (spec.name, params.speed)
    assert set(speeds) == set(S.SPEED_PROFILES)


def test_speed_profiles_rise_as_named_and_mirror_each_other():
    constant = S.progress_profile(16, (4, 12), "constant")
    faster = S.progress_profile(16, (4, 12), "accelerating")
    slower = S.progress_profile(16, (4, 12), "decelerating")
    for p in (constant, faster, slower):
        assert np.all(p[:4] == 0) and np.all(p[12:] == 1) and np.all(np.diff(p[4:12]) > 0)
    steps_up, steps_down = np.diff(faster[3:13]), np.diff(slower[3:13])
    assert np.all(np.diff(steps_up[1:-1]) > 0) and np.all(np.diff(steps_down[1:-1]) < 0)
    assert steps_up[-2] > 2.5 * steps_up[1]  # the speed grows several-fold over the phase
    np.testing.assert_array_equal(slower, 1.0 - faster[::-1])
    with pytest.raises(ValueError, match="speed profile"):
        S.progress_profile(16, (4, 12), "jerky")


def test_version_2_objects_and_motions_cover_a_large_part_of_the_frame():
    v1 = [S.draw_appearance(0, i, version=1).main.radius for i in range(200)]
    v2 = [S.draw_appearance(0, i, version=2).main.radius for i in range(200)]
    assert max(v1) <= 0.15 and min(v2) >= 0.17
    for i in range(20):
        params = S.draw_clip_params("moving something from left to right", seed=0, clip_index=i, version=2)
        _, tracks = S.render_clip(params)
        assert tracks[0].x[-1] - tracks[0].x[0] >= 0.5 - 1e-9
        # appearance and motion draws do not depend on the action in version 2 either
        other = S.draw_clip_params("covering something", seed=0, clip_index=i, version=2)
        assert (other.appearance, other.motion, other.boundaries, other.speed) == (
            params.appearance, params.motion, params.boundaries, params.speed)


def test_version_2_metadata_records_the_stage_ground_truth(tmp_path):
    root = _render(tmp_path, version=2, classes=3, frames=12, size=48)
    meta = S.load_metadata(root)
    assert meta["format_version"] == 2 and meta["generator_version"] == 2
    for clip in meta["clips"]:
        a, b = clip["boundaries"]
        assert clip["speed"] in S.SPEED_PROFILES
        progress = np.array(clip["progress"])
        assert progress.shape == (12,) and np.all(progress[:a] == 0) and np.all(progress[b:] == 1)
        assert np.all((progress[a:b] > 0) & (progress[a:b] < 1))
    # the same folder cannot silently switch version
    with pytest.raises(S.SynthDatasetError, match="format_version"):
        _render(tmp_path, version=1, classes=3, frames=12, size=48)
    with pytest.raises(ValueError, match="generator version"):
        _render(tmp_path, "other", version=3)
