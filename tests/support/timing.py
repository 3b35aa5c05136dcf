"""Time under control in tests.

Every timeout in the tests is a multiple of UNIT seconds; slow machines set
CAPTURE_TEST_TIME_SCALE (e.g. 3) instead of editing tests.  Timeouts here are
upper bounds for waiting on events, never performance assertions.
"""
from __future__ import annotations

import os
import time
from typing import Callable

UNIT = float(os.environ.get("CAPTURE_TEST_TIME_SCALE", "1"))


def timeout(seconds: float) -> float:
    return seconds * UNIT


def wait_for(pred: Callable[[], object], seconds: float = 10.0, what: str = "condition",
             poll: float = 0.005) -> object:
    """Poll pred until it is truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout(seconds)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout(seconds):.1f}s waiting for {what}")
        time.sleep(poll)
