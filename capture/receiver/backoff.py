"""The wait between a connection's attempts, and why there is one.

A :class:`Backoff` belongs to one connection and owns the counters that decide
the next wait (the ``backing_off`` state of :mod:`capture.receiver.lifecycle`):

* after any failure: capped exponential backoff with full jitter
  (:meth:`capture.receiver.lifecycle.Timing.backoff`); ``failures`` resets
  once a connection has been live for ``stable_after``.
* after refused credentials: the *auth* backoff
  (:meth:`capture.receiver.lifecycle.Timing.auth_delay`), however long the
  connection was up (a refused key does not heal in milliseconds), never
  below half its cap, so it cannot spin; it resets once a connection was
  live again without one.

``why`` is the reason of the attempt that just ended (one of
:data:`capture.receiver.lifecycle.RECONNECT_REASONS`), set by the connection
where it ends; each reconnect counts it in ``reasons``.
"""
from __future__ import annotations

import random
import time

from capture.receiver.lifecycle import Timing


class Backoff:
    """Failure counters and the next wait of one connection."""

    def __init__(self, timing: Timing, rng: random.Random) -> None:
        self.timing = timing
        self.rng = rng          # the connection's: one seeded sequence of draws
        self.failures = 0       # consecutive attempts that did not stay live
        self.auth_failures = 0  # consecutive refusals of our credentials
        self.reconnects = 0
        self.reasons: dict[str, int] = {}
        self.why = "closed"
        self.auth_refused = False   # this attempt ended in an auth failure

    def refused_auth(self) -> tuple[int, float]:
        """The venue refused our credentials on this attempt.  Returns the
        consecutive refusals counting this one and the cap of the wait it will
        cost (for the ``auth_failed`` record)."""
        self.auth_refused = True
        n = self.auth_failures + 1
        _, cap = self.timing.auth_delay(n, self.rng)
        return n, cap

    def next(self, live_since: float) -> tuple[float, float]:
        """``(delay, cap)`` before the next attempt, counting this reconnect.

        Args:
            live_since: monotonic time the ended attempt went live (0: never).
        """
        tm = self.timing
        if live_since and time.monotonic() - live_since >= tm.stable_after:
            self.failures = 0
        if self.auth_refused:
            self.auth_refused = False
            self.why = "auth"
            self.auth_failures += 1
            delay, cap = tm.auth_delay(self.auth_failures, self.rng)
        else:
            if live_since:
                self.auth_failures = 0
            delay, cap = tm.backoff(self.failures, self.rng)
        self.failures += 1
        self.reconnects += 1
        self.reasons[self.why] = self.reasons.get(self.why, 0) + 1
        return delay, cap
