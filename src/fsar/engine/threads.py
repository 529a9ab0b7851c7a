"""How many CPU threads torch uses: chosen from the cores actually free, or set with ``--threads``.

torch's default is one intra-op thread per core. On a machine where other processes
already run, that oversubscribes the cores, and torch's threads then wait on each other:
measured on a 2-core machine with one competing busy process, LGA 5-shot evaluation took
78-82 s per 100 episodes with 2 threads against 9.8 s with 1 (issue 16). fsar therefore
picks ``cores available to this process - processes already running on them`` (at least 1),
from the scheduler's affinity mask and the kernel's count of runnable tasks
(``/proc/loadavg``), once at start-up.

An explicit choice always wins: ``--threads N``, else ``FSAR_THREADS``, else
``OMP_NUM_THREADS`` (torch's own convention), else the automatic choice.
"""

from __future__ import annotations

import logging
import os

__all__ = ["available_cores", "choose_threads", "configure_threads", "running_elsewhere"]

log = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may run on (affinity mask; cgroup-limited containers included)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def _cgroup_cpu_limit() -> float | None:
    try:
        text = open("/sys/fs/cgroup/cpu.max").read().split()
    except OSError:
        return None
    if len(text) == 2 and text[0] != "max":
        try:
            return float(text[0]) / float(text[1])
        except (ValueError, ZeroDivisionError):
            return None
    return None


def running_elsewhere() -> int:
    """Runnable tasks on the machine besides this process (``/proc/loadavg``'s 4th field), or 0."""
    try:
        running = int(open("/proc/loadavg").read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, why): the explicit request, the environment, or the free cores."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return requested, "--threads"
    for name in ("FSAR_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name)
        if value:
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a whole number of threads") from None
            if number < 1:
                raise ValueError(f"{name} must be >= 1, got {number}")
            return number, name
    cores = available_cores()
    busy = running_elsewhere()
    return max(1, cores - busy), f"{cores} core(s), {busy} other runnable task(s)"


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads (see the module docstring); returns the number set."""
    import torch

    threads, why = choose_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.debug("torch threads: %d (%s)", threads, why)
    return threads
