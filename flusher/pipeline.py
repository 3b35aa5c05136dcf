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
* Each send has its own deadline ``now + ack_timeout``.  Deadlines are
  appended in send order with one constant timeout, so one deque kept in
  deadline order serves as the timer wheel.
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

from ring.errors import PublishError

log = logging.getLogger("capture.publisher")

_OK_PREFIX = b'{"stream":'
_CRLF = b"\r\n"


class PipelineClosed(PublishError):
    """submit() after close()."""


class Entry:
    """One frame in flight.  ``seq`` keys it; ``commit`` is returned once the
    frame and everything submitted before it are acknowledged."""

    __slots__ = ("seq", "subject", "payload", "hdr", "commit", "attempt", "acked",
                 "first_sent", "not_before", "queued", "size", "ts")

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
        self.not_before = 0.0     # backoff: earliest resend
        self.queued = False       # on the retry queue
        self.size = len(payload) + len(hdr)


VerifyFn = Callable[[list[Entry]], Awaitable[set[int]]]


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
        nc: a connected nats-py client (see :func:`flusher.stream.connect`).
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
        self._timers: collections.deque[tuple[float, int, int]] = collections.deque()
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
        # Global backoff after failure replies: the whole pipeline holds its
        # sends, so a stream without a leader is not hit by a window's worth of
        # resends at every retry round.  Reset by the first success.
        self._pause_until = 0.0
        self._pause_level = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> "AckPipeline":
        self._inbox = self.nc.new_inbox()
        self._inbox_b = self._inbox.encode()
        self._prefix_len = len(self._inbox) + 1
        self._sub = await self.nc.subscribe(self._inbox + ".*.*", cb=self._on_reply_msg,
                                            pending_msgs_limit=1 << 20,
                                            pending_bytes_limit=256 << 20)
        self._install_fast_replies()
        self._task = asyncio.get_running_loop().create_task(self._timer_loop(), name="ack-timers")
        return self

    def _install_fast_replies(self) -> None:
        """Take this subscription's replies straight from the protocol parser.

        nats-py turns every MSG into a Msg object, queues it and hands it to
        a per-subscription task; for one small ack per published frame that
        is most of the cost.  The client's ``_process_msg`` is wrapped on this
        instance only: replies to our inbox go to :meth:`_on_reply`, all else
        to nats-py as before.  The subscription stays registered, so nats-py
        still re-subscribes it after a reconnect.
        """
        nc = self.nc
        sid = getattr(self._sub, "_id", None)
        orig = getattr(nc, "_process_msg", None)
        if sid is None or orig is None or not self._fast:
            return
        on_reply = self._on_reply

        async def process_msg(s, subject, reply, data, headers, _orig=orig):
            if s == sid:
                on_reply(subject, data, headers)
                return None
            return await _orig(s, subject, reply, data, headers)

        self._orig_process_msg = orig
        nc._process_msg = process_msg

    async def close(self) -> None:
        self._closed = True
        if getattr(self, "_orig_process_msg", None) is not None:
            self.nc._process_msg = self._orig_process_msg
            self._orig_process_msg = None
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
            log.warning("publisher: %s%s (logged once; see stats for counts)", kind,
                        f": {detail}" if detail else "")

    def log_summary(self) -> dict[str, int]:
        """Log (at INFO) and return the event counts since the last summary."""
        now = self.stats
        delta = {k: v - self._reported[k] for k, v in now.items() if v != self._reported[k]}
        if delta:
            log.info("publisher events since last summary: %s",
                     ", ".join(f"{k}={v}" for k, v in sorted(delta.items())))
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
        e = Entry(seq, subject, payload, hdr, commit, ts)
        by_seq = self._by_seq
        if seq in by_seq:
            raise PublishError(f"sequence {seq} is already in flight")
        by_seq[seq] = e
        self._order.append(e)
        self._bytes += e.size
        if self._empty.is_set():
            self._empty.clear()
        self._send(e)

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
        now = time.monotonic()
        if not nc.is_connected or now < self._pause_until:
            # Not buffered by the client / backing off: keep it for later.
            self._schedule_retry(e, now=now, count=None)
            return
        e.attempt += 1
        if not e.first_sent:
            e.first_sent = now
        if self._fast:
            # What nats-py's publish() queues, built in one step: the pending
            # buffer, then a kick to the client's flusher task if it is idle.
            hdr = e.hdr
            hl = len(hdr)
            cmd = b"HPUB %s %s.%d.%d %d %d\r\n%s%s\r\n" % (
                e.subject, self._inbox_b, e.seq, e.attempt, hl, hl + len(e.payload), hdr,
                e.payload)
            nc._pending.append(cmd)
            nc._pending_data_size += len(cmd)
            fq = nc._flush_queue
            if fq is not None and fq.empty():
                fq.put_nowait(asyncio.get_running_loop().create_future())
        else:   # pragma: no cover - a client without the internals we use
            asyncio.ensure_future(self._send_public(e, f"{self._inbox}.{e.seq}.{e.attempt}"))
        self._timers.append((now + self.ack_timeout, e.seq, e.attempt))
        self._n_sent += 1
        if e.attempt > 1:
            self._n_resent += 1

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
        # A failure: a status line (503 no responders) or a JSON error.
        try:
            attempt = int(a)
        except ValueError:
            attempt = -1
        kind, detail = _classify_error(data, hdr)
        self._event(kind, detail=detail)
        now = time.monotonic()
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
        while order and order[0].acked:
            e = order.popleft()
            self._by_seq.pop(e.seq, None)
            self._bytes -= e.size
            moved = e
        if moved is None:
            return
        self.committed = moved.commit
        self.committed_seq = moved.seq
        if self.on_commit is not None and moved.commit is not None:
            self.on_commit(moved.commit)
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
        timers, retry = self._timers, self._retry
        while not self._closed:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _, seq, attempt = timers.popleft()
                e = self._by_seq.get(seq)
                if e is not None and not e.acked and e.attempt == attempt and not e.queued:
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
