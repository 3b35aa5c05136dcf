"""A child of the supervisor ends when the supervisor does, however it ends.

The supervisor starts each child with ``CAPTURE_SUPERVISOR_PID`` in its
environment and in its own process group (``Popen(process_group=0)``: a
terminal's Ctrl-C reaches only the supervisor, which stops the children in
order).  The child, first thing in its ``main``, calls :func:`die_with_parent`:
``PR_SET_PDEATHSIG`` makes the kernel send it SIGTERM when the supervisor
dies (even by SIGKILL), and it drains on its own instead of running on
unsupervised.

Why not in a ``preexec_fn``: that runs Python code between fork and exec in a
copy of a multi-threaded supervisor (the metrics server's threads are up by
the time a child is restarted).  A lock held by another thread at the fork
(the dynamic loader's, for ``ctypes.CDLL``) is held forever in the copy, the
copy never reaches exec, and the supervisor's main thread waits in ``Popen``
for it - a read that signal handlers cannot end (PEP 475 retries it), so
SIGINT/SIGTERM set the stop flag and nothing acts on it until SIGKILL.
"""
from __future__ import annotations

import ctypes
import os
import signal

ENV = "CAPTURE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask for ``sig`` when the supervisor dies; True if armed.

    A no-op (False) outside a supervisor (no ``CAPTURE_SUPERVISOR_PID``).  If
    the supervisor died before the request was made, ``sig`` comes now."""
    want = os.environ.get(ENV)
    if not want or not want.isdigit():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != int(want):   # the parent was gone before prctl: no signal would come
        os.kill(os.getpid(), sig)
    return True
