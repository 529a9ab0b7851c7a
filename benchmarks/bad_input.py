"""Bad inputs through the ``fsar`` command: how many end as clear errors, counted skips or
correct results, and how many crash, hang, lie or mislead. Plus kill -9 checks.

    PYTHONPATH=src python benchmarks/bad_input.py [--timeout 120] [--kill-trials 3] [--json out.json]

Every case of the corpus (``tests/bad_inputs.py``, the same one ``tests/test_bad_input_corpus.py``
runs in-process) is built in a fresh folder and run as ``python -m fsar ...`` in its own
subprocess, bounded by ``--timeout`` seconds. Its outcome is judged by the case's expectation:

* clear error: exit 2 and one line ``fsar <cmd>: error: ...`` that matches what is wrong;
* counted skip: exit 0 with the bad clip left out and counted (reason included);
* correct: exit 0 and the right result (e.g. the real pixel values of a 16-bit frame);
* crash: a Python traceback; hang: over the timeout; silent wrong: exit 0 where an error was
  due, or a wrong result; misleading: an error that does not say what is wrong.

Kill checks (``--kill-trials N``): a tiny training run is killed with SIGKILL at a random moment
after its first checkpoint and continued with ``fsar train --resume``; its final tensors must
equal an uninterrupted run's bit for bit. A feature extraction (``fsar extract``) is killed
mid-way and re-run, and two extractions run concurrently into one folder; each cache must
hold the same tensors, bit for bit, as a clean extraction.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from bad_inputs import CASES, SMALL, TINY_CLIP, Outcome, Shared, judge, write_dataset  # noqa: E402

VERDICTS = ("clear_error", "counted_skip", "correct", "crash", "hang", "silent_wrong", "misleading")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_fsar(argv: list[str], timeout: float, cwd: Path) -> Outcome:
    try:
        done = subprocess.run([sys.executable, "-m", "fsar", *argv], capture_output=True, text=True, timeout=timeout,
                              env=_env(), cwd=cwd)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        err = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        return Outcome(None, out, err, hung=True)
    return Outcome(done.returncode, done.stdout, done.stderr)


def run_corpus(base: Path, timeout: float, only: str | None) -> list[dict]:
    shared = Shared(base / "shared")
    rows = []
    for number, case in enumerate(CASES):
        if only and only not in case.id:
            continue
        work = base / f"case{number:03d}"
        work.mkdir()
        started = time.perf_counter()
        argv = case.build(work, shared)
        outcome = run_fsar(argv, timeout, work)
        verdict, detail = judge(case, work, outcome)
        rows.append({"case": case.id, "kind": case.kind, "expect": case.expect, "verdict": verdict, "detail": detail,
                     "seconds": round(time.perf_counter() - started, 2)})
        print(f"{verdict:13s} {case.kind:28s} {case.id}" + (f"  [{detail}]" if verdict not in
              ("clear_error", "counted_skip", "correct") else ""), flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# kill -9 checks


def _tensors(directory: Path, pattern: str) -> dict[str, bytes]:
    from safetensors.torch import load_file

    found = {}
    for path in sorted(directory.glob(pattern)):
        for name, tensor in load_file(str(path)).items():
            found[name] = tensor.numpy().tobytes()
    return found


def _train_argv(data: Path, out: Path, episodes: int) -> list[str]:
    return ["train", "--data", str(data), "--method", "ma-fsar", "--backbone", "clip-vit-b32", "--weights", "random",
            "-O", TINY_CLIP, *SMALL, "--episodes", str(episodes), "--tasks-per-step", "1", "--val-every", "0",
            "--checkpoint-every", "1", "--lr", "1e-3", "--no-feature-cache", "--out", str(out)]


def kill_and_resume(base: Path, trials: int, rng: random.Random) -> list[dict]:
    data = write_dataset(base / "kill_data", ["a", "b", "c"], clips=3, frames=4)
    episodes = 12
    reference = base / "kill_reference"
    subprocess.run([sys.executable, "-m", "fsar", *_train_argv(data, reference, episodes)], check=True,
                   capture_output=True, env=_env())
    expected = _tensors(reference, "last-model-step*.safetensors")
    rows = []
    for trial in range(trials):
        out = base / f"kill_run{trial}"
        process = subprocess.Popen([sys.executable, "-m", "fsar", *_train_argv(data, out, episodes)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        deadline = time.time() + 300
        while not (out / "last.json").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        killed_at = None
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            try:
                killed_at = json.loads((out / "last.json").read_text())["step"]
            except (OSError, ValueError, KeyError):
                killed_at = "?"
        resumed = subprocess.run([sys.executable, "-m", "fsar", "train", "--out", str(out), "--resume", "--no-progress"],
                                 capture_output=True, text=True, env=_env())
        equal = resumed.returncode == 0 and _tensors(out, "last-model-step*.safetensors") == expected
        leftovers = [p.name for p in out.glob(".*.tmp")]
        rows.append({"check": "train kill -9 + --resume", "killed_at_step": killed_at, "bitwise_equal": equal,
                     "temporaries_left": leftovers})
        print(f"train kill -9 at step {killed_at}: resume {'bitwise equal' if equal else 'DIFFERS'}"
              f"{'' if not leftovers else f', temporaries left: {leftovers}'}", flush=True)
    return rows


def _extract_argv(data: Path, out: Path) -> list[str]:
    return ["extract", str(data), "--backbone", "effnet-lite0+minilm", "--out", str(out), "--frames", "4",
            "--shard-size", "4", "--batch-size", "2", "--no-progress"]


def killed_extraction(base: Path, trials: int, rng: random.Random) -> list[dict]:
    data = write_dataset(base / "extract_data", ["a", "b", "c", "d"], clips=4, frames=4, size=32)
    clean = base / "extract_clean"
    subprocess.run([sys.executable, "-m", "fsar", *_extract_argv(data, clean)], check=True, capture_output=True,
                   env=_env())
    expected = _tensors(clean, "shard-*.safetensors")
    rows = []
    for trial in range(trials):
        out = base / f"extract_killed{trial}"
        process = subprocess.Popen([sys.executable, "-m", "fsar", *_extract_argv(data, out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        deadline = time.time() + 300
        while not list(out.glob("shard-*.safetensors")) and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        again = subprocess.run([sys.executable, "-m", "fsar", *_extract_argv(data, out)], capture_output=True,
                               env=_env())
        equal = again.returncode == 0 and _tensors(out, "shard-*.safetensors") == expected
        leftovers = [p.name for p in out.glob(".*")]
        rows.append({"check": "extract kill -9 + re-run", "bitwise_equal": equal, "temporaries_left": leftovers})
        print(f"extract kill -9 + re-run: {'bitwise equal' if equal else 'DIFFERS'}"
              f"{'' if not leftovers else f', temporaries left: {leftovers}'}", flush=True)
    out = base / "extract_concurrent"
    processes = [subprocess.Popen([sys.executable, "-m", "fsar", *_extract_argv(data, out)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=_env()) for _ in range(2)]
    codes = [p.wait() for p in processes]
    equal = all(c == 0 for c in codes) and _tensors(out, "shard-*.safetensors") == expected
    rows.append({"check": "two concurrent extractions", "bitwise_equal": equal, "exit_codes": codes})
    print(f"two concurrent extractions: exit {codes}, {'bitwise equal' if equal else 'DIFFERS'}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per command (default 180)")
    parser.add_argument("--kill-trials", type=int, default=3, help="kill -9 trials per check (default 3; 0: none)")
    parser.add_argument("--only", help="run only the cases whose id contains this text")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--json", metavar="OUT", help="write every row here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="fsar-bad-input-"))
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        rows = run_corpus(base, args.timeout, args.only)
        kills = []
        if args.kill_trials > 0 and not args.only:
            rng = random.Random(args.seed)
            kills = kill_and_resume(base, args.kill_trials, rng) + killed_extraction(base, args.kill_trials, rng)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    counts = collections.Counter(row["verdict"] for row in rows)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        by_kind[row["kind"]][row["verdict"]] += 1
    print()
    print(f"bad inputs tried: {len(rows)} (load average at start {load:.1f}; {time.perf_counter() - started:.0f} s)")
    print("| kind | tried | clear error | counted skip | correct | crash | hang | silent wrong | misleading |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, kind_counts in list(by_kind.items()) + [("**all**", counts)]:
        cells = " | ".join(str(kind_counts.get(v, 0)) for v in VERDICTS)
        print(f"| {kind} | {sum(kind_counts.values())} | {cells} |")
    if kills:
        equal = sum(1 for k in kills if k["bitwise_equal"])
        print(f"\nkill -9 checks: {equal} of {len(kills)} bitwise equal to an uninterrupted run")
        for k in kills:
            print(f"  {k}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": rows, "kills": kills, "counts": counts,
                                               "load_average": load}, indent=1, ensure_ascii=False))
    bad = sum(counts.get(v, 0) for v in ("crash", "hang", "silent_wrong", "misleading"))
    return 1 if bad or any(not k["bitwise_equal"] for k in kills) else 0


if __name__ == "__main__":
    sys.exit(main())
