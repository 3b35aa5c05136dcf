"""The parts a connection keeps alive, ends and comes back through, without
I/O: :class:`Keepalive` (our pings), :class:`Backoff` (failure counters, the
next wait) and :class:`Closer` (the stop request, the closing handshake
against a scripted transport)."""
from __future__ import annotations

import asyncio
import random
import time

from capture.receiver.backoff import Backoff
from capture.receiver.closing import Closer
from capture.receiver.keepalive import Keepalive
from capture.receiver.lifecycle import Timing
from capture.receiver.transport import CloseInfo

T = Timing(backoff_base=0.5, backoff_cap=4.0, auth_backoff=5.0, auth_backoff_cap=40.0,
           stable_after=30.0, close_timeout=0.05, close_cap=1.0)


def test_backoff_grows_to_its_cap_and_counts_reasons():
    b = Backoff(T, random.Random(7))
    caps = []
    for why in ("connect_failed", "connect_failed", "server_close", "silence", "silence"):
        b.why = why
        delay, cap = b.next(live_since=0.0)
        assert 0.0 <= delay <= cap
        caps.append(cap)
    assert caps == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.failures == 5 and b.reconnects == 5
    assert b.reasons == {"connect_failed": 2, "server_close": 1, "silence": 2}


def test_backoff_resets_after_a_stable_connection_only():
    b = Backoff(T, random.Random(1))
    for _ in range(3):
        b.next(live_since=0.0)
    # live, but not for stable_after: the failures go on counting
    _, cap = b.next(live_since=time.monotonic())
    assert cap == 4.0 and b.failures == 4
    _, cap = b.next(live_since=time.monotonic() - T.stable_after - 1)
    assert cap == 0.5 and b.failures == 1


def test_refused_credentials_take_the_auth_backoff_and_never_spin():
    b = Backoff(T, random.Random(3))
    seen = []
    for n in range(1, 5):
        failures, cap = b.refused_auth()
        assert failures == n
        b.why = "connect_failed"   # the auth refusal overrides the attempt's reason
        delay, next_cap = b.next(live_since=time.monotonic() - 3600)   # long live: no matter
        assert next_cap == cap and cap / 2 <= delay <= cap
        seen.append(cap)
    assert seen == [5.0, 10.0, 20.0, 40.0]
    assert b.auth_failures == 4 and b.reasons == {"auth": 4}
    # a connection that went live without a refusal ends the run of refusals
    b.next(live_since=time.monotonic())
    assert b.auth_failures == 0


class _Transport:
    """A transport whose close() answers only when told, and counts aborts."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[CloseInfo] = asyncio.get_running_loop().create_future()
        self.aborts = 0
        self.close_info: CloseInfo | None = None

    async def close(self, code: int, reason: str, timeout: float) -> CloseInfo:
        return await self.answer

    def abort(self) -> None:
        self.aborts += 1


def _closer() -> tuple[Closer, list[int], list[tuple[str, dict]]]:
    frames = [0]
    records: list[tuple[str, dict]] = []
    c = Closer(T, frames=lambda: frames[0], record=lambda kind, **f: records.append((kind, f)))
    return c, frames, records


def test_stop_request_ends_a_sleep_and_is_a_noop_before_arming():
    async def main():
        c, _, _ = _closer()
        c.request()                      # not armed yet: nothing to set
        assert not c.requested
        c.arm()
        assert await c.sleep(0.001) is True          # slept the whole time
        sleeper = asyncio.ensure_future(c.sleep(3600))
        await asyncio.sleep(0)
        c.request()
        assert await sleeper is False and c.requested
        assert await c.sleep(3600) is False          # already stopped: no wait
    asyncio.run(main())


def test_close_for_stop_waits_while_messages_arrive():
    async def main():
        c, frames, records = _closer()
        t = _Transport()
        task = asyncio.ensure_future(c.for_stop(t))
        for _ in range(4):               # the server keeps sending for several close_timeouts
            await asyncio.sleep(T.close_timeout / 2)
            frames[0] += 1
        t.answer.set_result(CloseInfo(1000, "bye", "server"))
        await task
        assert t.aborts == 0 and c.aborted == 0
        assert records == [("closed", {"code": 1000, "reason": "bye", "by": "client",
                                       "handshake": "complete", "after_close": 4})]
    asyncio.run(main())


def test_close_for_stop_aborts_a_silent_server_and_says_so():
    async def main():
        c, _, records = _closer()
        t = _Transport()
        await c.for_stop(t)              # never answers, sends nothing
        assert t.aborts == 1 and c.aborted == 1
        (kind, f), = records
        assert kind == "closed" and f["handshake"] == "aborted" and f["code"] == 1006
        assert f["after_close"] == 0
    asyncio.run(main())


def test_keepalive_one_ping_outstanding_and_its_timeout():
    k = Keepalive(interval=1.0, pong_timeout=0.5)
    k.fresh()
    k.start(now=100.0)
    assert not k.due(100.5)                       # not yet an interval
    assert k.due(101.0) and k.outstanding         # sent
    assert not k.due(102.0)                       # one outstanding at a time...
    assert k.next_at == 103.0                     # ...but the schedule moves on
    assert k.overdue(101.4) is None
    assert k.overdue(101.75) == 0.75
    assert k.answered() and not k.outstanding
    assert not k.answered()                       # a second answer is not ours
    assert k.due(103.0)


def test_keepalive_without_an_interval_never_pings():
    for interval in (None, 0, 0.0):
        k = Keepalive(interval=interval, pong_timeout=0.5)
        k.start(now=0.0)
        assert k.interval is None and not k.due(1e9) and k.overdue(1e9) is None
