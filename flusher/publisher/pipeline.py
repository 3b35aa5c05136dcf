"""The acknowledged JetStream publish pipeline.

Theory of operation
-------------------
JetStream acknowledges each stored message by replying to the publish's reply
subject.  nats-py's ``publish_async`` futures have no deadline, and an error
reply can leave one pending forever, so the pipeline does its own matching:

* One wildcard inbox subscription per pipeline, ``<inbox>.*.*``; every publish
  goes out as a core ``HPUB`` with reply ``<inbox>.<seq>.<attempt>``.  The
  reply subject alone says which frame and which attempt an answer is for.
* A bounded window (frames and bytes) of publishes in flight.  ``submit``
  waits for room: a publisher that cannot get acks stops reading the ring, and
  the ring laps it (it catches up from the segment files later).
* Each send has its own deadline ``sent + ack_timeout``.  With one constant
  timeout, deadlines come in send order, so a deque serves as the timer
  wheel; sends within one short grain (a few ms at most, never more than a
  tenth of the timeout) share one record, which fires when the last of them
  is due, so no deadline fires early and none more than one grain late.
* Writing and reading are batched: HPUB commands go to the client's pending
  buffer and are written to the socket whenever 64 KiB have accumulated (so
  the server works while the publisher is still producing), the rest when
  the loop yields.  Runs of our acks are taken from the client's parser
  buffer with one regular-expression pass each, the committed point is moved
  once per run, and anything else (status replies, other subscriptions'
  messages, PING) goes through nats-py's parser as before.
* A success reply for *any* attempt acknowledges the frame (all attempts carry
  the same ``Nats-Msg-Id``; a ``duplicate`` reply means an earlier attempt was
  stored).  An error reply (503 no responders, JSON error such as "maximum
  messages exceeded") or a missed deadline of the *current* attempt puts the
  frame on the retry queue with exponential backoff; the resend uses the same
  Msg-Id.  Answers to superseded attempts are ignored unless they are
  successes.
* Frames leave the window in submission order only: the committed point
  (``committed``) is the commit token of the last frame of the longest fully
  acknowledged prefix.  A frame acked out of order waits for its elders.
* The catch-up horizon: JetStream de-duplicates a Msg-Id only within the
  stream's duplicate window.  A frame first sent longer ago than ``horizon_s``
  is not resent blind: the pipeline pauses its retries, asks ``verify`` (the
  publisher reads back what the stream holds for this shard) which of those
  frames are stored, counts those as acknowledged and resends only the rest.
* Disconnected: nothing is sent (the client is configured not to buffer);
  on reconnect every frame still unacknowledged is resent at once (acks in
  flight during the outage are lost; duplicates are dropped by the stream).

Every abnormal event is counted in ``stats`` and logged once per kind, not
per message (``log_summary`` reports the counts since the last summary).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import Any, Awaitable, Callable, Iterable

import orjson
from nats.aio.client import Client

from flusher.publisher.client_hooks import ClientHooks
from common.errors import PipelineClosed, PublishError  # noqa: F401
from common.log import event as log_event

log = logging.getLogger("capture.publisher")

_OK_PREFIX = b'{"stream":'
_CRLF = b"\r\n"
_monotonic = time.monotonic
# Pending bytes that trigger an immediate socket write (see _queue_hpub).
_FLUSH_BYTES = 64 << 10
# Longest span of sends that share one deadline record (see _record_deadline).
_TIMER_GRAIN = 0.005


class Entry:
    """One frame in flight.  ``seq`` keys it; ``commit`` is returned once the
    frame and everything submitted before it are acknowledged."""

    __slots__ = ("seq", "subject", "payload", "hdr", "commit", "attempt", "acked",
                 "first_sent", "sent", "not_before", "queued", "size", "ts")

    @property
    def first_sent_wall(self) -> float:
        """Wall-clock time (s) of the first send, derived from the monotonic one."""
        return time.time() - (time.monotonic() - self.first_sent)

    def __init__(self, seq: int, subject: bytes, payload: bytes, hdr: bytes, commit: Any,
                 ts: int = 0) -> None:
        self.seq = seq
        self.ts = ts              # receive time (ns), for recv-to-ack latency
        self.subject = subject
        self.payload = payload
        self.hdr = hdr
        self.commit = commit
        self.attempt = 0          # attempts sent so far; the current attempt's number
        self.acked = False
        self.first_sent = 0.0     # monotonic time of the first send (0: never sent)
        self.sent = 0.0           # monotonic time of the current attempt's send
        self.not_before = 0.0     # backoff: earliest resend
        self.queued = False       # on the retry queue
        self.size = len(payload) + len(hdr)


VerifyFn = Callable[[list[Entry]], Awaitable[set[int]]]

# Entries that left a window, reused by put(): one Entry per frame would
# otherwise be most of what drives the cyclic garbage collector.  An entry is
# pooled only when nothing can still hold it: it is acknowledged and out of
# the window and the by-seq map, not on the retry queue, and no verify call
# (which is handed entries across an await) is pending (see _advance).
_POOL: list[Entry] = []
_POOL_MAX = 1 << 16


def build_headers(msg_id: str, fields: Iterable[tuple[str, object]] = ()) -> bytes:
    """NATS header block (``NATS/1.0`` ... blank line) with Nats-Msg-Id first."""
    out = [b"NATS/1.0\r\nNats-Msg-Id: ", msg_id.encode(), _CRLF]
    for k, v in fields:
        out += [k.encode(), b": ", str(v).encode(), _CRLF]
    out.append(_CRLF)
    return b"".join(out)


class AckPipeline:
    """Acknowledged, de-duplicated publishing with a bounded window.

    Args:
        nc: a connected nats-py client (see :func:`flusher.publisher.stream.connect`).
        window: frames in flight at most.
        window_bytes: payload+header bytes in flight at most (one larger frame
            is always admitted into an empty window).
        ack_timeout: seconds to wait for each attempt's ack.
        backoff: (first, cap) seconds between attempts of one frame.
        horizon_s: the catch-up horizon (see the module docstring).
        verify: async callable(entries) -> set of seqs already stored; needed
            for resends beyond the horizon.  Without it such frames are resent
            blind (and counted as ``beyond_horizon_blind``).
        on_commit: called with the new commit token whenever ``committed`` moves.
    """

    def __init__(self, nc: Client, *, window: int = 8192, window_bytes: int = 64 << 20,
                 ack_timeout: float = 5.0, backoff: tuple[float, float] = (0.05, 2.0),
                 horizon_s: float = 120.0, verify: VerifyFn | None = None,
                 on_commit: Callable[[Any], None] | None = None) -> None:
        self.nc = nc
        self.window = window
        self.window_bytes = window_bytes
        self.ack_timeout = ack_timeout
        self.backoff = backoff
        self.horizon_s = horizon_s
        self.verify = verify
        self.on_commit = on_commit
        self._stats: collections.Counter[str] = collections.Counter()
        self._n_sent = self._n_resent = self._n_acked = 0    # hot counters, kept apart
        self.latencies: list[int] | None = None   # set to a list to record recv-to-ack ns
        self._reported: collections.Counter[str] = collections.Counter()
        self._logged: set[str] = set()
        self._by_seq: dict[int, Entry] = {}
        self._order: collections.deque[Entry] = collections.deque()
        # (deadline, end, [seq, ...]): the sends in [end - grain, end), in deadline order
        self._timers: collections.deque[tuple[float, float, list[int]]] = collections.deque()
        self._tb: list[int] = []          # the record being filled
        self._tb_end = 0.0                # sends before this time join it
        self._grain = min(_TIMER_GRAIN, ack_timeout / 10)
        self._retry: collections.deque[Entry] = collections.deque()
        self._bytes = 0
        self.committed: Any = None
        self.committed_seq: int | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._wake = asyncio.Event()
        self._inbox = ""
        self._prefix_len = 0
        self._sub = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self._verifying = False
        self._fast = hasattr(nc, "_send_command") and hasattr(nc, "_flush_queue")
        self._hooks: ClientHooks | None = None   # our wrappers of the client's internals
        # Global backoff after failure replies: the whole pipeline holds its
        # sends, so a stream without a leader is not hit by a window's worth of
        # resends at every retry round.  Reset by the first success.
        self._pause_until = 0.0
        self._pause_level = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> "AckPipeline":
        self._inbox = self.nc.new_inbox()
        self._inbox_b = self._inbox.encode()
        # The HPUB line of a first attempt: subject, seq, header length, total length
        self._hpub1 = b"HPUB %s " + self._inbox_b.replace(b"%", b"%%") + b".%d.1 %d %d\r\n"
        self._prefix_len = len(self._inbox) + 1
        self._sub = await self.nc.subscribe(self._inbox + ".*.*", cb=self._on_reply_msg,
                                            pending_msgs_limit=1 << 20,
                                            pending_bytes_limit=256 << 20)
        sid = getattr(self._sub, "_id", None)
        if self._fast and sid is not None:
            self._hooks = ClientHooks(self.nc, sid, self._inbox_b, self._on_reply, self._take_acks)
            self._hooks.install()
        self._task = asyncio.get_running_loop().create_task(self._timer_loop(), name="ack-timers")
        return self

    async def close(self) -> None:
        self._closed = True
        if self._hooks is not None:
            self._hooks.remove()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection may already be gone
                pass
        self._room.set()

    # -- state --------------------------------------------------------------------------------
    @property
    def stats(self) -> collections.Counter[str]:
        """Event counts: sent, resent, acked, duplicate_ack, late_ack, ack_timeout,
        no_responders, stream_full, publish_error, verify_scan, verified_stored, ..."""
        c = collections.Counter(self._stats)
        for k, v in (("sent", self._n_sent), ("resent", self._n_resent),
                     ("acked", self._n_acked)):
            if v:
                c[k] = v
        return c

    @property
    def in_flight(self) -> int:
        return len(self._order)

    def _event(self, kind: str, n: int = 1, detail: str = "") -> None:
        """Count an event; log only the first of each kind (then summaries)."""
        self._stats[kind] += n
        if kind not in self._logged:
            self._logged.add(kind)
            log_event(log, kind, logging.WARNING, **({"detail": detail} if detail else {}),
                      logged="once per kind; see the stats for counts")

    def log_summary(self) -> dict[str, int]:
        """Log (at INFO) and return the event counts since the last summary."""
        now = self.stats
        delta = {k: v - self._reported[k] for k, v in now.items() if v != self._reported[k]}
        if delta:
            log_event(log, "pipeline_summary", since_last=dict(sorted(delta.items())))
            self._reported = now
        return delta

    # -- submitting ---------------------------------------------------------------------------
    def has_room(self, size: int = 0) -> bool:
        return len(self._order) < self.window and (
            not self._order or self._bytes + size <= self.window_bytes)

    async def wait_room(self, size: int = 0) -> None:
        """Wait until a frame of ``size`` bytes fits in the window."""
        while not self.has_room(size):
            self._room.clear()
            await self._room.wait()
            if self._closed:
                raise PipelineClosed("pipeline closed")

    async def submit(self, seq: int, subject: bytes | str, payload: bytes, hdr: bytes,
                     commit: Any = None, ts: int = 0) -> None:
        """Queue one frame; waits for room in the window.

        ``hdr`` is a complete NATS header block (see :func:`build_headers`);
        ``seq`` must be unique among frames in flight.
        """
        if self._closed:
            raise PipelineClosed("pipeline closed")
        if subject.__class__ is str:
            subject = subject.encode()
        if not self.has_room(len(payload) + len(hdr)):
            await self.wait_room(len(payload) + len(hdr))
        self.put(seq, subject, payload, hdr, commit, ts)

    def put(self, seq: int, subject: bytes, payload: bytes, hdr: bytes, commit: Any = None,
            ts: int = 0) -> None:
        """Queue one frame without waiting: the caller checked :meth:`has_room`
        (or accepts overfilling the window by this frame)."""
        by_seq = self._by_seq
        if seq in by_seq:
            raise PublishError(f"sequence {seq} is already in flight")
        if _POOL:
            e = _POOL.pop()
            e.__init__(seq, subject, payload, hdr, commit, ts)
        else:
            e = Entry(seq, subject, payload, hdr, commit, ts)
        by_seq[seq] = e
        order = self._order
        if not order:
            self._empty.clear()
        order.append(e)
        self._bytes += e.size
        nc = self.nc
        now = _monotonic()
        if not self._fast or now < self._pause_until or not nc.is_connected:
            self._send(e)
            return
        # The first send without _send's checks (the common case), with the
        # HPUB line from the per-pipeline template.
        e.attempt = 1
        e.first_sent = e.sent = now
        hl = len(hdr)
        self._queue_hpub(self._hpub1 % (subject, seq, hl, hl + len(payload)), hdr, payload)
        self._record_deadline(seq, now)
        self._n_sent += 1

    def ack_local(self, seq: int, subject: str = "", commit: Any = None) -> None:
        """Account a frame that needs no publish (already stored: found by a
        verify scan) so the committed point can move past it."""
        e = Entry(seq, subject.encode(), b"", b"", commit)
        e.acked = True
        self._order.append(e)
        self._empty.clear()
        self._advance()

    def _send(self, e: Entry) -> None:
        nc = self.nc
        now = _monotonic()
        if not nc.is_connected or now < self._pause_until:
            # Not buffered by the client / backing off: keep it for later.
            self._schedule_retry(e, now=now, count=None)
            return
        e.attempt += 1
        if not e.first_sent:
            e.first_sent = now
        e.sent = now
        if self._fast:
            hl = len(e.hdr)
            self._queue_hpub(b"HPUB %s %s.%d.%d %d %d\r\n" % (
                e.subject, self._inbox_b, e.seq, e.attempt, hl, hl + len(e.payload)), e.hdr, e.payload)
        else:   # pragma: no cover - a client without the internals we use
            asyncio.ensure_future(self._send_public(e, f"{self._inbox}.{e.seq}.{e.attempt}"))
        self._record_deadline(e.seq, now)
        self._n_sent += 1
        if e.attempt > 1:
            self._n_resent += 1

    def _queue_hpub(self, line: bytes, hdr: bytes, payload: bytes) -> None:
        """What nats-py's publish() queues: the pending buffer, then a kick to
        the client's flusher task if it is idle.  The command goes in as
        pieces (line, header, payload, CRLF), so the payload is copied once,
        when the pending list is joined.  Past 64 KiB pending, the buffer is
        written at once: the server starts storing while we are still
        producing, instead of after the whole batch."""
        nc = self.nc
        nc._pending += (line, hdr, payload, _CRLF)
        size = nc._pending_data_size + len(line) + len(hdr) + len(payload) + 2
        nc._pending_data_size = size
        if size < _FLUSH_BYTES or not self._write_now():
            fq = nc._flush_queue
            if fq is not None and fq.empty():
                fq.put_nowait(asyncio.get_running_loop().create_future())

    def _record_deadline(self, seq: int, now: float) -> None:
        """Sends within one grain share a deadline record that fires when the
        last of them is due (see the timer loop)."""
        if now < self._tb_end:
            self._tb.append(seq)
        else:
            self._tb = tb = [seq]
            self._tb_end = end = now + self._grain
            self._timers.append((end + self.ack_timeout, end, tb))

    def _write_now(self) -> bool:
        """Hand the client's whole pending buffer (ours and anything nats-py
        queued before it, in order) to the transport.  False: not possible
        now (no transport); the client's flusher will write it."""
        nc = self.nc
        tr = getattr(nc, "_transport", None)
        if tr is None or not nc.is_connected:
            return False
        pending = nc._pending
        try:
            tr.writelines(pending)
        except Exception as exc:  # noqa: BLE001 - the connection is failing: resent on deadline
            self._event("send_error", detail=repr(exc))
        nc._pending = []
        nc._pending_data_size = 0
        return True

    async def _send_public(self, e: Entry, reply: str) -> None:
        hdrs = {}
        for line in e.hdr.split(_CRLF)[1:]:
            if line:
                k, _, v = line.partition(b": ")
                hdrs[k.decode()] = v.decode()
        try:
            await self.nc.publish(e.subject.decode(), e.payload, reply=reply, headers=hdrs)
        except Exception as exc:  # noqa: BLE001 - counted, resent on deadline
            self._event("send_error", detail=repr(exc))

    # -- replies ------------------------------------------------------------------------------
    async def _on_reply_msg(self, msg: Any) -> None:
        """Replies that came through nats-py's subscription (no fast path)."""
        hdr = b""
        if msg.headers and msg.headers.get("Status"):
            hdr = b"NATS/1.0 %s\r\n\r\n" % msg.headers["Status"].encode()
        self._on_reply(msg.subject.encode(), msg.data, hdr)

    def _on_reply(self, subject: bytes, data: bytes, hdr: bytes | None) -> None:
        s, _, a = subject[self._prefix_len:].partition(b".")
        try:
            seq = int(s)
        except ValueError:
            self._event("bad_reply_subject", detail=repr(subject))
            return
        e = self._by_seq.get(seq)
        if data.startswith(_OK_PREFIX) and b'"error"' not in data:
            if e is None or e.acked:
                self._stats["late_ack"] += 1
                return
            if b'"duplicate"' in data:
                self._stats["duplicate_ack"] += 1
            self._n_acked += 1
            self._pause_level = 0
            if self.latencies is not None and e.ts:
                self.latencies.append(time.time_ns() - e.ts)
            e.acked = True
            e.payload = b""       # nothing to resend any more: free it now
            if self._order[0] is e:
                self._advance()
            return
        self._on_failure(e, a, data, hdr)

    def _take_acks(self, acks: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        """A run of replies from the fast parser: (seq, attempt, length, body)
        each.  Same rules as :meth:`_on_reply`; the committed point moves once."""
        by_seq = self._by_seq
        lat = self.latencies
        now_ns = time.time_ns() if lat is not None else 0
        n_ok = late = dup = 0
        reset = False       # a success since the last failure: the global backoff restarts
        for s, a, n, d in acks:
            if len(d) != int(n):
                # Not what the server sends (acks are one JSON line): let
                # nats-py reconnect; every frame still unacked is resent.
                from nats.errors import ProtocolError
                raise ProtocolError("nats: malformed ack")
            e = by_seq.get(int(s))
            if d.startswith(_OK_PREFIX) and b'"error"' not in d:
                if e is None or e.acked:
                    late += 1
                    continue
                if b'"duplicate"' in d:
                    dup += 1
                n_ok += 1
                reset = True
                if lat is not None and e.ts:
                    lat.append(now_ns - e.ts)
                e.acked = True
                e.payload = b""
            else:
                if reset:
                    self._pause_level = 0
                    reset = False
                self._on_failure(e, a, d, None)
        if reset:
            self._pause_level = 0
        if late:
            self._stats["late_ack"] += late
        if dup:
            self._stats["duplicate_ack"] += dup
        if n_ok:
            self._n_acked += n_ok
            order = self._order
            if order and order[0].acked:
                self._advance()

    def _on_failure(self, e: Entry | None, a: bytes, data: bytes, hdr: bytes | None) -> None:
        """A failure reply: a status line (503 no responders) or a JSON error."""
        try:
            attempt = int(a)
        except ValueError:
            attempt = -1
        kind, detail = _classify_error(data, hdr)
        self._event(kind, detail=detail)
        now = _monotonic()
        if now >= self._pause_until:
            self._pause_until = now + min(self.backoff[0] * (2 ** self._pause_level),
                                          self.backoff[1])
            self._pause_level = min(self._pause_level + 1, 16)
        if e is None or e.acked or attempt != e.attempt:
            return
        self._schedule_retry(e, now)

    def _advance(self) -> None:
        order = self._order
        moved = None
        pool = _POOL if not self._verifying and len(_POOL) < _POOL_MAX else None
        by_seq = self._by_seq
        while order and order[0].acked:
            e = order.popleft()
            by_seq.pop(e.seq, None)
            self._bytes -= e.size
            if moved is not None and pool is not None and not moved.queued:
                pool.append(moved)
            moved = e
        if moved is None:
            return
        self.committed = commit = moved.commit
        self.committed_seq = moved.seq
        if pool is not None and not moved.queued:
            pool.append(moved)
        if self.on_commit is not None and commit is not None:
            self.on_commit(commit)
        if len(order) < self.window and (not order or self._bytes < self.window_bytes):
            self._room.set()
        if not order:
            self._empty.set()

    # -- retries and deadlines ----------------------------------------------------------------
    def _schedule_retry(self, e: Entry, now: float, count: str | None = "retry") -> None:
        if e.queued or e.acked:
            return
        n = max(e.attempt, 1)
        e.not_before = now + min(self.backoff[0] * (2 ** (n - 1)), self.backoff[1])
        e.queued = True
        self._retry.append(e)
        self._wake.set()

    def on_disconnected(self) -> None:
        self._event("disconnected")

    def on_reconnected(self) -> None:
        """Acks in flight across a reconnect are lost: resend everything unacked now."""
        self._event("reconnected")
        now = time.monotonic()
        for e in self._order:
            if not e.acked and not e.queued:
                e.queued = True
                e.not_before = now
                self._retry.append(e)
        self._wake.set()

    async def _timer_loop(self) -> None:
        # A record fires at end + ack_timeout: no earlier than each of its
        # sends is due, at most one grain later.
        timers, retry = self._timers, self._retry
        while not self._closed:
            now = _monotonic()
            while timers and timers[0][0] <= now:
                _, end, seqs = timers.popleft()
                if seqs is self._tb:
                    self._tb_end = 0.0
                by_seq = self._by_seq
                for seq in seqs:
                    e = by_seq.get(seq)
                    # e.sent >= end: the frame was sent again later; that
                    # attempt has its own record.
                    if e is not None and not e.acked and not e.queued and e.sent < end:
                        self._event("ack_timeout", detail=f"no ack within {self.ack_timeout}s")
                        self._schedule_retry(e, now)
            if (retry and self.nc.is_connected and not self._verifying
                    and now >= self._pause_until):
                await self._resend_due(now)
            # Sleep until the next deadline or resend, or a wake-up.
            nxt = now + 0.25
            if timers:
                nxt = min(nxt, timers[0][0])
            if retry:
                nxt = min(nxt, max(self._pause_until,
                                   min(r.not_before for r in itertools.islice(retry, 64))))
            self._wake.clear()
            delay = max(0.0, nxt - time.monotonic())
            if delay:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)

    async def _resend_due(self, now: float) -> None:
        retry = self._retry
        stale = now - self.horizon_s
        if any(e.first_sent and e.first_sent < stale and not e.acked for e in retry):
            await self._verify_stale(stale)
        keep: list[Entry] = []
        while retry:
            e = retry.popleft()
            if e.acked:
                e.queued = False
                continue
            if e.not_before > now:
                keep.append(e)
                continue
            e.queued = False
            self._send(e)
        retry.extend(keep)

    async def _verify_stale(self, stale: float) -> None:
        """Frames first sent beyond the horizon: ask which the stream holds."""
        entries = [e for e in self._order if not e.acked and e.first_sent and e.first_sent < stale]
        if not entries:
            return
        if self.verify is None:
            self._event("beyond_horizon_blind", len(entries),
                        "resending frames older than the horizon without a verify function")
            for e in entries:
                e.first_sent = time.monotonic()
            return
        self._verifying = True
        try:
            self._event("verify_scan", detail=f"{len(entries)} frames beyond the horizon")
            stored = await self.verify(entries)
        except Exception as exc:  # noqa: BLE001 - retried on the next round
            self._event("verify_failed", detail=repr(exc))
            return
        finally:
            self._verifying = False
        now = time.monotonic()
        for e in entries:
            if e.acked:
                continue
            if e.seq in stored:
                self._stats["verified_stored"] += 1
                e.acked = True
                e.payload = b""
            else:
                # Not in the stream: a resend now is a first send again.
                e.first_sent = now
        self._advance()

    # -- draining -----------------------------------------------------------------------------
    async def drain(self, timeout: float) -> bool:
        """Wait until every submitted frame is acknowledged (True) or timeout."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


def _classify_error(data: bytes, hdr: bytes | None) -> tuple[str, str]:
    if hdr and not data:
        status = hdr[9:12].decode(errors="replace") if hdr.startswith(b"NATS/1.0 ") else "?"
        if status == "503":
            return "no_responders", "status 503 (no stream or stream leader for the subject)"
        return "publish_error", f"status {hdr[:60]!r}"
    try:
        err = orjson.loads(data).get("error") or {}
    except Exception:  # noqa: BLE001 - anything unparseable is just an error
        return "bad_reply", repr(bytes(data[:200]))
    desc = str(err.get("description", ""))
    code = err.get("err_code")
    if code in (10077, 10047) or "exceeded" in desc or "maximum" in desc:
        return "stream_full", desc
    return "publish_error", f"{err.get('code')} {code} {desc}"
