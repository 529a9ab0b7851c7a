"""Feature cache under real processes: killed with SIGKILL mid-write, and two extractions at once.

Either way the directory ends byte-identical to one clean extraction (same files, same bytes).
Each test runs the extraction in fresh Python processes (tiny encoder, 9 clips).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cache_standins import StreamingEncoder, write_dataset
from fsar.data.loading import ClipLoader
from fsar.data.manifest import Manifest
from fsar.data.transforms import TransformConfig
from fsar.encoders.cache import extract_features

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

EXTRACT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import safetensors.torch
    from cache_standins import StreamingEncoder
    from fsar.data.loading import ClipLoader
    from fsar.data.manifest import Manifest
    from fsar.data.transforms import TransformConfig
    from fsar.encoders.cache import extract_features

    data, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    real_save = safetensors.torch.save_file
    saves = []

    def save(tensors, filename, metadata=None):
        saves.append(filename)
        if mode == "kill" and len(saves) == 3:  # class file, shard 0, then die inside shard 1's write
            Path(filename).write_bytes(b"half a shard")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(tensors, filename, metadata=metadata)

    safetensors.torch.save_file = save

    class Slow(StreamingEncoder):
        def encode_clips(self, frames):
            time.sleep(0.2 if mode == "race" else 0.0)  # keeps two racing processes overlapping
            return super().encode_clips(frames)

    encoder = Slow()
    loader = ClipLoader(num_frames=4, transform=TransformConfig.for_encoder(encoder))
    extract_features(Manifest.from_folder(data), encoder, loader, Path(out), shard_size=2, batch_size=1,
                     progress=False)
    """
)


def _start(data: Path, out: Path, mode: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]))
    return subprocess.Popen([sys.executable, "-c", EXTRACT, str(data), str(out), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture()
def clean(tmp_path):
    data = write_dataset(tmp_path / "data")
    encoder = StreamingEncoder()
    loader = ClipLoader(num_frames=4, transform=TransformConfig.for_encoder(encoder))
    extract_features(Manifest.from_folder(data), encoder, loader, tmp_path / "clean", shard_size=2, batch_size=1,
                     progress=False)
    return data, _files(tmp_path / "clean")


def test_sigkill_mid_write_then_rerun_equals_a_clean_extraction(clean, tmp_path):
    data, reference = clean
    out = tmp_path / "killed"
    killed = _start(data, out, "kill")
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir())
    assert any(".tmp-" in name for name in left)  # the half-written temporary it died in
    assert len([n for n in left if n.startswith("shard-")]) == 1  # only shard 0 was completed

    rerun = _start(data, out, "plain")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    assert _files(out) == reference  # same names, same bytes; the dead process's temporary is gone


def test_two_concurrent_extractions_equal_a_clean_one(clean, tmp_path):
    data, reference = clean
    out = tmp_path / "raced"
    first, second = _start(data, out, "race"), _start(data, out, "race")
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    assert _files(out) == reference
