"""The transport seam: one small WebSocket client interface, two implementations.

:class:`Transport` is all the connection lifecycle (:mod:`capture.receiver.connection`)
knows about the socket.  Implementations:

* :class:`PicowsTransport` -- ``picows``, a Cython client with a callback
  listener: no per-message task switch; a message below 64 KiB is copied once
  to bytes (which the ring's C write takes as they are), a larger one is
  handed over as a memoryview into picows's read buffer.
* :class:`WebsocketsTransport` -- the ``websockets`` library
  (``websockets.asyncio.client.connect``).  Instead of the usual
  ``async for message in ws`` loop (a queue, a task switch and, for text, a
  UTF-8 decode per message) it hooks the connection's frame callback, so the
  bytes are the bytes on the wire and text/binary is known.

Both deliver every message (after reassembling fragmented ones) to one
callback, ``on_message(payload, ts, flags)``:

* ``ts`` -- ``time.time_ns()`` taken *first*, in the transport's receive
  callback, before anything looks at the bytes: once per socket read, so the
  messages parsed out of one read (they arrived together) share the stamp of
  that read.  For a message that arrived in several reads or WebSocket
  fragments it is the stamp of the read that completed it.
* ``payload`` -- exactly the received bytes (a text message's UTF-8 bytes,
  never decoded and re-encoded).  It may be a memoryview into the transport's
  buffer, valid only during the call: copy it to keep it.
* ``flags`` -- ``ring.FrameFlags.BINARY`` for a binary message, 0 for text.

``on_open()`` runs once the handshake is complete and before the first
message is delivered, so an "opened" record always precedes the data.
``on_pong(payload)`` reports WebSocket protocol pongs.  Protocol pings from
the server are answered by the transport (websockets: by the library).

Errors (rooted in :class:`common.errors.CaptureError`; library exceptions are
translated once, here at the edge)::

    CaptureError
    └── TransportError               a WebSocket transport problem
        └── ConnectFailed            connect/handshake failed: url, status (HTTP, or None), reason

(defined in :mod:`common.errors` with the rest of the tree).
"""
from __future__ import annotations

import abc
import asyncio
import os
import time
from dataclasses import dataclass
from typing import Callable

from common.errors import ConnectFailed, TransportError
from ring.frame import FrameFlags

#: Deliver one message: ``(payload, receive ts ns, flags)``.
OnMessage = Callable[[bytes | memoryview, int, int], None]

