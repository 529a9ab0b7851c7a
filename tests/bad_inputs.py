"""The bad-input corpus: every kind of hostile or unusual input a user can hand ``fsar``.

Each :class:`Case` builds its input in a fresh folder and returns the ``fsar`` command line
that feeds it in, together with what must happen:

* ``"error"``: exit status 2 and one line ``fsar <cmd>: error: ...`` (or argparse's
  ``fsar <cmd>: error: argument ...``) matching ``message``; never a traceback;
* ``"skip"``: exit status 0 and the bad clip left out *and counted* (``check`` asserts the
  count and the reason in the output or the JSON written);
* ``"ok"``: exit status 0 and a correct result (``check`` asserts it, e.g. the real pixel
  values of a 16-bit frame, the classes of a split file with a byte-order mark).

``tests/test_bad_input_corpus.py`` runs every case in-process (fast, in CI);
``benchmarks/bad_input.py`` runs them through the ``fsar`` command in subprocesses, each
bounded in time, and counts the outcomes (clear errors, counted skips, correct results,
crashes, silent wrong results, misleading messages, hangs) for ``docs/bad_input.md``.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: A CLIP ViT of a few thousand parameters (random weights): the real architecture, test-sized.
TINY_CLIP = (
    "encoder_options={image_size: 32, patch_size: 16, width: 32, vision_layers: 1, heads: 2, "
    "text_width: 32, text_layers: 1, text_heads: 2, projection_dim: 16, vocab_size: 64}"
)
FROZEN = ["--backbone", "clip-vit-b32", "--weights", "random", "-O", TINY_CLIP, "-O", "finetune=frozen"]
SMALL = ["--way", "2", "--shot", "1", "--queries", "1", "--no-progress"]


# ----------------------------------------------------------------------------------------------
# what a run gives back, and what a case expects of it


@dataclass
class Outcome:
    code: int | None  # None: the command raised (a crash) or did not finish (a hang)
    out: str
    err: str
    crashed: bool = False  # a Python traceback reached the user
    hung: bool = False


@dataclass
class Case:
    id: str
    kind: str  # the heading: what sort of input this is
    build: Callable[[Path, "Shared"], list[str]]  # -> the fsar argv
    expect: str  # "error" | "skip" | "ok"
    message: str | None = None  # regex the error line (or the skip report) must match
    check: Callable[[Path, Outcome], None] | None = None  # extra assertions for "ok"/"skip"
    #: Exit status of an "error" case: 2 for bad input; 1 where a check command reports what it
    #: found (``fsar data check``: NOT OK), its last stderr line then carries the message.
    code: int = 2


def judge(case: Case, work: Path, outcome: Outcome) -> tuple[str, str]:
    """(verdict, detail): verdict in clear_error, counted_skip, correct, crash, hang,
    silent_wrong (exit 0 where an error was due, or a wrong result), misleading (an error
    whose message does not say what is wrong, or an error where a result was due)."""
    if outcome.hung:
        return "hang", "did not finish in time"
    if outcome.crashed or "Traceback (most recent call last)" in outcome.err:
        return "crash", _last_line(outcome.err)
    if case.expect == "error":
        if outcome.code == 0:
            return "silent_wrong", "exit 0 where an error was due"
        line = _error_line(outcome.err) if case.code == 2 else (_last_line(outcome.err) or None)
        if outcome.code != case.code or line is None:
            return "misleading", f"exit {outcome.code}, no one-line error: {_last_line(outcome.err)!r}"
        if case.message and not re.search(case.message, line):
            return "misleading", f"message {line!r} does not match {case.message!r}"
        return "clear_error", line
    if outcome.code != 0:
        return "misleading", f"exit {outcome.code} where a result was due: {_last_line(outcome.err)!r}"
    try:
        if case.message and not re.search(case.message, outcome.out + outcome.err):
            raise AssertionError(f"output does not match {case.message!r}")
        if case.check is not None:
            case.check(work, outcome)
    except AssertionError as error:
        return "silent_wrong", f"exit 0 but wrong: {error}"
    return ("counted_skip" if case.expect == "skip" else "correct"), ""


def _error_line(err: str) -> str | None:
    lines = [line for line in err.splitlines() if re.match(r"^fsar( \S+)?: error: ", line)]
    return lines[-1] if lines else None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_in_process(argv: list[str]) -> Outcome:
    """``fsar.cli.main(argv)`` with stdout/stderr captured; an escaping exception is a crash."""
    import logging
    import traceback

    from fsar.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse errors
                code = exit_.code if isinstance(exit_.code, int) else 2
            except Exception:  # noqa: BLE001 - the point is to catch every crash
                traceback.print_exc()
                return Outcome(None, out.getvalue(), err.getvalue(), crashed=True)
    finally:
        logging.getLogger().removeHandler(handler)
    return Outcome(code, out.getvalue(), err.getvalue())


# ----------------------------------------------------------------------------------------------
# tiny inputs


def write_png(path: Path, values: np.ndarray, *, bit_depth: int, color_type: int) -> Path:
    """A PNG written byte by byte (Pillow cannot write 16-bit RGB): ``values`` (H, W[, C])."""
    values = np.asarray(values)
    height, width = values.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\0" + values[y].astype(dtype).tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def write_frames(folder: Path, frames: int = 3, *, size: int = 16, seed: int = 0, shift: int = 0) -> Path:
    """An 8-bit RGB PNG frame folder of a moving bar on noise (each clip different)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(frames):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        x = (k * 2 + shift) % size
        image[:, x : x + 2] = (200, 80 + 40 * (seed % 4), 30)
        Image.fromarray(image).save(folder / f"{k + 1}.png")
    return folder


def write_dataset(root: Path, classes: list[str], clips: int = 2, *, frames: int = 3, size: int = 16) -> Path:
    """``root/<class>/clip<j>/`` frame folders."""
    for c, name in enumerate(classes):
        for j in range(clips):
            write_frames(root / name / f"clip{j}", frames, size=size, seed=10 * c + j, shift=c * 5)
    return root


def write_video_clip(path: Path, frames: int = 4, *, size: int = 16) -> Path:
    from fsar.data.testing import write_video

    return write_video(path, frames, height=size, width=size, gop=2)


