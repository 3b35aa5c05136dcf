"""``capture replay``: a recording served as WebSocket feeds, or republished to NATS.

::

    capture replay DATA --venue kraken [--shard 2] [--start T] [--end T] [--speed 10|max]
                   [--bind 127.0.0.1] [--port 8765] [--include-control] [--skip-corrupt]
    capture replay DATA --venue kraken --to-nats nats://host:4222 [--prefix P] [--config FILE]

Paths a WebSocket client may ask for (each client gets its own replay, from
the start of the range)::

    /<venue>/<connection>     one recorded connection: ``<conn>`` when the replay
                              holds one shard, else ``<shard>.<conn>`` (e.g. /kraken/2.0)
    /<venue>                  every connection of the venue, in receive order
    ...?channel=book,trade&symbol=BTC/USD
                              only data messages of those channels / symbols (as the
                              venue module reads them; percent-encode as usual)

A plain HTTP GET (no upgrade) of ``/`` lists the connections as JSON.

Every data message goes out exactly as it was received, in the original
order: a text message as a text frame, a binary one as a binary frame, the
same bytes.  Control records (our own JSON: connection opened, drops, ...)
are left out unless ``--include-control``; then a connection's feed carries
its own records and the shard's (``conn`` 65535).  When the recording ends
the server closes the feed with code 1000.

Pacing.  With ``--speed X`` a message is sent when ``(its receive time -
the first one's) / X`` has passed since the feed started: absolute targets,
so the error does not accumulate.  ``max`` sends as fast as the client
reads; the socket's flow control (pause_writing) is what bounds it.

Theory of operation.  The server is picows (the receiver's WebSocket
library) on asyncio.  One task per client reads the segment files with
``flusher.segments.walk`` (blocking reads from the page cache, in batches:
it yields to the loop every few hundred messages at ``max`` and whenever it
waits for a pacing target or for the socket to drain), filters, and sends.
At ``max`` a batch of messages becomes one socket write of back-to-back
frames (a server's frames are unmasked, so the header is a few bytes in
front of the payload); picows writes each frame with its own ``send()``
call, which cost more than everything else per message.  Paced feeds send
each frame through picows when it is due.  Both go through the same asyncio
transport, so frames never interleave, and the close frame follows the last
batch.  A client that goes away cancels its task.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import json
import logging
import signal
import struct
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import Iterator

from picows import (WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest,
                    WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server)

from capture import venues
from common.errors import CaptureError, NoData, SegmentError
from common.log import Throttle, event as log_event, setup as setup_logging
from flusher.segments.names import parse_name
from flusher.segments.read import TimeLike, to_ns
from flusher.segments.walk import SHARD_CONN, Msg, Skipped, find_paths, no_data_in_range, walk
from ring.frame import FrameFlags, FrameType

log = logging.getLogger("capture.replay")
#: what a damaged recording repeats (a line per message or region) comes in bursts
_throttle = Throttle()

_CONTROL = int(FrameType.CONTROL)
_DATA = int(FrameType.DATA)
_BINARY = int(FrameFlags.BINARY)
DEFAULT_PORT = 8765
#: Messages (or bytes) sent at ``max`` in one socket write, between two yields to the loop.
_BATCH = 256
_BATCH_BYTES = 256 << 10
_OP_TEXT, _OP_BINARY = 0x1, 0x2
_HEAD_SHORT = struct.Struct(">BBH")
_HEAD_LONG = struct.Struct(">BBQ")


def _frame_head(opcode: int, n: int) -> bytes:
    """The header of one unmasked, final WebSocket frame of n payload bytes
    (RFC 6455 section 5.2: a server's frames are not masked)."""
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 1 << 16:
        return _HEAD_SHORT.pack(0x80 | opcode, 126, n)
    return _HEAD_LONG.pack(0x80 | opcode, 127, n)


@dataclass(frozen=True)
class Selection:
    """What one feed carries: shard/conn None = all; channel/symbol None = any."""
    shard: int | None = None
    conn: int | None = None
    channels: frozenset[str] | None = None
    symbols: frozenset[str] | None = None


def _fields(sel: Selection) -> dict:
    """A feed's selection as log fields (None: all / any)."""
    return {"feed_shard": sel.shard, "conn": sel.conn,
            "channels": None if sel.channels is None else sorted(sel.channels),
            "symbols": None if sel.symbols is None else sorted(sel.symbols)}


def parse_speed(text: str) -> float | None:
    """``max`` -> None (no pacing); a positive number -> that factor."""
    if text.strip().lower() == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--speed must be a positive number or 'max', not {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise ValueError(f"--speed must be a positive number or 'max', not {text!r}")
    return v


class Replay:
    """The recording of one venue, as feeds.

    ``clock`` and ``sleep`` are the pacing's time source (tests substitute a
    virtual clock).

    Raises (at construction):
        NoData: no segment files of the venue (and shard), or nothing in the range.
    """

    clock = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)

    def __init__(self, data: str, venue: str, *, shard: int | None = None, start: TimeLike = None,
                 end: TimeLike = None, speed: float | None = 1.0, include_control: bool = False,
                 skip_corrupt: bool = False) -> None:
        self.data, self.venue = data, venue
        self.start, self.end = to_ns(start), to_ns(end)
        self.speed = speed
        self.include_control = include_control
        self.skip_corrupt = skip_corrupt
        self.paths = find_paths(data, venue, shard)
        self.by_shard: dict[int, list[str]] = {}
        for p in self.paths:
            sn = parse_name(p)
            self.by_shard.setdefault(sn.shard if sn else -1, []).append(p)
        # Filters read channel and symbol the way the publisher routes: data
        # frames only (a subscribe ack naming the symbol is not in a symbol feed).
        v = venues.VENUES.get(venue)
        self.route = v.route if v is not None else None
        self.skipped: list[Skipped] = []
        self.clients = 0
        if next(iter(self.messages(Selection())), None) is None:
            raise no_data_in_range(self.paths, self.start, self.end)
        self._connections: list[dict] | None = None

    # -- what is there ----------------------------------------------------------------------
    def connections(self) -> list[dict]:
        """Each recorded connection in the range: path, shard, conn, messages (one pass
        over the range, on first use; cached)."""
        if self._connections is None:
            out = []
            for shard, paths in sorted(self.by_shard.items()):
                conns: dict[int, int] = {}
                for m in walk(self.data, paths=paths, start=self.start, end=self.end,
                              skip_corrupt=self.skip_corrupt):
                    if m.type != _CONTROL:
                        conns[m.conn] = conns.get(m.conn, 0) + 1
                for c, n in sorted(conns.items()):
                    out.append({"path": f"/{self.venue}/{self._conn_name(shard, c)}",
                                "shard": shard, "conn": c, "messages": n})
            self._connections = out
        return self._connections

    def _conn_name(self, shard: int, conn: int) -> str:
        return str(conn) if len(self.by_shard) == 1 else f"{shard}.{conn}"

    def parse_path(self, raw: bytes | str) -> Selection | None:
        """The feed a request path names, or None (404)."""
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        u = urllib.parse.urlsplit(text)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
        if not parts or parts[0] != self.venue or len(parts) > 2:
            return None
        shard = conn = None
        if len(parts) == 2:
            tok = parts[1]
            head, dot, tail = tok.partition(".")
            try:
                if dot:
                    shard, conn = int(head), int(tail)
                elif len(self.by_shard) == 1:
                    shard, conn = next(iter(self.by_shard)), int(tok)
                else:
                    return None          # ambiguous: several shards hold this number
            except ValueError:
                return None
            if not any(c["shard"] == shard and c["conn"] == conn for c in self.connections()):
                return None              # not a connection recorded in this range
        q = urllib.parse.parse_qs(u.query)
        bad = set(q) - {"channel", "symbol"}
        if bad:
            return None

        def values(k: str) -> frozenset[str] | None:
            vs = [x for v in q.get(k, []) for x in v.split(",") if x]
            return frozenset(vs) if vs else None
        return Selection(shard, conn, values("channel"), values("symbol"))

    # -- the messages of a feed -------------------------------------------------------------
    def messages(self, sel: Selection) -> Iterator[Msg]:
        """The messages of one feed, in receive order (shards merged by receive time)."""
        shards = [sel.shard] if sel.shard is not None else sorted(self.by_shard)
        streams = [self._shard_messages(s, sel) for s in shards]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda m: m.ts_ns)

    def _shard_messages(self, shard: int, sel: Selection) -> Iterator[Msg]:
        want_conn = sel.conn
        chans, syms = sel.channels, sel.symbols
        route = self.route
        control = self.include_control
        for m in walk(self.data, paths=self.by_shard[shard], start=self.start, end=self.end,
                      skip_corrupt=self.skip_corrupt, on_skip=self._on_skip,
                      on_dropped=self._on_dropped):
            if m.type == _CONTROL:
                if control and (want_conn is None or m.conn == want_conn or m.conn == SHARD_CONN):
                    yield m
                continue
            if want_conn is not None and m.conn != want_conn:
                continue
            if chans is not None or syms is not None:
                rk = route(m.payload) if route is not None else None
                if rk is None or (chans is not None and rk.channel not in chans) or \
                        (syms is not None and rk.symbol not in syms):
                    continue
            yield m

    @staticmethod
    def _on_dropped(path: str, d) -> None:
        # one per message a damaged recording cut short: a burst, then a count
        ok, suppressed = _throttle.allow("incomplete_message")
        if ok:
            log_event(log, "incomplete_message", logging.WARNING, segment=path,
                      first_seq=d.first_seq, last_seq=d.last_seq, reason=d.reason,
                      **({"suppressed": suppressed} if suppressed else {}))

    def _on_skip(self, sk: Skipped) -> None:
        self.skipped.append(sk)
        ok, suppressed = _throttle.allow("corrupt_skipped")
        if ok:
            log_event(log, "corrupt_skipped", logging.ERROR, segment=sk.path, offset=sk.offset,
                      reason=sk.reason, resume=sk.resume,
                      **({"suppressed": suppressed} if suppressed else {}))

    # -- serving ----------------------------------------------------------------------------
    async def stream(self, transport: WSTransport, client: "_Client", sel: Selection) -> int:
        """Send one feed; returns the number of messages sent."""
        speed = self.speed
        clock, sleep = self.clock, self.sleep
        n = 0
        wall0 = ts0 = 0
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        writable = client.writable
        try:
            if speed is None:
                n, whole = await self._stream_max(transport, writable, self.messages(sel))
                if not whole:
                    return n             # the client went away
            else:
                for m in self.messages(sel):
                    if n == 0:
                        wall0, ts0 = clock(), m.ts_ns
                    ahead = wall0 + (m.ts_ns - ts0) / 1e9 / speed - clock()
                    if ahead > 0:
                        await sleep(ahead)
                    if not writable.is_set():
                        await writable.wait()
                    if transport.is_disconnected:
                        return n
                    transport.send(binary if m.flags & _BINARY else text, m.payload)
                    n += 1
            transport.send_close(WSCloseCode.OK, b"end of recording")
        except SegmentError as exc:
            log_event(log, "replay_stopped", logging.ERROR, reason="corrupt_segment",
                      segment=exc.path, offset=exc.offset, error=exc.reason)
            transport.send_close(WSCloseCode.INTERNAL_ERROR,
                                 f"corrupt segment at offset {exc.offset}".encode()[:120])
        transport.disconnect()
        return n

    @staticmethod
    async def _stream_max(transport: WSTransport, writable: asyncio.Event,
                          msgs: Iterator[Msg]) -> tuple[int, bool]:
        """A feed at ``max``: frames written to the socket in batches.

        Up to ``_BATCH`` messages (or ``_BATCH_BYTES``) become one write of
        back-to-back WebSocket frames, so the socket is written once per batch
        rather than once per message; the loop yields to the event loop after
        each batch.  Returns the number of messages sent and whether that was
        the whole feed (False: the client went away).
        """
        raw = transport.underlying_transport
        n = 0
        parts: list[bytes] = []
        size = 0
        head = _frame_head

        async def flush() -> bool:
            """Write the batch once the socket takes it; False: the client left."""
            nonlocal n, size
            if not writable.is_set():
                await writable.wait()
            if transport.is_disconnected:
                return False
            raw.write(b"".join(parts))
            n += len(parts) // 2
            parts.clear()
            size = 0
            return True

        for m in msgs:
            p = m.payload
            parts.append(head(_OP_BINARY if m.flags & _BINARY else _OP_TEXT, len(p)))
            parts.append(p)
            size += len(p)
            if len(parts) >= 2 * _BATCH or size >= _BATCH_BYTES:
                if not await flush():
                    return n, False
                await asyncio.sleep(0)
        if parts and not await flush():
            return n, False
        return n, True

    def index(self) -> bytes:
        return json.dumps({"venue": self.venue, "connections": self.connections(),
                           "speed": "max" if self.speed is None else self.speed,
                           "include_control": self.include_control}, indent=1).encode()

    def factory(self, request: WSUpgradeRequest):
        """picows router: a feed, the JSON index (plain GET /), or 404."""
        try:
            return self._route(request)
        except CaptureError as exc:   # the range could not be read (listing the connections)
            log_event(log, "request_failed", logging.ERROR, path=request.path.decode("latin-1"),
                      error=exc)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                500, b"the recording could not be read; the server's log says why\n"), None)

    def _route(self, request: WSUpgradeRequest):
        upgrade = (request.headers.get("Upgrade") or "").lower() == "websocket"
        if not upgrade:
            if request.path in (b"/", b"/" + self.venue.encode()):
                return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(
                    self.index(), {"Content-Type": "application/json"}), None)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                404, b"no such feed; GET / lists them\n"), None)
        sel = self.parse_path(request.path)
        if sel is None:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                404, b"no such feed; GET / lists them\n"), None)
        return _Client(self, sel)

    async def serve(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> asyncio.Server:
        return await ws_create_server(self.factory, host, port, max_frame_size=64 << 20,
                                      logger_name="capture.replay.ws")


class _Client(WSListener):
    """One feed: the sender task, and the socket's flow control as an event."""

    def __init__(self, replay: Replay, sel: Selection) -> None:
        self.replay, self.sel = replay, sel
        self.writable = asyncio.Event()
        self.writable.set()
        self.task: asyncio.Task | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.replay.clients += 1
        self.t0 = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(
            self.replay.stream(transport, self, self.sel))
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log_event(log, "feed_failed", logging.ERROR, **_fields(self.sel), error=repr(exc))
            return
        log_event(log, "feed_done", **_fields(self.sel), messages=task.result(),
                  seconds=round(time.monotonic() - self.t0, 3))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        # Anything a client sends (a subscribe, a ping message) is ignored:
        # a feed is the recording, not a conversation.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.writable.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


# -- the command ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="capture replay", description="serve a recording as "
                                 "WebSocket feeds (one per recorded connection), or republish it "
                                 "to NATS JetStream with the original Msg-Ids")
    ap.add_argument("data", help="data directory (or segment files' directory)")
    ap.add_argument("--venue", required=True)
    ap.add_argument("--shard", type=int)
    ap.add_argument("--start", help="receive time from (ns or ISO-8601, UTC)")
    ap.add_argument("--end", help="receive time until, inclusive")
    ap.add_argument("--speed", default=None, help="X times the original pace, or max "
                    "(default: 1 for WebSocket feeds, max with --to-nats)")
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: any free port")
    ap.add_argument("--include-control", action="store_true",
                    help="also send our control records (JSON) on each feed")
    ap.add_argument("--skip-corrupt", action="store_true",
                    help="go on past a corrupt record (each one logged)")
    ap.add_argument("--to-nats", metavar="URL",
                    help="republish into JetStream instead of serving (original Msg-Ids)")
    ap.add_argument("--prefix", default=None, help="subject prefix for --to-nats "
                    "(default: the config's, else the publisher's default)")
    ap.add_argument("--config", default=None, help="with --to-nats: the NATS settings "
                    "(credentials, TLS, prefix, streams) of this capture config; the URL "
                    "given replaces its servers")
    ap.add_argument("--log-level", default="INFO")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit 0 done (or stopped by a signal), 1 not every message acknowledged by
    NATS, 2 bad usage or nothing to replay."""
    args = build_parser().parse_args(argv)
    # the one log format, and the redaction filter (a --to-nats URL may carry credentials)
    setup_logging("replay", args.shard, args.log_level)
    try:
        speed = parse_speed(args.speed or ("max" if args.to_nats else "1"))
        start, end = to_ns(args.start), to_ns(args.end)
        if args.to_nats:
            return _to_nats(args, speed, start, end)
        replay = Replay(args.data, args.venue, shard=args.shard, start=start, end=end,
                        speed=speed, include_control=args.include_control,
                        skip_corrupt=args.skip_corrupt)
        replay.connections()        # one pass over the range, before serving
    except SegmentError as exc:
        print(f"capture replay: corrupt segment {exc}; stopped there (--skip-corrupt goes on "
              f"past it)", file=sys.stderr)
        return 1
    except (NoData, ValueError, CaptureError) as exc:
        print(f"capture replay: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(replay, args.bind, args.port))


async def _serve(replay: Replay, host: str, port: int) -> int:
    try:
        server = await replay.serve(host, port)
    except OSError as exc:
        print(f"capture replay: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    bound = server.sockets[0].getsockname()
    first = replay.connections()[0]["path"] if replay.connections() else f"/{replay.venue}"
    print(f"capture replay: serving ws://{bound[0]}:{bound[1]}{first} "
          f"({len(replay.connections())} connections; GET / lists them)", file=sys.stderr,
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    return 0


def _to_nats(args: argparse.Namespace, speed: float | None, start, end) -> int:
    from capture.publish import venue_routing
    from capture.replay_nats import Republisher
    from flusher.publisher.stream import parse_config
    # Credentials in the URL go to the settings, so no server list (logged,
    # put in error messages) ever holds them.
    url, creds = _split_credentials(args.to_nats)
    if args.config:
        from capture import config
        bus = dataclasses.replace(config.load(args.config).nats.bus, servers=[url])
        if args.prefix:
            bus = dataclasses.replace(bus, prefix=parse_config({"prefix": args.prefix}).prefix)
    else:
        cfg: dict = {"servers": [url]}
        if args.prefix:
            cfg["prefix"] = args.prefix
        bus = parse_config(cfg)
    if creds:
        bus = dataclasses.replace(bus, **creds)
    paths = find_paths(args.data, args.venue, args.shard)
    by_shard: dict[int, list[str]] = {}
    for p in paths:
        sn = parse_name(p)
        by_shard.setdefault(sn.shard if sn else 0, []).append(p)
    total = 0
    ok = True
    for shard, ps in sorted(by_shard.items()):
        # The publisher's own routing (subjects, split of multi-market arrays),
        # so a replay puts each message where, and with the id, the publisher did.
        r = venue_routing(bus.prefix, args.venue, shard)
        rp = Republisher(venue=args.venue, shard=shard, bus=bus, speed=speed,
                         subject_fn=r.subject_fn, fanout_fn=r.fanout_fn)
        msgs = walk(args.data, paths=ps, start=start, end=end, skip_corrupt=args.skip_corrupt,
                    on_skip=lambda sk: print(f"capture replay: skipped a corrupt record: {sk}",
                                             file=sys.stderr))
        ok = asyncio.run(rp.republish(msgs)) and ok
        s = rp.summary()
        total += s["messages"]
        print(f"capture replay: shard {shard}: {s['messages']} messages to {url}, "
              f"{s['acked']} acknowledged, {s['already_in_stream']} already in the stream",
              file=sys.stderr)
    if not total:
        raise no_data_in_range(paths, start, end)
    return 0 if ok else 1


def _split_credentials(url: str) -> tuple[str, dict]:
    """``nats://user:pass@host`` -> (``nats://host``, {user, password}); a lone
    ``nats://token@host`` gives {token}."""
    u = urllib.parse.urlsplit(url)
    info, at, host = u.netloc.rpartition("@")
    if not at:
        return url, {}
    bare = urllib.parse.urlunsplit((u.scheme, host, u.path, u.query, u.fragment))
    user, colon, password = info.partition(":")
    user, password = urllib.parse.unquote(user), urllib.parse.unquote(password)
    return bare, ({"user": user, "password": password, "token": None} if colon
                  else {"token": user, "user": None, "password": None})


__all__ = ["Replay", "Selection", "parse_speed", "main", "DEFAULT_PORT"]
