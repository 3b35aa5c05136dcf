"""``capture replay --to-nats``: a recording republished into JetStream, as the publisher would.

The :class:`Republisher` *is* the shard's publisher
(:class:`flusher.publisher.publish.Publisher`) with the segment files as its
only source: the same subject rule (the venue's route extractor, control
records to ``{prefix}.{venue}.control.shard-{N}``, the unroutable to
``.unrouted``), the same oversize notice, the same headers and the same
``Nats-Msg-Id`` (``<ring id>:<seq>``, bound per ring from each segment's
header).  So a replay into a stream that already holds the data adds
nothing: within the stream's duplicate window JetStream drops the repeats;
for data older than the publisher's horizon it first reads back which
sequences of that ring the stream holds and skips them (the publisher's
restart rule, :meth:`flusher.publisher.session.ReadBack.first_check`).
Everything is republished: data and control records alike, as the publisher
put them on the bus.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterator

from capture.publish import venue_routing
from flusher.publisher.pipeline import AckPipeline
from flusher.publisher.publish import Publisher
from flusher.publisher.stream import BusConfig
from flusher.segments.walk import Msg

log = logging.getLogger("capture.replay")


class Republisher(Publisher):
    """One shard's messages from segment files onto JetStream (see the module docstring).

    Args:
        venue, shard: the shard the messages belong to (subjects, headers).
        bus: NATS settings (:func:`flusher.publisher.stream.parse_config`).
        speed: pacing, as for the WebSocket replay (None: as fast as acks allow).
        subject_fn: raw payload -> subject, the venue's (``capture.venues.subject_fn``).
    """

    def __init__(self, *, venue: str, shard: int, bus: BusConfig, speed: float | None = None,
                 subject_fn=None, fanout_fn=None, window: int = 8192, ack_timeout: float = 5.0,
                 drain_timeout: float = 60.0) -> None:
        # The shard publisher's own routing (the venue registry's: subjects, and
        # the split of multi-market array frames, so those frames get the same
        # per-event Msg-Ids), unless a test gives its own.
        routing = venue_routing(bus.prefix, venue, shard)
        super().__init__("", venue=venue, shard=shard, bus=bus, segments=None,
                         subject_fn=subject_fn or routing.subject_fn,
                         fanout_fn=fanout_fn or routing.fanout_fn, exchange_ts=routing.exchange_ts,
                         window=window, ack_timeout=ack_timeout, drain_timeout=drain_timeout,
                         client_name=f"capture-replay-{venue}-{shard}")
        self.speed = speed
        self.messages = 0

    async def republish(self, messages: Iterator[Msg]) -> bool:
        """Publish every message, wait for the acks.  True when all were acknowledged.

        Raises:
            NatsAuthError, NatsTLSError, StreamMismatch: as the publisher.
        """
        # Unlike the shard's publisher, a command gives up: a few attempts per
        # server, then NatsUnreachable (or NatsAuthError) for the caller to print.
        session, readback = self.session, self.readback
        await session.connect_once(attempts=3)
        try:
            await session.ensure_stream_forever()
            self.pipe = await AckPipeline(
                session.nc, window=self.window, window_bytes=self.window_bytes,
                ack_timeout=self.ack_timeout, horizon_s=self.bus.horizon_s,
                verify=readback.verify, on_commit=lambda _token: None).start()
            ring = None
            wall0 = ts0 = None
            for m in messages:
                if m.header.ring_id != ring:
                    if ring is not None:
                        # Sequences start afresh with a new ring: the pipeline keys
                        # frames by sequence, so the old ring's must be done first.
                        await self.pipe.drain(self.drain_timeout)
                    ring = m.header.ring_id
                    # Data of this ring may be in the stream from longer ago than
                    # de-duplication reaches: the publisher's restart check.
                    self.bind_ring(ring, resumed=True)
                if not readback.checked:
                    await readback.first_check(m.seq, m.ts_ns)
                if self.speed is not None:
                    if wall0 is None:
                        wall0, ts0 = time.monotonic(), m.ts_ns
                    ahead = wall0 + (m.ts_ns - ts0) / 1e9 / self.speed - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if not self.pipe.has_room():
                    await self._wait_room()
                self._publish(m.seq, m.ts_ns, m.type, m.payload, None)
                self.messages += 1
                if not self.messages & 1023:
                    await asyncio.sleep(0)      # let the acks in
            return await self.pipe.drain(self.drain_timeout)
        finally:
            if self.pipe is not None:
                self.pipe.log_summary()
            await self._close()

    def summary(self) -> dict[str, int]:
        st = self.all_stats()
        return {"messages": self.messages, "acked": st.get("pipeline.acked", 0),
                "already_in_stream": st.get("pipeline.duplicate_ack", 0) + st.get("already_stored", 0),
                "unrouted": st.get("unrouted", 0), "oversize": st.get("oversize", 0)}


__all__ = ["Republisher"]
