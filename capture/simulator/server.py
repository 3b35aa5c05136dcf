"""The simulator's servers: one real WebSocket server per venue, and the
engine that paces each connection through its :class:`Scenario`.

Theory of operation, per accepted connection (``_Conn``):

* the *reader* (the handler task) feeds every client message to the venue
  session and sends its replies at once (acks, errors, pongs, snapshots);
* the *pump* task sends steady data at ``rate`` after the first subscription
  (or runs the blast), and applies the counting rules of the scenario:
  bursts, large frames, malformed frames, silence, disconnects, and
  injections from :meth:`Simulator.inject`;
* the *heartbeat* task sends the venue's heartbeat frames.

Every frame goes through :meth:`_Conn.send`, which records it and writes it
with no await in between, so the record order is the wire order even with
three tasks sending.  Plain HTTP GETs on the same ports are REST discovery
(``rest.py``); handshakes can be refused with 429 (scripted) or 401 (Kalshi
signature), as the venues do.
"""
from __future__ import annotations

import asyncio
import collections
import http
import logging
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from common.errors import ConfigError, SimulatorError  # SimulatorError: raised here, imported from here by callers

from capture.simulator.blast import BlastPlan, marker
from capture.simulator.kalshi import KalshiSession, verify_handshake
from capture.simulator.kraken import KrakenSession
from capture.simulator.kraken_futures import FuturesSession
from capture.simulator.polymarket import PolymarketSession
from capture.simulator.record import ConnectionRecord
from capture.simulator.rest import Rest
from capture.simulator.script import VENUES, Scenario
from capture.simulator.session import Out, Session
from capture.simulator.universe import Universe

log = logging.getLogger("capture.simulator")

#: venue -> (session class, WebSocket path)
VENUE_SPECS: dict[str, tuple[type[Session], str]] = {
    "kraken": (KrakenSession, "/v2"),
    "kraken_futures": (FuturesSession, "/ws/v1"),
    "polymarket": (PolymarketSession, "/ws/market"),
    "kalshi": (KalshiSession, "/trade-api/ws/v2"),
}
MAX_CLIENT_MESSAGE = 16 * 1024 * 1024


def _response(status: int, body: bytes, content_type: str = "application/json") -> Response:
    st = http.HTTPStatus(status)
    headers = Headers([("Connection", "close"), ("Content-Length", str(len(body))),
                       ("Content-Type", content_type)])
    return Response(st.value, st.phrase, headers, body)


