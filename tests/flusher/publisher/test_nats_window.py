"""The pipeline's bookkeeping without a network: a fake client records the
HPUB commands and the test plays the server's replies (cf. h11's helpers)."""
from __future__ import annotations

import asyncio
import re

import pytest

from flusher.publisher.pipeline import AckPipeline, build_headers


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

    def commands(self) -> list[tuple[str, int, int, bytes]]:
        """(subject, seq, attempt, msg id) of every HPUB pending, read from the
        bytes as the server would (the pipeline may queue a command in pieces)."""
        data = b"".join(self._pending)
        assert len(data) == self._pending_data_size
        out, pos = [], 0
        while pos < len(data):
            m = re.compile(rb"HPUB (\S+) _INBOX\.t\.(\d+)\.(\d+) (\d+) (\d+)\r\n").match(data, pos)
            assert m, data[pos:pos + 80]
            hl, total = int(m.group(4)), int(m.group(5))
            body = data[m.end():m.end() + total]
            assert data[m.end() + total:m.end() + total + 2] == b"\r\n"
            mid = re.search(rb"Nats-Msg-Id: (\S+)\r\n", body[:hl]).group(1)
            out.append((m.group(1).decode(), int(m.group(2)), int(m.group(3)), mid))
            pos = m.end() + total + 2
        return out

    def sent(self) -> list[tuple[str, int, int, bytes]]:
        """:meth:`commands`, then clears the buffer."""
        out = self.commands()
        self._pending.clear()
        self._pending_data_size = 0
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
            if len(nc.commands()) >= 2:
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


# -- the client-side fast paths: nats-py's real parser, a recording transport ------------------

class RecordingTransport:
    def __init__(self) -> None:
        self.written = bytearray()

    def writelines(self, chunks) -> None:
        self.written += b"".join(chunks)


class ParsingClient(FakeClient):
    """FakeClient with nats-py's protocol parser and a transport: the
    pipeline's ack parser and its direct socket writes are in play."""

    def __init__(self) -> None:
        from nats.protocol.parser import Parser
        super().__init__()
        self._ps = Parser(self)
        self._transport = RecordingTransport()
        self.other: list[tuple[int, bytes, bytes, bytes | None]] = []
        self.pings = 0

    async def _process_msg(self, sid, subject, reply, data, headers):
        self.other.append((sid, bytes(subject), bytes(data), headers))

    async def _process_ping(self) -> None:
        self.pings += 1

    async def _process_pong(self) -> None:
        pass

    async def _process_info(self, info) -> None:
        pass

    async def _process_err(self, err) -> None:
        pass


def _wire_ack(seq: int, attempt: int = 1, dup: bool = False) -> bytes:
    body = b'{"stream":"S","seq":%d%s}' % (seq + 1, b',"duplicate":true' if dup else b"")
    return b"MSG _INBOX.t.%d.%d 1 %d\r\n%s\r\n" % (seq, attempt, len(body), body)


@pytest.mark.parametrize("seed", range(40))
def test_acks_split_anywhere_among_other_traffic_are_taken_once(seed):
    """The bytes from the server cut at random points, our acks mixed with a
    PING, another subscription's messages and 503 status replies: every ack
    counts once, every other message reaches nats-py, nothing stays behind."""
    import random
    rnd = random.Random(seed)

    async def main():
        nc = ParsingClient()
        commits = []
        p = await AckPipeline(nc, ack_timeout=30, backoff=(0.0, 0.0),
                              on_commit=commits.append).start()
        n = rnd.randint(1, 200)
        for i in range(n):
            p.put(i, b"s.x", b"p%d" % i, build_headers(f"r:{i}"), ("c", i))
        wire = bytearray()
        others = pings = dups = failures = 0
        order = list(range(n))
        rnd.shuffle(order)
        for i in order:
            k = rnd.random()
            if k < 0.05:
                wire += b"PING\r\n"
                pings += 1
            elif k < 0.10:
                wire += b"MSG other.subject 9 5\r\nhello\r\n"
                others += 1
            elif k < 0.13:
                wire += b"HMSG other.h 9 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
                others += 1
            elif k < 0.16:
                wire += b"HMSG _INBOX.t.%d.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n" % i
                failures += 1
            dup = rnd.random() < 0.1
            dups += dup
            wire += _wire_ack(i, dup=dup)
        data, pos = bytes(wire), 0
        while pos < len(data):
            step = rnd.choice([1, 2, 3, 7, 40, 100, 1000, 1 << 20])
            await nc._ps.parse(data[pos:pos + step])
            pos += step
        assert p.stats["acked"] == n and p.in_flight == 0
        assert p.stats["duplicate_ack"] == dups
        assert p.stats["no_responders"] == failures
        assert commits[-1] == ("c", n - 1) and commits == sorted(commits)
        assert nc.pings == pings and len(nc.other) == others
        assert not nc._ps.buf
        await p.close()
        assert "parse" not in vars(nc._ps) and "_process_msg" not in vars(nc)
    run(main())


def test_a_full_pending_buffer_is_written_at_once_in_order():
    """Past 64 KiB of pending commands the pipeline hands the buffer to the
    transport itself, after what nats-py queued before it; the rest waits
    for the client's flusher."""
    async def main():
        nc = ParsingClient()
        p = await AckPipeline(nc, ack_timeout=30).start()
        nc._pending.append(b"PUB other 2\r\nhi\r\n")
        nc._pending_data_size += 17
        body = b"x" * 1000
        for i in range(100):
            p.put(i, b"s.x", body, build_headers(f"r:{i}"), i)
        written = bytes(nc._transport.written)
        assert written.startswith(b"PUB other 2\r\nhi\r\n")
        assert len(written) >= 64 << 10
        first_left = nc.commands()[0][1]
        assert written.count(b"HPUB s.x ") == first_left   # none lost, none twice
        assert [s[1] for s in nc.sent()] == list(range(first_left, 100))
        await p.close()
    run(main())


def test_entries_still_referenced_are_not_reused():
    """Entries leave the window into a pool that put() reuses: never one a
    pending verify call holds, nor one still on the retry queue."""
    async def main():
        release = asyncio.Event()
        handed: list = []

        async def verify(entries):
            handed.extend(entries)
            await release.wait()
            return set()
        p, nc = await _pipe(horizon_s=0.0, verify=verify)
        await _submit(p, [1, 2])
        nc.sent()
        await _reply(nc, no_responders(1))   # 1 on the retry queue; 2 just unacked
        for _ in range(1000):
            await asyncio.sleep(0.001)
            if handed:
                break
        assert sorted(e.seq for e in handed) == [1, 2]
        # Acked (late successes) while verify is pending: out of the window...
        await _reply(nc, ok(1))
        await _reply(nc, ok(2))
        assert p.in_flight == 0
        # ...but the entries verify holds are not handed to new frames.
        await _submit(p, range(10, 20))
        assert sorted(e.seq for e in handed) == [1, 2]
        release.set()
        await settle()
        await p.close()
    run(main())


def test_an_entry_on_the_retry_queue_is_not_reused():
    async def main():
        p, nc = await _pipe(backoff=(30.0, 30.0))    # the retry stays queued
        await _submit(p, [1])
        nc.sent()
        e1 = p._by_seq[1]
        await _reply(nc, err(1, 1))                 # queued for a resend
        assert e1.queued
        await _reply(nc, ok(1, 1, dup=True))        # then acked: leaves the window
        assert p.in_flight == 0
        await _submit(p, range(2, 12))
        assert e1.seq == 1 and all(p._by_seq[s] is not e1 for s in range(2, 12))
        await p.close()
    run(main())