class Shared:
    """Inputs several cases reuse, built once under ``base`` on first use."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self._data: Path | None = None
        self._run: Path | None = None

    @property
    def data(self) -> Path:
        """Three classes x two frame-folder clips (never modified by a case)."""
        if self._data is None:
            self._data = write_dataset(self.base / "data", ["apple", "banana", "cherry"])
        return self._data

    @property
    def run(self) -> Path:
        """A trained tiny run directory (never modified by a case; copy it to edit it)."""
        if self._run is None:
            from fsar.cli import main

            out = self.base / "run"
            code = main(["train", "--data", str(self.data), "--method", "ma-fsar", *FROZEN, *SMALL, "--episodes", "2",
                         "--tasks-per-step", "1", "--val-every", "0", "--checkpoint-every", "1", "--out", str(out)])
            if code != 0:
                raise RuntimeError(f"could not train the shared run (exit {code})")
            self._run = out
        return self._run


def copy_run(shared: Shared, work: Path) -> Path:
    import shutil

    target = work / "run"
    shutil.copytree(shared.run, target, ignore=shutil.ignore_patterns("features"))
    return target


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


CASES: list[Case] = []


def case(id: str, kind: str, expect: str, message: str | None = None, check=None, code: int = 2):
    def register(build):
        CASES.append(Case(id, kind, build, expect, message, check, code))
        return build

    return register


def _eval(data: Path, work: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--method", "proto", *FROZEN, *SMALL, "--episodes", "3",
            "--json", str(work / "result.json"), *extra]


def _train(data: Path, work: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--method", "ma-fsar", *FROZEN, *SMALL, "--episodes", "1",
            "--tasks-per-step", "1", "--val-every", "0", "--out", str(work / "run"), *extra]


# ----------------------------------------------------------------------------------------------
# numbers checked where they enter (CLI flags, YAML, -O)

for _flag, _value, _message in [
    ("--lr", "nan", r"--lr must be a finite number > 0, got nan"),
    ("--lr", "inf", r"--lr must be a finite number > 0, got inf"),
    ("--lr", "-1e-3", r"--lr must be a finite number > 0, got -0\.001"),
    ("--lr", "0", r"--lr must be a finite number > 0"),
    ("--weight-decay", "-1", r"--weight-decay must be a finite number >= 0"),
    ("--lr-gamma", "-1", r"--lr-gamma must be a number in \(0, 1\]"),
    ("--lr-gamma", "2", r"--lr-gamma must be a number in \(0, 1\]"),
    ("--image-size", "0", r"--image-size:? must be an integer >= 1"),
    ("--color-jitter", "-0.5", r"--color-jitter must be a finite number >= 0"),
    ("--frames", "0", r"--frames:? must be an integer >= 1"),
    ("--frames", "-2", r"--frames:? must be an integer >= 1"),
    ("--tasks-per-step", "0", r"--tasks-per-step must be an integer >= 1"),
    ("--episodes", "-1", r"--episodes must be an integer >= 0 \(0: no training step"),
    ("--seed", "-3", r"--seed must be an integer in 0\.\.2\*\*63-1"),
    ("--way", "1", r"--way must be an integer >= 2"),
    ("--val-way", "1", r"--val-way must be an integer >= 2"),
    ("--lr", "abc", r"argument --lr: invalid float value"),
]:
    case(f"train {_flag} {_value}", "number out of range", "error", _message)(
        lambda work, shared, flag=_flag, value=_value: _train(shared.data, work, flag, value)
    )

for _flag, _value, _message in [
    ("--frames", "0", r"--frames:? must be an integer >= 1"),
    ("--episodes", "0", r"--episodes must be an integer >= 1"),
    ("--shot", "0", r"--shot must be an integer >= 1"),
    ("--device", "gpu", r"--device / `device:` must be auto, cpu, cuda"),
]:
    case(f"eval {_flag} {_value}", "number out of range", "error", _message)(
        lambda work, shared, flag=_flag, value=_value: _eval(shared.data, work, flag, value)
    )


def _yaml(work: Path, text: str) -> Path:
    path = work / "run.yaml"
    path.write_text(text)
    return path


for _name, _text, _message in [
    ("color_jitter -1", "color_jitter: -1\n", r"run\.yaml: color_jitter must be a finite number >= 0, got -1"),
    ("lr_gamma -1", "lr_gamma: -1\n", r"run\.yaml: lr_gamma must be a number in \(0, 1\]"),
    ("lr .nan", "lr: .nan\n", r"run\.yaml: lr must be a finite number > 0"),
    ("weight_decay -1e-4", "weight_decay: -1e-4\n", r"run\.yaml: weight_decay must be a finite number >= 0"),
    ("unknown key", "wya: 3\n", r"run\.yaml: unknown key 'wya'"),
    ("not a mapping", "- 1\n- 2\n", r"run\.yaml: a config file must hold a mapping"),
    ("invalid YAML", "lr: [1, 2\n", r"run\.yaml: not valid YAML"),
    ("way a string", "way: five\n", r"run\.yaml: way: expected an integer"),
]:
    case(f"train YAML {_name}", "number out of range", "error", _message)(
        lambda work, shared, text=_text: _train(shared.data, work, "--config", str(_yaml(work, text)))
    )

case("train YAML lr: 1e-4 (YAML 1.1 reads a string)", "number out of range", "ok",
     check=lambda work, outcome: _assert(read_json(work / "run" / "config.json")["lr"] == 1e-4, "lr not 1e-4"))(
    lambda work, shared: _train(shared.data, work, "--config", str(_yaml(work, "lr: 1e-4\n")))
)

for _flag, _value in [("--top", "0"), ("--top", "-1"), ("--frames", "0"), ("--frames", "-2")]:
    case(f"predict {_flag} {_value}", "number out of range", "error", rf"argument {_flag}: must be an integer >= 1")(
        lambda work, shared, flag=_flag, value=_value: [
            "predict", "--data", str(shared.data), "--query", str(shared.data / "apple" / "clip0"), flag, value]
    )

case("describe --llm-timeout -1", "number out of range", "error", r"--llm-timeout:? must be a finite number > 0")(
    lambda work, shared: ["describe", str(_lines(work / "classes.txt", ["a"])), "--out", str(work / "d.json"),
                          "--llm-timeout", "-1"]
)
case("describe --llm-retries -1", "number out of range", "error", r"--llm-retries:? must be an integer >= 0")(
    lambda work, shared: ["describe", str(_lines(work / "classes.txt", ["a"])), "--out", str(work / "d.json"),
                          "--llm-retries", "-1"]
)
case("data check --frames 0", "number out of range", "error", r"--frames:? must be (an integer )?>= 1")(
    lambda work, shared: ["data", "check", "--data", str(shared.data), "--frames", "0", "--no-progress"]
)


# ----------------------------------------------------------------------------------------------
# fsar benchmark: its own NAME=ROOT data and LABEL=RUN_DIR methods, checked before any episode


def _benchmark(shared: Shared, work: Path, *, methods: list[str], data: str | None = None, extra=()) -> list[str]:
    return ["benchmark", "--methods", *methods, "--data", data or f"tiny={shared.data}", *FROZEN,
            "--way", "3", "--shots", "1", "--episodes", "3", "--bootstrap", "10", "--out", str(work / "bench"),
            "--no-progress", *extra]


for _name, _methods, _data, _extra, _message in [
    ("unknown method", ["protoo"], None, (), r"unknown method 'protoo'; available: .*proto"),
    ("missing run directory", ["mine=runs/nowhere"], None, (), r"method 'mine': runs/nowhere: no such checkpoint"),
    ("mistyped split name", ["proto"], "ssv2-smal={data}", (), r"'ssv2-smal' is not a shipped split; did you mean 'ssv2-small'"),
    ("data without a name", ["proto"], "{data}", (), r"expected NAME=ROOT"),
    ("--shots 0", ["proto"], None, ("--shots", "0"), r"shots:? must be (an integer )?>= 1"),
    ("repeated method", ["proto", "proto"], None, (), r"method labels repeat"),
]:
    case(f"benchmark {_name}", "benchmark plans", "error", _message)(
        lambda work, shared, methods=_methods, data=_data, extra=_extra: _benchmark(
            shared, work, methods=methods, data=data.format(data=shared.data) if data else None, extra=extra)
    )


def _check_benchmark(work: Path, outcome: Outcome) -> None:
    table = read_json(work / "bench" / "benchmark.json")
    cells = table["cells"]
    _assert(sorted(c["method"] for c in cells) == ["otam", "proto"], f"cells {cells}")
    _assert(all(c["episodes"] == 3 for c in cells), "every cell holds the 3 episodes asked for")
    _assert((work / "bench" / "benchmark.png").stat().st_size > 1000, "no PNG")


case("benchmark two methods on a plain folder", "benchmark plans", "ok", check=_check_benchmark)(
    lambda work, shared: _benchmark(shared, work, methods=["proto", "otam"])
)


def _lines(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False, encoding: str = "utf-8") -> Path:
    text = newline.join(lines) + newline
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode(encoding) + text.encode(encoding))
    return path


def _assert(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ----------------------------------------------------------------------------------------------
# frames of every bit depth and channel layout


def _gray16_values() -> np.ndarray:
    return (np.arange(16 * 16).reshape(16, 16) * 250).astype(np.uint16)  # 0 .. 63750


def _layout_clip(work: Path, layout: str) -> Path:
    """A two-frame folder in ``layout``; returns the folder."""
    from PIL import Image

    folder = work / "data" / "layout" / f"clip_{layout}"
    other = work / "data" / "other"
    write_frames(other / "clip0", 2)
    write_frames(other / "clip1", 2, seed=1)
    write_frames(work / "data" / "layout" / "plain", 2, seed=2)
    gray16 = _gray16_values()
    rgb8 = np.stack([np.arange(256).reshape(16, 16), np.full((16, 16), 7), np.full((16, 16), 200)], -1).astype(np.uint8)
    for k in range(2):
        path = folder / f"{k + 1}.png"
        if layout == "gray16":
            write_png(path, gray16, bit_depth=16, color_type=0)
        elif layout == "rgb16":
            write_png(path, np.stack([gray16, gray16 // 2, 65535 - gray16], -1), bit_depth=16, color_type=2)
        elif layout == "gray-alpha16":
            write_png(path, np.stack([gray16, np.full_like(gray16, 65535)], -1), bit_depth=16, color_type=4)
        elif layout == "rgba16":
            write_png(path, np.stack([gray16, gray16, gray16, np.full_like(gray16, 30000)], -1), bit_depth=16, color_type=6)
        elif layout == "gray8":
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb8[..., 0], "L").save(path)
        elif layout == "rgba8":
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([rgb8, np.full((16, 16, 1), 128, np.uint8)], -1), "RGBA").save(path)
        elif layout == "palette":
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb8).quantize(colors=16).save(path)
        elif layout == "1-bit":
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb8[..., 0] > 127).save(path)
        elif layout == "jpeg-gray":
            path = path.with_suffix(".jpg")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb8[..., 0], "L").save(path, quality=100)
        else:  # pragma: no cover
            raise ValueError(layout)
    return folder


def _expected_layout(layout: str) -> np.ndarray:
    """(H, W, 3) uint8 the layout's frames must read as."""
    from PIL import Image

    gray16 = _gray16_values().astype(np.int64)
    to8 = lambda v: ((v * 255 + 32767) // 65535).astype(np.uint8)  # noqa: E731
    rgb8 = np.stack([np.arange(256).reshape(16, 16), np.full((16, 16), 7), np.full((16, 16), 200)], -1).astype(np.uint8)
    if layout in ("gray16", "gray-alpha16", "rgba16"):
        return np.repeat(to8(gray16)[..., None], 3, -1)
    if layout == "rgb16":
        return np.stack([to8(gray16), to8(gray16 // 2), to8(65535 - gray16)], -1)
    if layout == "gray8":
        return np.repeat(rgb8[..., :1], 3, -1)
    if layout == "rgba8":
        return rgb8
    if layout == "palette":
        return np.asarray(Image.fromarray(rgb8).quantize(colors=16).convert("RGB"))
    if layout == "1-bit":
        return np.repeat(np.where(rgb8[..., :1] > 127, 255, 0).astype(np.uint8), 3, -1)
    if layout == "jpeg-gray":
        return np.repeat(rgb8[..., :1], 3, -1)
    raise ValueError(layout)  # pragma: no cover


def _check_layout(layout: str):
    def check(work: Path, outcome: Outcome) -> None:
        from fsar.data.video import open_video

        frames = open_video(work / "data" / "layout" / f"clip_{layout}").read([0, 1])
        got = frames[0].permute(1, 2, 0).numpy().astype(np.int64)
        want = _expected_layout(layout).astype(np.int64)
        # 16-bit PNG colour: Pillow keeps the high byte (v >> 8), at most 1 below the rounded value.
        tolerance = 1 if layout in ("rgb16", "gray-alpha16", "rgba16") else (2 if layout == "jpeg-gray" else 0)
        error = int(np.abs(got - want).max())
        _assert(error <= tolerance, f"{layout}: pixel values off by up to {error} (clipped or misread)")
        report = read_json(work / "check.json")
        _assert(report["videos"] == 4 and not report["skipped"], f"{layout}: the check skipped {report['skipped']}")

    return check


for _layout in ("gray16", "rgb16", "gray-alpha16", "rgba16", "gray8", "rgba8", "palette", "1-bit", "jpeg-gray"):
    case(f"frames {_layout}", "frame bit depth and layout", "ok", check=_check_layout(_layout))(
        lambda work, shared, layout=_layout: [
            "data", "check", "--data", str(_layout_clip(work, layout).parent.parent), "--way", "2", "--no-progress",
            "--no-duplicates", "--json", str(work / "check.json")]
    )


def _corrupt_middle_frame(work: Path, name: str) -> Path:
    root = write_dataset(work / "data", ["a", "b"], clips=3, frames=9)
    (root / "a" / "clip0" / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def _one_skip(work: Path, outcome: Outcome) -> None:
    _assert(len(read_json(work / "check.json")["skipped"]) == 1, "the bad clip is not counted once")


# 9 frames at T=8: evaluation reads indices 0 1 2 3 5 6 7 8, so frame 4.png (index 3) is read
# by evaluation and must be caught by a plain check; 5.png (index 4) only by --deep, and a plain
# check says which frames it decoded.
case("corrupt middle frame evaluation reads (data check)", "frame bit depth and layout", "skip",
     r"clip0: frame 4\.png: cannot decode frame image", check=_one_skip)(
    lambda work, shared: ["data", "check", "--data", str(_corrupt_middle_frame(work, "4.png")), "--way", "2", "--no-progress",
                          "--json", str(work / "check.json")]
)
case("corrupt middle frame evaluation skips (data check --deep)", "frame bit depth and layout", "skip",
     r"clip0: frame 5\.png: cannot decode frame image", check=_one_skip)(
    lambda work, shared: ["data", "check", "--data", str(_corrupt_middle_frame(work, "5.png")), "--way", "2", "--no-progress",
                          "--deep", "--json", str(work / "check.json")]
)
case("corrupt unsampled frame: plain check says what it decoded", "frame bit depth and layout", "ok",
     r"frames decoded per video: first, last and the 8 frames evaluation samples")(
    lambda work, shared: ["data", "check", "--data", str(_corrupt_middle_frame(work, "5.png")), "--way", "2", "--no-progress"]
)


def _invalid_png_folder(work: Path) -> Path:
    root = write_dataset(work / "data", ["a", "b"], clips=3)
    # A PNG header no decoder accepts (16-bit palette does not exist): refused with the file named.
    write_png(root / "a" / "clip0" / "2.png", np.zeros((16, 16), np.uint16), bit_depth=16, color_type=3)
    return root


case("invalid PNG (16-bit palette)", "frame bit depth and layout", "skip", r"clip0: frame 2\.png: cannot decode frame image",
     check=lambda work, outcome: _assert(len(read_json(work / "check.json")["skipped"]) == 1, "not skipped"))(
    lambda work, shared: ["data", "check", "--data", str(_invalid_png_folder(work)), "--way", "2", "--no-progress",
                          "--json", str(work / "check.json")]
)


# ----------------------------------------------------------------------------------------------
# clip containers and shapes that already work: they must keep working


def _containers(work: Path) -> Path:
    root = work / "data"
    for suffix in (".webm", ".avi", ".mkv", ".mp4"):
        write_video_clip(root / "videos" / f"clip{suffix}", 4)
    write_dataset(root, ["frames"], clips=4)
    return root


case("webm/avi/mkv/mp4 clips", "formats that work", "ok",
     check=lambda work, outcome: _assert(read_json(work / "result.json")["skipped_clips"] == 0, "clips skipped"))(
    lambda work, shared: _eval(_containers(work), work)
)


def _tiny_clips(work: Path) -> Path:
    root = work / "data"
    write_video_clip(root / "one" / "single.mp4", 1)
    write_frames(root / "one" / "single_frame", 1)
    write_frames(root / "pixel" / "a", 2, size=1)
    write_frames(root / "pixel" / "b", 3, size=1)
    return root


case("1-frame and 1x1 clips", "formats that work", "ok",
     check=lambda work, outcome: _assert(read_json(work / "result.json")["skipped_clips"] == 0, "clips skipped"))(
    lambda work, shared: _eval(_tiny_clips(work), work)
)

ODD_NAMES = ["with space", "[brackets] (and parens)", "ünïcødé 名前", "emoji 🎬🙂", "-leading-dash", "quote'\"s"]


def _odd_names(work: Path) -> Path:
    root = work / "-odd root [x] ✓"
    for c, name in enumerate(ODD_NAMES):
        for j, clip in enumerate([f"{name} clip", "-1 🎞"]):
            write_frames(root / name / clip, 2, seed=c * 3 + j, shift=c * 3)
    return root


case("odd names: spaces, brackets, unicode, emoji, leading dash", "formats that work", "ok",
     check=lambda work, outcome: _assert(
         read_json(work / "result.json")["skipped_clips"] == 0
         and sorted(read_json(work / "result.json")["class_names"]) == sorted(ODD_NAMES), "names lost"))(
    lambda work, shared: _eval(_odd_names(work), work, "--way", "3")
)
case("odd names in predict (class and query)", "formats that work", "ok",
     check=lambda work, outcome: _assert(
         {item["class"] for item in json.loads(outcome.out)["predictions"][0]["ranking"]} == set(ODD_NAMES),
         "classes lost"))(
    lambda work, shared: ["predict", "--data", str(_odd_names(work)), "--checkpoint", str(shared.run), "--json",
                          "--query", str(work / "-odd root [x] ✓" / ODD_NAMES[3] / "-1 🎞")]
)


# ----------------------------------------------------------------------------------------------
# split files as users write them


def _split_root(work: Path, *, newline="\n", bom=False, blank=False, encoding="utf-8") -> tuple[Path, Path]:
    root = write_dataset(work / "data", ["bouncing something", "Closing something"], clips=2)
    lines = ["bouncing something/clip0", "bouncing something/clip1", "Closing [something]/clip0",
             "Closing [something]/clip1"]
    if blank:
        lines = ["", *lines[:2], "   ", "", *lines[2:], "", ""]
    return root, _lines(work / "test.txt", lines, newline=newline, bom=bom, encoding=encoding)


def _check_split(work: Path, outcome: Outcome) -> None:
    report = read_json(work / "check.json")
    names = [c["name"] for c in report["classes"]]
    _assert(names == ["bouncing something", "Closing [something]"], f"classes read as {names}")
    _assert(report["videos"] == 4 and not report["skipped"], f"entries lost: {report['skipped']}")


for _name, _options in [
    ("BOM", dict(bom=True)),
    ("CRLF", dict(newline="\r\n")),
    ("blank lines", dict(blank=True)),
    ("BOM + CRLF + blank lines", dict(bom=True, newline="\r\n", blank=True)),
    ("CR only (old Mac)", dict(newline="\r")),
]:
    case(f"split file with {_name}", "split files", "ok", check=_check_split)(
        lambda work, shared, options=_options: (
            lambda root_split: ["data", "check", "--data", str(root_split[0]), "--split-file", str(root_split[1]), "--way", "2",
                                "--no-progress", "--no-duplicates", "--json", str(work / "check.json")]
        )(_split_root(work, **options))
    )

case("split file in UTF-16", "split files", "error", r"test\.txt: split file is not UTF-8 text")(
    lambda work, shared: (lambda rs: ["data", "check", "--data", str(rs[0]), "--split-file", str(rs[1]), "--no-progress"])(
        _split_root(work, bom=True, encoding="utf-16-le"))
)
case("split file that is missing", "split files", "error", r"nope\.txt: cannot read split file \(no such file")(
    lambda work, shared: ["data", "check", "--data", str(shared.data), "--split-file", str(work / "nope.txt"), "--no-progress"]
)
case("split file with a line without '/'", "split files", "error", r"bad\.txt:2: expected 'label/video_id'")(
    lambda work, shared: ["data", "check", "--data", str(shared.data), "--split-file",
                          str(_lines(work / "bad.txt", ["apple/clip0", "justaname"])), "--no-progress"]
)
case("split file of blank lines only", "split files", "error", r"empty\.txt: split file has no entries")(
    lambda work, shared: ["data", "check", "--data", str(shared.data), "--split-file",
                          str(_lines(work / "empty.txt", ["", "  ", ""], newline="\r\n", bom=True)), "--no-progress"]
)


# ----------------------------------------------------------------------------------------------
# broken files and links in a data root: left out, counted, named


def _root_with(work: Path, breakage: str) -> Path:
    root = write_dataset(work / "data", ["a", "b"], clips=2)
    target = root / "a"  # 2 good clips stay: the check passes, the bad one is counted
    if breakage == "symlink loop":
        (target / "loop.mp4").symlink_to(target / "loop.mp4")
    elif breakage == "symlink cycle of two":
        (target / "x.mp4").symlink_to(target / "y.mp4")
        (target / "y.mp4").symlink_to(target / "x.mp4")
    elif breakage == "dangling symlink":
        (target / "gone.mp4").symlink_to(work / "deleted.mp4")
    elif breakage == "truncated mp4":
        video = write_video_clip(work / "full.mp4", 6)
        (target / "cut.mp4").write_bytes(video.read_bytes()[:300])
    elif breakage == "text file named .mp4":
        (target / "notes.mp4").write_text("not a video")
    elif breakage == "empty frame folder":
        (target / "empty").mkdir()
    elif breakage == "folder of non-images":
        (target / "docs").mkdir()
        (target / "docs" / "readme.txt").write_text("x")
    elif breakage == "zero-byte file":
        (target / "zero.webm").write_bytes(b"")
    else:  # pragma: no cover
        raise ValueError(breakage)
    return root


for _breakage, _reason in [
    ("symlink loop", r"symbolic link loop"),
    ("symlink cycle of two", r"symbolic link loop"),
    ("dangling symlink", r"dangling symbolic link \(points to '.*deleted\.mp4'"),
    ("truncated mp4", r"cut\.mp4: (cannot open video|video stream has no frames|no frame could be decoded|only \d+ of)"),
    ("text file named .mp4", r"notes\.mp4: cannot open video"),
    ("empty frame folder", r"empty: frame folder has no"),
    ("folder of non-images", r"docs: frame folder has 1 non-image file"),
    ("zero-byte file", r"zero\.webm: cannot open video"),
]:
    case(f"data check: {_breakage}", "broken clips and links", "skip", _reason,
         check=lambda work, outcome: _assert(len(read_json(work / "check.json")["skipped"]) >= 1, "not counted"))(
        lambda work, shared, breakage=_breakage: [
            "data", "check", "--data", str(_root_with(work, breakage)), "--way", "2", "--no-progress", "--no-duplicates",
            "--json", str(work / "check.json")]
    )

case("data root is a symlink loop", "broken clips and links", "error", r"data root is not a directory \(symbolic link loop")(
    lambda work, shared: (lambda link: (link.symlink_to(link), ["data", "check", "--data", str(link), "--no-progress"])[1])(
        work / "loop")
)
case("data root missing", "broken clips and links", "error", r"nowhere: data root is not a directory \(no such file")(
    lambda work, shared: ["eval", "--data", str(work / "nowhere"), "--method", "proto", *FROZEN, *SMALL]
)
case("data root is a file", "broken clips and links", "error", r"file\.txt: data root is not a directory \(a file")(
    lambda work, shared: (lambda f: (f.write_text("x"), ["data", "check", "--data", str(f)])[1])(work / "file.txt")
)
case("too few clips for the episode", "broken clips and links", "error", r"way|classes")(
    lambda work, shared: _eval(shared.data, work, "--way", "5")
)


# ----------------------------------------------------------------------------------------------
# methods that cannot be built as asked: one line from train and eval alike


for _extra, _message in [
    (["-O", "nonexistent_option=1"], r"unknown option.*nonexistent_option"),
    (["-O", "alpha=notanumber"], r"alpha.*(number|float).*'notanumber'|'notanumber'.*alpha"),
    (["-O", "alpha=-5"], r"alpha must lie in \[0, 1\], got -5"),
    (["-O", "metric=nosuch"], r"unknown metric 'nosuch'"),
    (["--backbone", "nosuch"], r"unknown backbone 'nosuch'"),
    (["-O", "encoder_options={bad_key: 1}"], r"bad_key"),
    (["-O", "novalue"], r"expect(s|ed) KEY=VALUE"),
    (["--method", "nosuch"], r"unknown method 'nosuch'"),
]:
    for _command in ("train", "eval"):
        case(f"{_command} {' '.join(_extra)}", "method options", "error", _message)(
            lambda work, shared, extra=_extra, command=_command: (
                _train(shared.data, work, *extra) if command == "train"
                else ["eval", "--data", str(shared.data), "--method", "ma-fsar", *FROZEN, *SMALL, "--episodes", "1",
                      *extra]
            )
        )

for _command in ("train", "eval"):
    case(f"{_command} --weights on an empty folder", "method options", "error", r"empty_weights")(
        lambda work, shared, command=_command: (
            lambda empty: (empty.mkdir(), [
                command, "--data", str(shared.data), "--method", "proto" if command == "eval" else "ma-fsar",
                "--backbone", "clip-vit-b32", "--weights", str(empty), *SMALL, "--episodes", "1",
                *(["--out", str(work / "run")] if command == "train" else [])])[1]
        )(work / "empty_weights")
    )


# ----------------------------------------------------------------------------------------------
# checkpoints: edited, truncated, incomplete, resumed without last.json


def _edited_record(work: Path, shared: Shared, edit: str) -> Path:
    run = copy_run(shared, work)
    path = run / "best.json" if (run / "best.json").exists() else run / "last.json"
    record = read_json(path)
    if edit == "method":
        record["method"] = "clip-fsar"
    elif edit == "config":
        record["config"]["method_options"]["alpha"] = 0.9
    path.write_text(json.dumps(record, indent=2))
    return run


case("checkpoint JSON with an edited method", "checkpoints", "error", r"record was changed after it was written")(
    lambda work, shared: ["eval", "--data", str(shared.data), "--checkpoint", str(_edited_record(work, shared, "method")),
                          *SMALL, "--episodes", "1"]
)
case("checkpoint JSON with an edited config", "checkpoints", "error", r"record was changed after it was written")(
    lambda work, shared: ["predict", "--data", str(shared.data), "--query", str(shared.data / "apple" / "clip0"),
                          "--checkpoint", str(_edited_record(work, shared, "config"))]
)


def _truncated_record(work: Path, shared: Shared) -> Path:
    run = copy_run(shared, work)
    for name in ("best.json", "last.json"):
        if (run / name).exists():
            (run / name).write_bytes((run / name).read_bytes()[:40])
    return run


case("checkpoint JSON truncated", "checkpoints", "error", r"not a readable checkpoint record")(
    lambda work, shared: ["eval", "--data", str(shared.data), "--checkpoint", str(_truncated_record(work, shared)),
                          *SMALL, "--episodes", "1"]
)


def _missing_tensors(work: Path, shared: Shared) -> Path:
    run = copy_run(shared, work)
    for path in run.glob("*-model-step*.safetensors"):
        path.unlink()
    return run


case("checkpoint tensor file deleted", "checkpoints", "error", r"model file .* is missing")(
    lambda work, shared: ["eval", "--data", str(shared.data), "--checkpoint", str(_missing_tensors(work, shared)),
                          *SMALL, "--episodes", "1"]
)


def _flipped_tensors(work: Path, shared: Shared) -> Path:
    run = copy_run(shared, work)
    for path in run.glob("*-model-step*.safetensors"):
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    return run


case("checkpoint tensor file with a changed byte", "checkpoints", "error", r"does not match the sha256")(
    lambda work, shared: ["eval", "--data", str(shared.data), "--checkpoint", str(_flipped_tensors(work, shared)),
                          *SMALL, "--episodes", "1"]
)


def _without_last(work: Path, shared: Shared) -> Path:
    run = copy_run(shared, work)
    record = read_json(run / "last.json")
    (run / "best.json").write_text(json.dumps(record))  # a best checkpoint stays
    (run / "last.json").unlink()
    return run


case("resume after last.json was deleted", "checkpoints", "error", r"no last checkpoint \(last\.json\) to resume from")(
    lambda work, shared: ["train", "--out", str(_without_last(work, shared)), "--resume", "--no-progress"]
)
case("resume of an empty folder", "checkpoints", "error", r"no last checkpoint \(last\.json\)")(
    lambda work, shared: (lambda out: (out.mkdir(), ["train", "--out", str(out), "--resume"])[1])(work / "fresh")
)
case("checkpoint of a folder that does not exist", "checkpoints", "error", r"nowhere: no such checkpoint")(
    lambda work, shared: ["eval", "--data", str(shared.data), "--checkpoint", str(work / "nowhere"), *SMALL]
)


def _leftover_temporaries(work: Path, shared: Shared) -> list[str]:
    run = work / "run"
    run.mkdir()
    # What kill -9 before the first checkpoint leaves: temporaries of a writer that no longer runs
    # (pid 2**22 + 1 is above Linux's pid_max, so never alive).
    (run / ".metrics.csv.4194305.k3j2h1g0.tmp").write_text("partial")
    (run / ".config.json.4194305.abcdefgh.tmp").write_text("{")
    return _train(shared.data, work)


case("temporaries of a killed run are cleaned up", "checkpoints", "ok",
     check=lambda work, outcome: _assert(not list((work / "run").glob(".*.tmp")), "temporary files left"))(
    _leftover_temporaries
)


# ----------------------------------------------------------------------------------------------
# clips left out at any stage: counted in the result JSON with the reason, and printed


def _undecodable_root(work: Path) -> Path:
    root = write_dataset(work / "data", ["a", "b"], clips=3)
    # Lists and opens (a frame folder of one .png) but cannot be decoded.
    (root / "a" / "clip0" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "b" / "notes.mp4").write_text("not a video")  # unreadable when listed
    return root


def _check_counted(stages: set[str]):
    def check(work: Path, outcome: Outcome) -> None:
        result = read_json(work / "result.json")
        _assert(result["skipped_clips"] == 2, f"skipped_clips = {result['skipped_clips']}, expected 2")
        reasons = {item["path"].rsplit("/", 1)[-1]: item for item in result["skipped"]}
        _assert({"clip0", "notes.mp4"} <= set(reasons), f"left-out clips not listed: {sorted(reasons)}")
        _assert("2.png" in reasons["clip0"]["reason"], f"reason does not name the frame: {reasons['clip0']}")
        _assert({item["stage"] for item in result["skipped"]} <= stages | {"listing"}, str(result["skipped"]))
        _assert(re.search(r"left out 2 clips", outcome.out + outcome.err) is not None, "count not printed")

    return check


case("eval: clip that opens but does not decode (feature cache)", "clips left out", "skip",
     check=_check_counted({"extraction"}))(lambda work, shared: _eval(_undecodable_root(work), work))
case("eval --no-feature-cache: clip that does not decode", "clips left out", "skip",
     check=_check_counted({"episodes"}))(
    lambda work, shared: _eval(_undecodable_root(work), work, "--no-feature-cache", "--episodes", "6")
)


# ----------------------------------------------------------------------------------------------
# feature caches: corrupt, stale, or another data set's


def _run_with_cache(work: Path, shared: Shared) -> tuple[Path, Path]:
    """A copy of the shared run with its feature cache (of ``shared.data``): (run, cache folder)."""
    import shutil

    run = work / "run"
    shutil.copytree(shared.run, run)
    return run, run / "features" / "train"


def _shard(cache: Path) -> Path:
    return next(cache.glob("shard-*.safetensors"))


def _eval_cached(work: Path, shared: Shared, data: Path | None = None) -> list[str]:
    run, cache = work / "run", work / "run" / "features" / "train"
    return ["eval", "--data", str(data or shared.data), "--checkpoint", str(run), "--features", str(cache),
            *SMALL, "--episodes", "2", "--json", str(work / "result.json")]


def _damage(work: Path, shared: Shared, how: str) -> list[str]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    run, cache = _run_with_cache(work, shared)
    index = cache / "index.json"
    if how == "index truncated":
        index.write_bytes(index.read_bytes()[:50])
    elif how == "index empty":
        index.write_text("")
    elif how == "index a list":
        index.write_text("[1, 2, 3]")
    elif how == "index without entries":
        record = read_json(index)
        del record["entries"]
        index.write_text(json.dumps(record))
    elif how == "index missing":
        index.unlink()
    elif how == "shard truncated":
        shard = _shard(cache)
        shard.write_bytes(shard.read_bytes()[:200])
    elif how == "shard missing":
        _shard(cache).unlink()
    elif how == "shard byte changed":
        shard = _shard(cache)
        data = bytearray(shard.read_bytes())
        data[-5] ^= 0x55
        shard.write_bytes(bytes(data))
    elif how in ("shard NaN", "shard NaN with a matching checksum"):
        from fsar.data.integrity import tensors_sha256

        shard = _shard(cache)
        with safe_open(str(shard), framework="pt") as handle:
            metadata = dict(handle.metadata())
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        first = sorted(tensors)[0]
        tensors[first] = tensors[first].clone().fill_(float("nan"))
        if how == "shard NaN with a matching checksum":
            if "fsar" in metadata:  # the store keeps its metadata as one JSON object under "fsar"
                inner = json.loads(metadata["fsar"])
                inner["tensors_sha256"] = tensors_sha256(tensors)
                metadata["fsar"] = json.dumps(inner, sort_keys=True)
            else:
                metadata["tensors_sha256"] = tensors_sha256(tensors)
        save_file(tensors, str(shard), metadata=metadata)
    else:  # pragma: no cover
        raise ValueError(how)
    return _eval_cached(work, shared)


for _how, _message in [
    ("index truncated", r"index\.json is not valid JSON \(truncated\?"),
    ("index empty", r"index\.json is empty"),
    ("index a list", r"index\.json holds a JSON list, not a cache index"),
    ("index without entries", r"index\.json is not a complete cache index \(KeyError: 'entries'\)"),
    ("index missing", r"index\.json not found \(run `fsar extract` first\)"),
    ("shard truncated", r"shard .*shard-00000-\w+\.safetensors is unreadable \(truncated.*it holds clip\(s\) apple/clip0"),
    ("shard missing", r"shard .*shard-00000-\w+\.safetensors is missing \(it holds clip\(s\) apple/clip0"),
    ("shard byte changed", r"shard .*shard-00000-\w+\.safetensors fails its checksum.*apple/clip0"),
    ("shard NaN", r"shard .*fails its checksum"),
    ("shard NaN with a matching checksum", r"non-finite values \(NaN/inf\) in the features of clip apple/clip0"),
]:
    case(f"eval --features: {_how}", "feature caches", "error", _message)(
        lambda work, shared, how=_how: _damage(work, shared, how)
    )


def _other_root(work: Path, shared: Shared) -> list[str]:
    _run_with_cache(work, shared)
    other = write_dataset(work / "other_data", ["apple", "banana", "cherry"], frames=3)
    for path in other.rglob("*.png"):  # same names, other content (and the same sizes, so the sample decides)
        from PIL import Image

        image = np.asarray(Image.open(path)).copy()
        image[0, 0] = 255 - image[0, 0]
        Image.fromarray(image).save(path)
    return _eval_cached(work, shared, other)


case("eval --features: a cache of another data root with the same clip names", "feature caches", "error",
     r"clip .*other_data/\w+/clip\d is not the clip its features were extracted from")(_other_root)


def _moved_root(work: Path, shared: Shared) -> list[str]:
    import shutil

    _run_with_cache(work, shared)
    moved = work / "moved" / "data"
    shutil.copytree(shared.data, moved)  # copy2: same content, same mtimes
    return _eval_cached(work, shared, moved)


case("eval --features: the same data set copied elsewhere", "feature caches", "ok",
     check=lambda work, outcome: _assert(read_json(work / "result.json")["episodes"] == 2, "no result"))(_moved_root)


def _edited_clip(work: Path, shared: Shared, *, auto: bool) -> list[str]:
    import shutil

    from PIL import Image

    data = work / "data"
    shutil.copytree(shared.data, data)
    run = copy_run(shared, work)
    argv = ["eval", "--data", str(data), "--checkpoint", str(run), *SMALL, "--episodes", "2",
            "--json", str(work / "result.json")]
    from fsar.cli import main

    if main(argv) != 0:  # extracts run/features/eval from the clips as they are now
        raise RuntimeError("the first evaluation failed")
    frame = data / "banana" / "clip1" / "2.png"
    image = np.asarray(Image.open(frame)).copy()
    image[:4] = 255 - image[:4]
    Image.fromarray(image).save(frame)
    os_time = frame.stat().st_mtime_ns + 5_000_000_000
    import os

    os.utime(frame, ns=(os_time, os_time))
    if auto:
        return argv  # extraction into run/features/eval again: the changed clip is encoded again
    return [*argv, "--features", str(run / "features" / "eval")]


case("eval --features: a clip edited after extraction", "feature caches", "error",
     r"clip .*banana/clip1 is not the clip its features were extracted from \((size \d+ -> \d+ bytes|same size but other content)")(
    lambda work, shared: _edited_clip(work, shared, auto=False)
)
case("eval (automatic cache): a clip edited after extraction is encoded again", "feature caches", "ok",
     r"banana/clip1 changed since its features were extracted",
     check=lambda work, outcome: _assert(read_json(work / "result.json")["episodes"] == 2, "no result"))(
    lambda work, shared: _edited_clip(work, shared, auto=True)
)


def _damaged_auto(work: Path, shared: Shared) -> list[str]:
    from fsar.cli import main

    run = copy_run(shared, work)
    argv = ["eval", "--data", str(shared.data), "--checkpoint", str(run), *SMALL, "--episodes", "2",
            "--json", str(work / "result.json")]
    if main(argv) != 0:  # extracts run/features/eval
        raise RuntimeError("the first evaluation failed")
    shard = _shard(run / "features" / "eval")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x55
    shard.write_bytes(bytes(data))
    return argv


case("eval (automatic cache): a damaged shard is encoded again", "feature caches", "ok",
     r"fails its checksum .*encoding it again",
     check=lambda work, outcome: _assert(read_json(work / "result.json")["episodes"] == 2, "no result"))(_damaged_auto)

case("data check --features: a healthy cache", "feature caches", "ok", r"OK: every shard verified")(
    lambda work, shared: ["data", "check", "--data", str(shared.data), "--features", str(shared.run / "features" / "train"),
                          "--way", "3", "--no-progress"]
)
case("data check --features: a shard with a changed byte", "feature caches", "error",
     r"feature cache .*1 problem\(s\); first: .*fails its checksum", code=1)(
    lambda work, shared: (lambda cache: ["data", "check", "--data", str(shared.data), "--features", str(cache), "--way", "3",
                                         "--no-progress"])(_damage_and_return(work, shared))
)
case("data check --features: a truncated index", "feature caches", "error", r"index\.json is not valid JSON")(
    lambda work, shared: (_damage(work, shared, "index truncated"),
                          ["data", "check", "--data", str(shared.data), "--features", str(work / "run" / "features" / "train"),
                           "--way", "3", "--no-progress"])[1]
)


def _damage_and_return(work: Path, shared: Shared) -> Path:
    _damage(work, shared, "shard byte changed")
    return work / "run" / "features" / "train"


# ----------------------------------------------------------------------------------------------
# outputs that cannot be written, sizes an encoder cannot take


def _a_file(work: Path) -> Path:
    path = work / "a_file"
    path.write_text("x")
    return path


def _a_folder(work: Path) -> Path:
    path = work / "a_folder"
    path.mkdir(exist_ok=True)
    return path


for _id, _build, _message in [
    ("eval --json to a folder", lambda w, s: _eval(s.data, w, "--json", str(_a_folder(w))),
     r"--json .*a_folder: is a folder; give a file name"),
    ("eval --json under a file", lambda w, s: _eval(s.data, w, "--json", str(_a_file(w) / "r.json")),
     r"--json .*a_file/r\.json: .*a_file is a file, not a folder"),
    ("eval --png to a folder", lambda w, s: _eval(s.data, w, "--png", str(_a_folder(w))),
     r"--png .*a_folder: is a folder"),
    ("train --out a file", lambda w, s: [*_train(s.data, w)[:-2], "--out", str(_a_file(w))],
     r"--out .*a_file: is a file, not a run folder"),
    ("extract --out a file", lambda w, s: ["extract", "--data", str(s.data), "--out", str(_a_file(w)), "--no-progress"],
     r"a_file: File exists"),
    ("data synth into a file", lambda w, s: ["data", "synth", str(_a_file(w)), "--classes", "2", "--no-progress"],
     r"a_file: Not a directory"),
    ("data check --json to a folder", lambda w, s: ["data", "check", "--data", str(s.data), "--way", "3", "--no-progress",
                                                   "--json", str(_a_folder(w))], r"a_folder"),
    ("eval --image-size 8 on a 224-px ViT", lambda w, s: ["eval", "--data", str(s.data), "--method", "proto",
                                                       "--backbone", "clip-vit-b32", "--weights", "random", *SMALL,
                                                       "--episodes", "1", "--image-size", "8"],
     r"--image-size 8: backbone 'clip-vit-b32' cannot take 8x8 frames"),
]:
    case(_id, "outputs and sizes", "error", _message)(_build)


def _bad_descriptions(work: Path) -> Path:
    path = work / "descriptions.json"
    path.write_text('{"format": ')
    return path


case("eval lga --descriptions a truncated JSON", "method options", "error",
     r"description cache .*descriptions\.json: cannot read JSON")(
    lambda work, shared: ["eval", "--data", str(shared.data), "--method", "lga", *FROZEN, *SMALL, "--episodes", "1",
                          "--descriptions", str(_bad_descriptions(work))]
)


# ----------------------------------------------------------------------------------------------
# video files of other bit depths and layouts (decoded through PyAV's rgb24 conversion)


def _deep_video(path: Path, pix_fmt: str) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if pix_fmt == "yuv420p10le" else "ffv1"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt = pix_fmt
        for k in range(3):
            if pix_fmt == "gray16le":
                frame = av.VideoFrame.from_ndarray(np.full((16, 16), 10000 * (k + 1), np.uint16), format="gray16le")
            elif pix_fmt == "rgb48le":
                frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 10000 * (k + 1), np.uint16), format="rgb48le")
            elif pix_fmt == "gray":
                frame = av.VideoFrame.from_ndarray(np.full((16, 16), 40 * (k + 1), np.uint8), format="gray")
            else:
                frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * (k + 1), np.uint8), format="rgb24")
                frame = frame.reformat(format=pix_fmt)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


#: Expected first-pixel value of frames 0..2 (16-bit: round(v * 255 / 65535); 10-bit YUV: within 3).
_DEEP_VIDEO = {"gray16le": ([39, 78, 117], 1), "rgb48le": ([39, 78, 117], 1), "gray": ([40, 80, 120], 0),
               "yuv420p10le": ([40, 80, 120], 3)}


def _check_deep_video(pix_fmt: str):
    def check(work: Path, outcome: Outcome) -> None:
        from fsar.data.video import open_video

        values = open_video(work / "data" / "deep" / f"{pix_fmt}.mkv").read([0, 1, 2])[:, :, 0, 0]
        want, tolerance = _DEEP_VIDEO[pix_fmt]
        for channel in range(3):
            error = max(abs(int(v) - w) for v, w in zip(values[:, channel].tolist(), want))
            _assert(error <= tolerance, f"{pix_fmt}: channel {channel} reads {values[:, channel].tolist()}, want {want}")

    return check


for _pix_fmt in _DEEP_VIDEO:
    case(f"video {_pix_fmt}", "frame bit depth and layout", "ok", check=_check_deep_video(_pix_fmt))(
        lambda work, shared, pix_fmt=_pix_fmt: (
            _deep_video(work / "data" / "deep" / f"{pix_fmt}.mkv", pix_fmt),
            write_frames(work / "data" / "deep" / "plain", 3),
            write_dataset(work / "data", ["other"]),
            ["data", "check", "--data", str(work / "data"), "--way", "2", "--no-progress", "--no-duplicates"],
        )[-1]
    )