class _Conn:
    """One live connection: session state plus the scenario's counters."""

    def __init__(self, vs: "VenueServer", ws: ServerConnection, rec: ConnectionRecord) -> None:
        self.vs, self.ws, self.rec = vs, ws, rec
        self.sc: Scenario = vs.sim.scenario
        cls = VENUE_SPECS[vs.venue][0]
        self.session = cls(self.sc, vs.sim.universe, rec.index)
        self.loop = asyncio.get_running_loop()
        self.last_send = self.loop.time()
        self.wake = asyncio.Event()
        self.pending: collections.deque[tuple[str, dict]] = collections.deque()
        self.silent = False
        self.done = False           # max_messages reached
        self.closing = False
        idx = rec.index
        sc = self.sc
        self.may_disconnect = sc.disconnect_connections is None or idx < sc.disconnect_connections
        self.may_silence = sc.silence_connections is None or idx < sc.silence_connections

    # -- sending --------------------------------------------------------
    async def send(self, payload: bytes, data: bool) -> None:
        if self.closing or (data and (self.silent or self.done)):
            return
        if self.ws.state is not State.OPEN:
            # Never record a frame that cannot reach the socket.
            raise ConnectionClosed(None, None)
        # Record and write with no await in between: record order == wire order.
        self.rec.add(payload, data)
        await self.ws.send(payload, text=True)
        self.last_send = self.loop.time()
        if data:
            await self._after_data()

    def _sent_now(self) -> None:
        self.last_send = self.loop.time()

    async def send_all(self, outs: list[Out]) -> None:
        for o in outs:
            await self.send(o.payload, o.data)

    async def _after_data(self) -> None:
        sc, n = self.sc, self.rec.data_count
        if sc.malformed_every and n % sc.malformed_every == 0:
            await self.send(self.session.malformed(), False)
        if sc.max_messages is not None and n >= sc.max_messages:
            self.done = True
        if sc.silence_after is not None and n >= sc.silence_after and self.may_silence:
            self.silent = True
        if sc.disconnect_after is not None and n >= sc.disconnect_after and self.may_disconnect:
            await self.disconnect(sc.disconnect_mode)

    async def disconnect(self, mode: str) -> None:
        """End the connection like a venue does: a close frame (1001) or a
        bare TCP close after the buffered frames (the client sees 1006)."""
        if self.closing:
            return
        self.closing = True
        self.wake.set()
        if mode == "drop":
            self.ws.transport.close()  # flushes what was written, then FIN
        else:
            # As a task: close() waits for the client's close frame, and the
            # caller may be the reader task that must keep reading meanwhile.
            self.loop.create_task(self.ws.close(1001, "going away"))

    # -- tasks ----------------------------------------------------------
    async def run(self) -> None:
        tasks = [self.loop.create_task(self.pump()), self.loop.create_task(self.heartbeats())]
        for t in tasks:
            t.add_done_callback(self._task_done)
        try:
            await self.send_all(self.session.on_open())
            async for message in self.ws:
                self.rec.received.append(message)
                await self.send_all(self.session.on_message(message))
                self.wake.set()
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, Exception) and not isinstance(r, ConnectionClosed):
                    log.error("%s connection %d task failed: %r", self.vs.venue,
                              self.rec.index, r, exc_info=r)

    def _task_done(self, task: asyncio.Task) -> None:
        """A pump/heartbeat bug must not leave the client waiting forever:
        close with 1011 (internal error), as a server would."""
        if task.cancelled() or task.exception() is None:
            return
        if isinstance(task.exception(), ConnectionClosed):
            return
        log.error("%s connection %d: %r", self.vs.venue, self.rec.index, task.exception(),
                  exc_info=task.exception())
        self.closing = True
        self.loop.create_task(self.ws.close(1011, "simulator error"))

    async def _sleep_or_wake(self, timeout: float | None) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _apply(self, action: str, kw: dict) -> None:
        s = self.session
        if action == "disconnect":
            await self.disconnect(kw.get("mode", "close"))
        elif action == "silence":
            self.silent = True
        elif action == "resume":
            self.silent = False
        elif action == "large":
            await self.send(s.large(int(kw.get("size", self.sc.large_size))), True)
        elif action == "malformed":
            await self.send(s.malformed(), False)
        elif action == "gap" and hasattr(s, "inject_gap"):
            s.inject_gap(kw.get("symbol"))
        elif action == "terminal_error" and hasattr(s, "terminal_error"):
            for frame in s.terminal_error(kw.get("symbol"), bool(kw.get("with_sid", True))):
                await self.send(frame, False)
        elif action == "corrupt_checksum" and hasattr(s, "corrupt_next_checksum"):
            s.corrupt_next_checksum(kw.get("symbol"))
        elif action == "send":
            await self.send(kw["payload"], bool(kw.get("data", True)))
        elif action == "data":
            for _ in range(int(kw.get("count", 1))):
                if s.has_data():
                    await self.send(s.next_data(), True)

    async def pump(self) -> None:
        sc, s = self.sc, self.session
        while not s.subscribed_once:
            while self.pending:
                await self._apply(*self.pending.popleft())
            await self._sleep_or_wake(None)
        if sc.blast is not None:
            plan = BlastPlan(s, sc.blast)
            if await plan.run(self.ws, self.rec, self._sent_now):
                await self.send(marker(sc.blast.frames), False)
        paced = 0          # messages counted against the rate clock
        steady = 0         # all steady messages, for bursts
        start = self.loop.time()
        while not self.closing:
            while self.pending and not self.closing:
                await self._apply(*self.pending.popleft())
            if (sc.blast is not None or self.silent or self.done or sc.rate == 0
                    or not s.has_data()):
                await self._sleep_or_wake(None)
                start, paced = self.loop.time(), 0
                continue
            if sc.rate == float("inf"):
                due = 64
            else:
                now = self.loop.time()
                due = int((now - start) * sc.rate) - paced
                if due <= 0:
                    await self._sleep_or_wake(start + (paced + 1) / sc.rate - now)
                    continue
                if due > max(256.0, sc.rate):   # fell >1 s behind: don't binge
                    start, paced, due = now, 0, 1
                due = min(due, 256)
            for _ in range(due):
                n = self.rec.data_count + 1
                if sc.large_every and n % sc.large_every == 0:
                    await self.send(s.large(sc.large_size), True)
                else:
                    await self.send(s.next_data(), True)
                paced += 1
                steady += 1
                if sc.burst_every and sc.burst_size and steady % sc.burst_every == 0:
                    for _ in range(sc.burst_size):
                        if self.closing or self.silent or self.done or not s.has_data():
                            break
                        await self.send(s.next_data(), True)
                if self.closing or self.silent or self.done or self.pending or not s.has_data():
                    break
            # Let the reader task run between batches, as a real server's
            # does: a pump behind its schedule never waits on its own, and
            # would otherwise not read a client's close frame (nor answer it)
            # for as long as it kept sending.
            await asyncio.sleep(0)

    async def heartbeats(self) -> None:
        iv = self.sc.heartbeat_interval
        s = self.session
        while not self.closing:
            if s.idle_heartbeat:
                # Kraken: once subscribed to anything, a heartbeat after `iv`
                # without any other frame.
                idle = self.loop.time() - self.last_send
                if idle >= iv and s.subscribed_once:
                    await self.send(s.heartbeat() or b"", False)
                    continue
                await asyncio.sleep(iv - idle)
            else:
                await asyncio.sleep(iv)
                hb = s.heartbeat()
                if hb is not None:
                    await self.send(hb, False)


