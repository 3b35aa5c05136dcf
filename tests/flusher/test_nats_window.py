"""The pipeline's bookkeeping without a network: a fake client records the
HPUB commands and the test plays the server's replies (cf. h11's helpers)."""
from __future__ import annotations

import asyncio
import re

import pytest

from flusher.pipeline import AckPipeline, build_headers


class FakeSub:
    _id = 1

    async def unsubscribe(self) -> None:
        pass


class FakeClient:
    """Just the parts of nats-py's Client the pipeline touches."""

    def __init__(self) -> None:
        self.is_connected = True
        self._pending: list[bytes] = []
        self._pending_data_size = 0
        self._flush_queue = None
        self.stats = {"out_msgs": 0, "out_bytes": 0}

    def new_inbox(self) -> str:
        return "_INBOX.t"

    async def subscribe(self, subject, cb=None, **kw):
        assert subject == "_INBOX.t.*.*"
        return FakeSub()

    async def _send_command(self, cmd, priority=False):  # presence enables the fast path
        raise AssertionError("not used")

    async def _process_msg(self, sid, subject, reply, data, headers):
        raise AssertionError("reply for an unknown subscription")

    def sent(self) -> list[tuple[str, int, int, bytes]]:
        """(subject, seq, attempt, msg id) of every HPUB so far; clears the buffer."""
        out = []
        for cmd in self._pending:
            m = re.match(rb"HPUB (\S+) _INBOX\.t\.(\d+)\.(\d+) \d+ \d+\r\n", cmd)
            mid = re.search(rb"Nats-Msg-Id: (\S+)\r\n", cmd).group(1)
            out.append((m.group(1).decode(), int(m.group(2)), int(m.group(3)), mid))
        self._pending.clear()
        return out


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def settle(rounds: int = 50) -> None:
    """Let every ready task run (no I/O here, so yielding is enough)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def ok(seq: int, attempt: int = 1, dup: bool = False):
    body = b'{"stream":"S","seq":%d%s}' % (seq, b',"duplicate":true' if dup else b"")
    return (b"_INBOX.t.%d.%d" % (seq, attempt), body, None)


def err(seq: int, attempt: int = 1, code: int = 10077, desc: bytes = b"maximum messages exceeded"):
    body = b'{"error":{"code":503,"err_code":%d,"description":"%s"}}' % (code, desc)
    return (b"_INBOX.t.%d.%d" % (seq, attempt), body, None)


def no_responders(seq: int, attempt: int = 1):
    return (b"_INBOX.t.%d.%d" % (seq, attempt), b"", b"NATS/1.0 503\r\n\r\n")


async def _pipe(**kw) -> tuple[AckPipeline, FakeClient]:
    nc = FakeClient()
    kw.setdefault("ack_timeout", 30)
    kw.setdefault("backoff", (0.0, 0.0))
    p = await AckPipeline(nc, **kw).start()
    return p, nc


async def _submit(p: AckPipeline, seqs) -> None:
    for s in seqs:
        await p.submit(s, "s.x", b"p%d" % s, build_headers(f"r:{s}"), commit=("c", s))


def test_commit_moves_only_over_a_contiguous_prefix():
    async def main():
        commits = []
        p, nc = await _pipe(on_commit=commits.append)
        await _submit(p, range(5))
        assert [s[1] for s in nc.sent()] == [0, 1, 2, 3, 4]
        for r in (ok(1), ok(2), ok(4)):
            await _reply(nc, r)
        assert commits == [] and p.committed is None
        await _reply(nc, ok(0))
        assert commits == [("c", 2)] and p.committed_seq == 2
        await _reply(nc, ok(3))
        assert commits[-1] == ("c", 4) and p.in_flight == 0
        await p.close()
    run(main())


async def _reply(nc: FakeClient, r) -> None:
    await nc._process_msg(1, r[0], b"", r[1], r[2])


@pytest.mark.parametrize("failure", [err, no_responders])
def test_failed_publish_is_resent_with_the_same_id(failure):
    async def main():
        p, nc = await _pipe()
        await _submit(p, [7])
        assert nc.sent() == [("s.x", 7, 1, b"r:7")]
        await _reply(nc, failure(7, 1))
        for _ in range(100):
            await asyncio.sleep(0)
            if nc._pending:
                break
        assert nc.sent() == [("s.x", 7, 2, b"r:7")]
        await _reply(nc, ok(7, 2))
        assert p.in_flight == 0
        kind = "stream_full" if failure is err else "no_responders"
        assert p.stats[kind] == 1 and p.stats["resent"] == 1
        await p.close()
    run(main())


def test_error_for_a_superseded_attempt_is_ignored_and_late_success_counts():
    async def main():
        p, nc = await _pipe()
        await _submit(p, [1])
        nc.sent()
        await _reply(nc, err(1, 1))
        for _ in range(100):
            await asyncio.sleep(0)
            if nc._pending:
                break
        assert [s[2] for s in nc.sent()] == [2]
        await _reply(nc, err(1, 1))          # a stale error: no third attempt
        await settle()
        assert nc.sent() == []
        await _reply(nc, ok(1, 1, dup=True))  # an earlier attempt's success acks it
        assert p.in_flight == 0 and p.stats["duplicate_ack"] == 1
        await p.close()
    run(main())


def test_ack_timeout_resends():
    async def main():
        p, nc = await _pipe(ack_timeout=0.05)
        await _submit(p, [1, 2])
        nc.sent()
        await _reply(nc, ok(2))
        for _ in range(1000):
            await asyncio.sleep(0.005)
            if nc._pending:
                break
        assert [(s[1], s[2]) for s in nc.sent()] == [(1, 2)]
        assert p.stats["ack_timeout"] == 1
        await _reply(nc, ok(1, 2))
        assert p.committed == ("c", 2)
        await p.close()
    run(main())


def test_window_bounds_submit():
    async def main():
        p, nc = await _pipe(window=3)
        await _submit(p, [0, 1, 2])
        t = asyncio.ensure_future(_submit(p, [3]))
        await settle()
        assert not t.done() and p.in_flight == 3
        await _reply(nc, ok(1))
        await settle()
        assert not t.done()                   # 0 still unacked: nothing left the window
        await _reply(nc, ok(0))
        await asyncio.wait_for(t, 5)
        assert p.in_flight == 2
        await p.close()
    run(main())


def test_disconnected_sends_nothing_and_resends_on_reconnect():
    async def main():
        p, nc = await _pipe()
        await _submit(p, [1])
        nc.sent()
        nc.is_connected = False
        await _submit(p, [2])
        await settle()
        assert nc.sent() == []
        nc.is_connected = True
        p.on_reconnected()
        for _ in range(100):
            await asyncio.sleep(0.001)
            if len(nc._pending) >= 2:
                break
        assert sorted((s[1], s[3]) for s in nc.sent()) == [(1, b"r:1"), (2, b"r:2")]
        await p.close()
    run(main())


def test_beyond_the_horizon_asks_verify_before_resending():
    async def main():
        asked = []

        async def verify(entries):
            asked.append(sorted(e.seq for e in entries))
            return {1}                         # 1 is stored, 2 is not
        p, nc = await _pipe(horizon_s=0.0, verify=verify)
        await _submit(p, [1, 2])
        nc.sent()
        await _reply(nc, no_responders(1))
        await _reply(nc, no_responders(2))
        for _ in range(1000):
            await asyncio.sleep(0.001)
            if nc._pending:
                break
        assert asked and asked[0] == [1, 2]
        assert [s[1] for s in nc.sent()] == [2]
        assert p.stats["verified_stored"] == 1
        await _reply(nc, ok(2, 2))
        assert p.committed == ("c", 2)
        await p.close()
    run(main())


def test_events_are_logged_once_per_kind(caplog):
    async def main():
        p, nc = await _pipe()
        await _submit(p, range(50))
        nc.sent()
        for i in range(50):
            await _reply(nc, no_responders(i))
        assert p.stats["no_responders"] == 50
        await p.close()
    with caplog.at_level("WARNING", logger="capture.publisher"):
        run(main())
    assert sum("no_responders" in r.getMessage() for r in caplog.records) == 1
