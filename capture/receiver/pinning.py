"""Pin the receiver to its CPU core(s) and, optionally, lock its memory.

``pin([1])`` sets the affinity of every thread of the process with
``os.sched_setaffinity`` (it acts per thread, and numpy's OpenBLAS has already
started a pool by the time the receiver runs) and reads each back with
``os.sched_getaffinity``: a pin that did not take (a cgroup cpuset that
excludes the core, a kernel that narrowed the mask) is an error, not a
silent "pinned somewhere".  Threads started later inherit the mask.  A core that does not exist on this
machine (or is outside this process's cpuset) is refused up front with the
list of cores that do.

``lock_memory()`` calls ``mlockall(MCL_CURRENT | MCL_FUTURE)`` through ctypes,
so page faults cannot stall the receive path.  It needs ``CAP_IPC_LOCK`` or a
large enough ``RLIMIT_MEMLOCK`` (systemd: ``LimitMEMLOCK=infinity``); when not
permitted it says exactly that, and fails only if the caller requires it.

Errors (defined in :mod:`common.errors`, rooted in :class:`~common.errors.CaptureError`)::

    CaptureError
    └── PinningError                 pinning or memory locking failed
        ├── NoSuchCore               cores: what was asked; available: what exists
        ├── AffinityNotApplied       requested vs. what the OS reports afterwards
        └── MemoryLockDenied         mlockall refused: errno, RLIMIT_MEMLOCK
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
from typing import Iterable

from common.errors import AffinityNotApplied, MemoryLockDenied, NoSuchCore, PinningError  # noqa: F401

MCL_CURRENT = 1
MCL_FUTURE = 2


def online_cores() -> list[int]:
    """Cores this machine has online (from sysfs; ``os.cpu_count`` as fallback)."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def available_cores(pid: int = 0) -> list[int]:
    """Online cores this process may run on.

    The cgroup's cpuset is not visible through our own affinity once we are
    pinned, so this is online cores (less any the kernel refuses at set time).
    """
    return online_cores()


def _threads(pid: int) -> list[int]:
    """Thread ids of process ``pid`` (0: this one).

    ``sched_setaffinity`` acts on one thread; threads started before the pin
    (OpenBLAS starts a pool when numpy is imported) keep their old mask, so
    every thread is pinned and checked.
    """
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid or 'self'}/task"))
    except OSError:
        return [pid]


def pin(cores: Iterable[int], pid: int = 0) -> set[int]:
    """Pin every thread of process ``pid`` (0: this one) to ``cores`` and verify.

    Threads created afterwards inherit the mask.

    Returns:
        the affinity the OS reports afterwards (== set(cores)).
    Raises:
        NoSuchCore: a core is not online / not allowed here.
        AffinityNotApplied: the OS reports a different affinity afterwards.
    """
    want = sorted(set(int(c) for c in cores))
    if not want:
        raise NoSuchCore([], available_cores(pid))
    avail = available_cores(pid)
    missing = [c for c in want if c not in avail or c < 0]
    if missing:
        raise NoSuchCore(missing, avail)
    tids = _threads(pid)
    for tid in [pid, *[t for t in tids if t != pid]] if pid else [0, *tids]:
        try:
            os.sched_setaffinity(tid, want)
        except ProcessLookupError:
            continue  # a thread that just ended
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # e.g. outside the cgroup's cpuset
                raise NoSuchCore(want, avail) from None
            raise PinningError(f"sched_setaffinity({want}) failed: {exc.strerror}") from None
    for tid in [pid, *tids]:
        try:
            got = os.sched_getaffinity(tid)
        except ProcessLookupError:
            continue
        if got != set(want):
            raise AffinityNotApplied(want, sorted(got))
    return set(want)


def lock_memory(required: bool = False) -> tuple[bool, str]:
    """``mlockall(MCL_CURRENT | MCL_FUTURE)``.

    Returns:
        ``(True, "memory locked")`` or ``(False, reason)`` when not permitted
        and not ``required``.
    Raises:
        MemoryLockDenied: not permitted and ``required``.
    """
    name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(name, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
        return True, "memory locked"
    err = ctypes.get_errno()
    exc = MemoryLockDenied(err, resource.getrlimit(resource.RLIMIT_MEMLOCK))
    if required:
        raise exc
    return False, str(exc)