class VenueServer:
    """One venue's WebSocket server (+ REST routes) on its own port."""

    def __init__(self, sim: "Simulator", venue: str) -> None:
        self.sim, self.venue = sim, venue
        self.path = VENUE_SPECS[venue][1]
        self.server: Server | None = None
        self.records: list[ConnectionRecord] = []
        self.live: set[_Conn] = set()
        #: WebSocket handshake attempts, and how many were refused.
        self.attempts = 0
        self.rejected_429 = 0
        self.rejected_401 = 0
        self.unauthorized: list[str] = []

    async def start(self, host: str, port: int) -> None:
        sc = self.sim.scenario
        self.server = await serve(
            self._handler, host, port, process_request=self._process_request,
            compression=None, max_size=MAX_CLIENT_MESSAGE, write_limit=2 ** 20,
            ping_interval=sc.kalshi_ping_interval if self.venue == "kalshi" else None,
            ping_timeout=sc.kalshi_ping_interval if self.venue == "kalshi" else None,
            close_timeout=2, logger=log)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        rest = self.sim.rest.handle(request.path)
        if rest is not None:
            return _response(*rest)
        if urlsplit(request.path).path != self.path:
            return _response(404, b"Not Found\n", "text/plain")
        idx = self.attempts
        self.attempts += 1
        self.sim._notify()
        if idx < self.sim.scenario.reject_connects:
            self.rejected_429 += 1
            return _response(429, b"Too Many Requests\n", "text/plain")
        if self.venue == "kalshi":
            headers = {k.lower(): v for k, v in request.headers.raw_items()}
            reason = verify_handshake(headers, self.sim.kalshi_public_key, self.sim.kalshi_key_id,
                                      self.sim.scenario.kalshi_max_skew)
            if reason is not None:
                self.rejected_401 += 1
                self.unauthorized.append(reason)
                return _response(401, b'{"error":{"code":"authentication_error",'
                                      b'"message":"authentication failed"}}')
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        req = ws.request
        assert req is not None
        rec = ConnectionRecord(self.venue, len(self.records), req.path,
                               {k.lower(): v for k, v in req.headers.raw_items()},
                               mode=self.sim.scenario.record)
        self.records.append(rec)
        conn = _Conn(self, ws, rec)
        self.live.add(conn)
        self.sim._notify()
        try:
            await conn.run()
        finally:
            rec.closed = True
            rec.close_code = ws.close_code
            self.live.discard(conn)
            self.sim._notify()