_BINARY = int(FrameFlags.BINARY)
#: Default largest message accepted (Polymarket initial dumps reach ~2-3 MiB;
#: the ring refuses anything above its own max frame with an oversize record,
#: which keeps the connection up, so this is deliberately above the ring's).
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
USER_AGENT = "capture/0.1"
TRANSPORTS = ("picows", "websockets")


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a connection ended.

    ``code``: the close code received (1006 when the peer closed TCP without a
    close frame, 1009 for a message too big); ``reason``: its text;
    ``by``: "server" (peer initiated), "client" (we did) or "error".
    """

    code: int
    reason: str
    by: str


def _noop(*_: object) -> None:
    return None


class Transport(abc.ABC):
    """One WebSocket connection (create a fresh one per attempt).

    Args:
        on_message: see the module docstring.
        on_open: called once after the handshake, before any message.
        on_pong: called with the payload of each protocol pong received.
        max_message: largest message accepted.
    """

    name = ""

    def __init__(self, on_message: OnMessage, *, on_open: Callable[[], None] = _noop,
                 on_pong: Callable[[bytes], None] = _noop,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.on_message = on_message
        self.on_open = on_open
        self.on_pong = on_pong
        self.max_message = max_message
        self.close_info: CloseInfo | None = None
        self._closing_by_us = False
        self._done: asyncio.Future[CloseInfo] | None = None

    @abc.abstractmethod
    async def connect(self, url: str, headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> None:
        """Open the connection.  Raises ConnectFailed."""

    @abc.abstractmethod
    def send_text(self, data: bytes | str) -> None:
        """Queue a text message (never waits; the OS buffer takes it)."""

    @abc.abstractmethod
    def send_ping(self, data: bytes = b"") -> None:
        """Send a WebSocket protocol ping."""

    @abc.abstractmethod
    def send_pong(self, data: bytes = b"") -> None:
        """Send an (unsolicited) WebSocket protocol pong."""

    @abc.abstractmethod
    async def close(self, code: int = 1000, reason: str = "", timeout: float = 2.0) -> CloseInfo:
        """Close with a handshake (at most ``timeout`` s, then drop TCP)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the TCP connection at once."""

    async def wait_closed(self) -> CloseInfo:
        """Wait until the connection is over, however it ends."""
        assert self._done is not None, "connect() first"
        return await asyncio.shield(self._done)

    @property
    def closed(self) -> bool:
        return self._done is not None and self._done.done()

    def _finish(self, code: int, reason: str) -> None:
        if self._done is not None and not self._done.done():
            # "error": a protocol failure (too big, bad frame, bad UTF-8 in a
            # close) ended it, whoever sent the close frame.
            by = "client" if self._closing_by_us else (
                "error" if code in (1002, 1007, 1009) else "server")
            self.close_info = CloseInfo(code, reason, by)
            self._done.set_result(self.close_info)


# --------------------------------------------------------------------------
# picows
# --------------------------------------------------------------------------

try:  # picows is a compiled extension; the websockets transport works without it
    import picows as _pw
except ImportError:  # pragma: no cover - picows is a declared dependency
    _pw = None

# The compiled listener (capture/receiver/_fastpath.pyx), built against the installed
# picows.  Without it (no compiler or Cython at install time, or a picows
# upgraded since the build) the Python listener does the same work, slower;
# FASTPATH_ERROR says why, and the receiver logs it at start.
_fastpath = None
FASTPATH_ERROR: str | None = "picows is not installed"
if _pw is not None:
    try:
        from capture.receiver import _fastpath  # type: ignore[attr-defined,no-redef]
        FASTPATH_ERROR = None
    except (ImportError, ValueError) as exc:   # ValueError: picows type sizes changed
        FASTPATH_ERROR = f"{type(exc).__name__}: {exc}"


def _make_picows_listener():  # built lazily so importing this module never needs picows
    """-> ``listener_class(transport)``: the picows listener factory of one
    connection attempt (the compiled listener when the transport has a
    FastState and the module is built, else the Python listener class)."""
    WSMsgType = _pw.WSMsgType
    TEXT, BINARY, CONT, CLOSE, PING, PONG = (
        WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE,
        WSMsgType.PING, WSMsgType.PONG)
    time_ns = time.time_ns
    #: Below this size a payload is copied to bytes: bytes reach the ring's C
    #: write without a further copy, and the memcpy is cheaper than wrapping
    #: the view for C (measured, copy + C write: 256 B 0.25 vs 0.39 us, 2 KiB
    #: 0.41 vs 0.49 us); above, it is passed as a view.
    copy_below = 64 * 1024

    def listener_class(t: "PicowsTransport") -> Callable[[], object]:
        # on_ws_frame is a plain function closed over this attempt's state and
        # stored as a staticmethod, so a class per attempt: picows looks the
        # override up on every frame, and a staticmethod comes back as it is
        # where a method would be bound to a new object each time (and a
        # closure cell is cheaper than an attribute).
        sink = t.on_message
        max_message = t.max_message
        ts = 0
        fresh = True      # the next frame starts a new socket read
        frag: bytearray | None = None
        frag_flags = 0

        def on_frame(transport, frame) -> None:
            nonlocal ts, fresh
            # First, before anything else: the receive time of this socket
            # read.  Frames parsed from the same read arrived together and
            # share it (one clock read per read, not per frame: the clock
            # costs more than everything else here; see RECEIVER_RESULTS.md).
            if fresh:
                ts = time_ns()
            fresh = frame.last_in_buffer
            if frame.msg_type is TEXT and frame.fin and frame.payload_size < copy_below:
                sink(frame.get_payload_as_bytes(), ts, 0)   # the common case
                return
            deliver(transport, frame, ts)

        def deliver(transport, frame, ts) -> None:
            """Everything after the stamp (also called by the compiled
            listener, capture/receiver/_fastpath.pyx, for what it does not take)."""
            nonlocal frag, frag_flags
            mt = frame.msg_type
            if mt is TEXT or mt is BINARY:
                if frame.fin:
                    n = frame.payload_size
                    if n < copy_below:
                        sink(frame.get_payload_as_bytes(), ts, 0 if mt is TEXT else _BINARY)
                    elif n <= max_message:  # picows may hand over a frame it is refusing
                        sink(frame.get_payload_as_memoryview(), ts, 0 if mt is TEXT else _BINARY)
                    return
                frag = bytearray(frame.get_payload_as_memoryview())
                frag_flags = 0 if mt is TEXT else _BINARY
                too_big(transport)
                return
            if mt is CONT:
                if frag is None:
                    return  # protocol violation by the peer; nothing to join
                frag += frame.get_payload_as_memoryview()
                if too_big(transport):
                    return
                if frame.fin:
                    buf, frag = frag, None
                    sink(buf, ts, frag_flags)
                return
            if mt is PING:
                # Answered here, not by picows's auto-pong: a frame picows
                # swallowed could be the last of a read, and the next read
                # would then reuse this read's stamp.
                transport.send_pong(frame.get_payload_as_bytes())
                return
            if mt is PONG:
                t.on_pong(frame.get_payload_as_bytes())
                return
            if mt is CLOSE:
                # Answer the peer's close and hang up; the close info is
                # read from transport.close_handshake when disconnected.
                if not transport.is_close_frame_sent:
                    transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

        def too_big(transport) -> bool:
            """A fragmented message past max_message: close 1009 and drop it."""
            nonlocal frag
            if frag is None or len(frag) <= max_message:
                return False
            size, frag = len(frag), None
            t._error = (1009, f"message too big ({size} > {max_message})")
            transport.send_close(_pw.WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            transport.disconnect()
            return True

        def connected(transport) -> None:
            t._ws = transport
            t.on_open()

        class _Listener(_pw.WSListener):
            on_ws_frame = staticmethod(on_frame)

            def on_ws_connected(self, transport) -> None:
                connected(transport)

            def on_ws_disconnected(self, transport) -> None:
                t._disconnected(transport)

        if t.fast is not None and _fastpath is not None:
            def factory():
                return _fastpath.FastListener(t.fast, deliver, connected, t._disconnected)
            return factory
        return _Listener

    return listener_class


_picows_listener_class = None


class PicowsTransport(Transport):
    """The picows client (default: fastest, see bench/RECEIVER_RESULTS.md)."""

    name = "picows"

    def __init__(self, *a, fast=None, **kw) -> None:
        super().__init__(*a, **kw)
        if _pw is None:  # pragma: no cover
            raise TransportError("the picows package is not installed")
        #: capture.receiver._fastpath.FastState of the connection, or None: with it (and
        #: the compiled module built), complete data messages above the
        #: connection's peek size go to the ring without a Python call.
        self.fast = fast
        self._ws = None
        self._error: tuple[int, str] | None = None

    async def connect(self, url: str, headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> None:
        global _picows_listener_class
        if _picows_listener_class is None:
            _picows_listener_class = _make_picows_listener()
        listener = _picows_listener_class(self)
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        try:
            ws, _ = await asyncio.wait_for(_pw.ws_connect(
                listener, url, websocket_handshake_timeout=timeout,
                enable_auto_ping=False, enable_auto_pong=False,
                # Frames up to max_message; fragmented messages are checked as joined.
                max_frame_size=self.max_message, extra_headers=hdrs,
                read_buffer_init_size=256 * 1024, max_redirects=0), timeout)
        except _pw.WSHandshakeError as exc:
            status = getattr(getattr(exc, "response", None), "status", None)
            status = int(status) if status is not None else None
            raise ConnectFailed(url, f"handshake refused: HTTP {status}" if status
                                else f"handshake failed: {exc}", status) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise ConnectFailed(url, f"no handshake within {timeout:g}s") from None
        except (OSError, _pw.WSError, ValueError) as exc:
            raise ConnectFailed(url, f"{type(exc).__name__}: {exc}") from None
        self._ws = ws

    def _usable(self) -> bool:
        ws = self._ws
        return ws is not None and not ws.is_close_frame_sent and not ws.is_disconnected

    def send_text(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if self._usable():
            self._ws.send(_pw.WSMsgType.TEXT, data)

    def send_ping(self, data: bytes = b"") -> None:
        if self._usable():
            self._ws.send_ping(data)

    def send_pong(self, data: bytes = b"") -> None:
        if self._usable():
            self._ws.send_pong(data)

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 2.0) -> CloseInfo:
        ws = self._ws
        if ws is None or self._done is None:
            return CloseInfo(1006, "never connected", "client")
        if not self._done.done():
            self._closing_by_us = True
            if not ws.is_close_frame_sent:
                ws.send_close(int(code), reason.encode())
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                ws.disconnect(False)
                await asyncio.shield(self._done)
        return self._done.result()

    def abort(self) -> None:
        if self._ws is not None:
            self._closing_by_us = True
            self._ws.disconnect(False)

    def _disconnected(self, ws) -> None:
        if self._error is not None:
            self._finish(*self._error)
            return
        hs = ws.close_handshake
        sent = hs.sent if hs is not None else None
        if sent is not None and not self._closing_by_us:
            code = sent.code.value if hasattr(sent.code, "value") else int(sent.code)
            if code in (1002, 1007, 1009):
                # We refused the peer's frame (picows closes by itself on a frame
                # over max_frame_size): that is why the connection ended, whether
                # or not the peer answered our close frame before the TCP drop.
                self._finish(code, sent.reason or "")
                return
        recv = hs.recv if hs is not None else None
        if recv is not None:
            code = recv.code.value if hasattr(recv.code, "value") else int(recv.code)
            # 1005: a close frame without a code.
            self._finish(code or 1005, recv.reason or "")
        else:
            self._finish(1006, "connection lost without a close frame")


# --------------------------------------------------------------------------
# websockets
# --------------------------------------------------------------------------

def _make_ws_connection_class():
    from websockets.asyncio.client import ClientConnection
    from websockets.frames import Opcode

    TEXT, BINARY, CONT, PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG
    time_ns = time.time_ns

    class _CaptureConnection(ClientConnection):
        """Delivers frames from the protocol's event callback, skipping the
        message queue: no task switch, no decode, exact bytes."""

        capture: "WebsocketsTransport"

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self._rx_ns = 0
            self._frag: bytearray | None = None
            self._frag_flags = 0

        def data_received(self, data: bytes) -> None:
            self._rx_ns = time_ns()  # first: one read, one receive time
            super().data_received(data)

        def process_event(self, event) -> None:
            if self.response is None:
                super().process_event(event)  # the handshake response
                if self.protocol.handshake_exc is None:
                    self.capture._opened(self)
                return
            op = event.opcode
            if op is TEXT or op is BINARY:
                if event.fin:
                    d = event.data   # a bytearray: small ones go to the ring as bytes (cheaper)
                    self.capture.on_message(bytes(d) if len(d) < 65536 else d, self._rx_ns,
                                            0 if op is TEXT else _BINARY)
                else:
                    self._frag = bytearray(event.data)
                    self._frag_flags = 0 if op is TEXT else _BINARY
            elif op is CONT:
                if self._frag is None:
                    return
                self._frag += event.data
                if event.fin:
                    buf, self._frag = self._frag, None
                    self.capture.on_message(buf, self._rx_ns, self._frag_flags)
            elif op is PONG:
                self.acknowledge_pings(bytes(event.data))
                self.capture.on_pong(bytes(event.data))
            # PING: the protocol already queued the pong; CLOSE: the protocol
            # answers and connection_lost follows.

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            self.capture._lost(self)

    return _CaptureConnection


_WsConnection = None


class WebsocketsTransport(Transport):
    """The ``websockets`` library client."""

    name = "websockets"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self._ws = None
        self._opened_called = False

    async def connect(self, url: str, headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> None:
        global _WsConnection
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        if _WsConnection is None:
            _WsConnection = _make_ws_connection_class()
        transport = self

        class _Conn(_WsConnection):  # binds this transport before any byte arrives
            capture = transport

        self._done = asyncio.get_running_loop().create_future()
        try:
            self._ws = await connect(
                url, additional_headers=headers or None, user_agent_header=USER_AGENT,
                compression=None, max_size=self.max_message, open_timeout=timeout,
                ping_interval=None, ping_timeout=None, close_timeout=2,
                max_queue=None, write_limit=2 ** 20, create_connection=_Conn,
                proxy=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectFailed(url, f"handshake refused: HTTP {status}", int(status)) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise ConnectFailed(url, f"no handshake within {timeout:g}s") from None
        except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
            raise ConnectFailed(url, f"{type(exc).__name__}: {exc}") from None

    def _opened(self, ws) -> None:
        if not self._opened_called:
            self._opened_called = True
            self.on_open()

    def _lost(self, ws) -> None:
        code = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ""
        if code == 1006 and not reason:
            reason = "connection lost without a close frame"
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None and not self._closing_by_us:
            code, reason = rcvd.code, rcvd.reason
        if self._done is not None and not self._done.done() and ws.protocol.close_sent is not None \
                and ws.protocol.close_sent.code == 1009 and not self._closing_by_us:
            self.close_info = CloseInfo(1009, ws.protocol.close_sent.reason, "error")
            self._done.set_result(self.close_info)
            return
        self._finish(code, reason)

    def _send(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_swallow)

    def send_text(self, data: bytes | str) -> None:
        if self._ws is None:
            return
        if isinstance(data, str):
            data = data.encode()
        # text=True sends bytes as a text frame without a decode/encode round trip.
        self._send(self._ws.send(data, text=True))

    def send_ping(self, data: bytes = b"") -> None:
        if self._ws is not None:
            self._send(self._ws.ping(data or None))

    def send_pong(self, data: bytes = b"") -> None:
        if self._ws is not None:
            self._send(self._ws.pong(data))

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 2.0) -> CloseInfo:
        if self._ws is None or self._done is None:
            return CloseInfo(1006, "never connected", "client")
        if not self._done.done():
            self._closing_by_us = True
            self._ws.close_timeout = timeout
            try:
                await asyncio.wait_for(self._ws.close(code, reason), timeout + 1)
            except (TimeoutError, asyncio.TimeoutError):
                self.abort()
            await asyncio.shield(self._done)
        return self._done.result()

    def abort(self) -> None:
        if self._ws is not None:
            self._closing_by_us = True
            self._ws.transport.abort()


def _swallow(task: asyncio.Future) -> None:
    # A send on a connection that just closed fails; the close is reported
    # through wait_closed(), so the exception itself carries nothing new.
    if not task.cancelled():
        task.exception()


def make_transport(name: str, on_message: OnMessage, **kw) -> Transport:
    """``"picows"`` or ``"websockets"`` -> a fresh :class:`Transport`.

    Raises:
        TransportError: unknown name.
    """
    fast = kw.pop("fast", None)
    if name == "picows":
        return PicowsTransport(on_message, fast=fast, **kw)
    if name == "websockets":
        return WebsocketsTransport(on_message, **kw)
    raise TransportError(f"unknown transport {name!r}; choose one of {', '.join(TRANSPORTS)}")


def default_transport() -> str:
    """The configured default: ``CAPTURE_TRANSPORT`` or picows when installed."""
    env = os.environ.get("CAPTURE_TRANSPORT")
    if env:
        return env
    return "picows" if _pw is not None else "websockets"