class Simulator:
    """All venue servers of one simulated world, in this event loop.

    Args:
        venues: any of ``kraken``, ``kraken_futures``, ``polymarket``, ``kalshi``.
        scenario: the script; default :class:`Scenario()`.
        host: bind address (loopback by default).
        port: 0 gives every venue its own free port; P > 0 gives venue i
            (in ``venues`` order) port P + i.
        ports: explicit ports per venue (overrides ``port``).
        kalshi_public_key: RSA public key (object or PEM bytes) that Kalshi
            handshakes must verify against.  If omitted, a key pair is
            generated and :attr:`kalshi_private_key` holds the private half.
        kalshi_key_id: the KALSHI-ACCESS-KEY to require (None: any).

    Usage::

        async with Simulator(["kraken"], Scenario(rate=100)) as sim:
            async with websockets.connect(sim.url("kraken")) as ws: ...
    """

    def __init__(self, venues: list[str] | tuple[str, ...] = VENUES,
                 scenario: Scenario | None = None, host: str = "127.0.0.1", port: int = 0,
                 ports: dict[str, int] | None = None,
                 kalshi_public_key: Any = None, kalshi_key_id: str | None = None) -> None:
        venues = list(venues)
        for v in venues:
            if v not in VENUE_SPECS:
                raise ConfigError(None, "venues", f"unknown venue {v!r}; known: {list(VENUES)}")
        if len(set(venues)) != len(venues):
            raise ConfigError(None, "venues", "a venue is listed twice")
        self.venues = venues
        self.scenario = scenario or Scenario()
        self.host, self.port, self.ports = host, port, dict(ports or {})
        self.universe = Universe(self.scenario.seed, self.scenario.instruments)
        self.rest = Rest(self.universe, self.scenario)
        self.servers = {v: VenueServer(self, v) for v in venues}
        if self.scenario.blast is not None:
            self._check_blast()
        self.kalshi_key_id = kalshi_key_id
        self.kalshi_private_key: rsa.RSAPrivateKey | None = None
        if isinstance(kalshi_public_key, (bytes, str)):
            kalshi_public_key = serialization.load_pem_public_key(
                kalshi_public_key.encode() if isinstance(kalshi_public_key, str)
                else kalshi_public_key)
        if kalshi_public_key is None and "kalshi" in venues:
            self.kalshi_private_key = rsa.generate_private_key(public_exponent=65537,
                                                               key_size=2048)
            kalshi_public_key = self.kalshi_private_key.public_key()
        self.kalshi_public_key = kalshi_public_key
        self._changed: asyncio.Condition | None = None
        self.started = False

    def _check_blast(self) -> None:
        """Refuse a blast frame size a venue's messages cannot shrink to,
        now rather than as a failed connection later."""
        for v in self.venues:
            probe = VENUE_SPECS[v][0](self.scenario, self.universe, 0)
            try:
                probe.blast_frame(0, self.scenario.blast.size)  # type: ignore[union-attr]
            except ValueError as exc:
                raise ConfigError(None, "scenario.blast.size", f"{v}: {exc}") from exc

    # -- lifecycle ------------------------------------------------------
    async def start(self) -> "Simulator":
        self._changed = asyncio.Condition()
        try:
            for i, v in enumerate(self.venues):
                port = self.ports.get(v, self.port + i if self.port else 0)
                await self.servers[v].start(self.host, port)
        except OSError as exc:
            await self.stop()
            raise SimulatorError(f"cannot bind {self.host}: {exc}") from exc
        self.started = True
        return self

    async def stop(self) -> None:
        for vs in self.servers.values():
            if vs.server is not None:
                vs.server.close()
        for vs in self.servers.values():
            if vs.server is not None:
                await vs.server.wait_closed()
        self.started = False

    async def __aenter__(self) -> "Simulator":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses ------------------------------------------------------
    def _server(self, venue: str) -> VenueServer:
        if venue not in self.servers:
            raise SimulatorError(f"venue {venue!r} is not simulated here")
        return self.servers[venue]

    def url(self, venue: str) -> str:
        """``ws://127.0.0.1:PORT/v2`` etc."""
        vs = self._server(venue)
        return f"ws://{self.host}:{vs.port}{vs.path}"

    def rest_url(self, venue: str) -> str:
        """Base URL for the venue's REST discovery: ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self._server(venue).port}"

    def urls(self) -> dict[str, str]:
        return {v: self.url(v) for v in self.venues}

    def symbols(self, venue: str) -> list[str]:
        """What may be subscribed on ``venue`` (the discovery universe)."""
        return self.universe.symbols(venue)

    # -- observation and control ----------------------------------------
    def server(self, venue: str) -> VenueServer:
        return self._server(venue)

    def connections(self, venue: str) -> list[ConnectionRecord]:
        """Every accepted connection of ``venue`` so far, in accept order."""
        return list(self._server(venue).records)

    def summary(self) -> list[dict]:
        return [r.summary() for vs in self.servers.values() for r in vs.records]

    def inject(self, venue: str, action: str, **kw: Any) -> int:
        """Make every live connection of ``venue`` do ``action`` now.

        Actions: ``disconnect`` (mode="close"|"drop"), ``silence``, ``resume``,
        ``large`` (size=bytes), ``malformed``, ``gap`` (Kalshi/Futures: the next
        sequenced message skips a number; symbol=... limits it to that
        product/market), ``corrupt_checksum`` (Kraken: the next book message
        of each symbol, or of symbol=...), ``data`` (count=N extra data
        messages, also when ``rate`` is 0), ``send`` (payload=bytes,
        data=bool).  Must be called in the simulator's loop (see
        :meth:`SimulatorThread.inject`).

        Returns:
            how many connections got it.
        """
        conns = list(self._server(venue).live)
        for c in conns:
            c.pending.append((action, kw))
            c.wake.set()
        return len(conns)

    def _notify(self) -> None:
        cond = self._changed
        if cond is None:
            return

        async def _n() -> None:
            async with cond:
                cond.notify_all()
        asyncio.get_running_loop().create_task(_n())

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> object:
        """Wait until ``predicate()`` is truthy, re-checked whenever a
        connection is attempted, opens or closes (and every 50 ms, for
        conditions about frames)."""
        assert self._changed is not None, "start() first"
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not (v := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"simulator condition not met in {timeout:.1f}s")
                try:
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.05))
                except TimeoutError:
                    pass
            return v
