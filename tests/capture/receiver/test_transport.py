"""Both transports against a scripted WebSocket server: exact bytes, text vs
binary, fragmented messages, big messages, pings/pongs, close codes, and
handshake failures translated into ConnectFailed."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import socket

import pytest
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response


from capture.receiver.transport import CloseInfo, ConnectFailed, TransportError, make_transport  # noqa: E402
from common.errors import CaptureError  # noqa: E402
from ring.frame import FrameFlags  # noqa: E402
from timing import timeout  # noqa: E402

TRANSPORTS = ["picows", "websockets"]
BIN = int(FrameFlags.BINARY)
BIG = bytes(range(256)) * (3 * 4096)          # 3 MiB, every byte value
SCRIPT = [("text", b'{"a":1}'), ("binary", b"\x00\x01\xff"),
          ("text", b"\xff\xfe not utf-8"), ("text", b""),
          ("frag", [b'{"frag', b'mented":', b'"yes"}']), ("binary", BIG),
          ("text", "caf\u00e9 \u2603".encode())]


def _expected():
    out = []
    for kind, data in SCRIPT:
        if kind == "frag":
            out.append((b"".join(data), 0))
        else:
            out.append((data, BIN if kind == "binary" else 0))
    return out


async def _handler(ws):
    path = ws.request.path
    if path == "/script":
        for kind, data in SCRIPT:
            if kind == "frag":
                await ws.send([d.decode() for d in data])
            else:
                await ws.send(data, text=(kind == "text"))
        async for msg in ws:                    # echo what the client sends
            await ws.send(b"echo:" + (msg.encode() if isinstance(msg, str) else msg), text=True)
    elif path == "/close":
        await ws.send("one")
        await ws.close(1001, "bye")
    elif path == "/drop":
        await ws.send("one")
        await asyncio.sleep(0.05)
        ws.transport.abort()
    elif path == "/big":
        await ws.send(b"x" * (2 << 20), text=True)
        await ws.wait_closed()
    elif path == "/bigfrag":                   # each fragment fits, the message does not
        await ws.send([b"x" * (512 << 10)] * 3, text=True)
        await ws.wait_closed()
    elif path == "/ping":
        pong = await ws.ping(b"srv")           # the client must answer
        await asyncio.wait_for(pong, 5)
        await ws.send("pinged")
        await ws.wait_closed()


def _process_request(conn, request):
    if request.path == "/busy":
        return Response(429, "Too Many Requests", Headers([("Content-Length", "0")]), b"")
    return None


async def _with_server(body):
    async with serve(_handler, "127.0.0.1", 0, process_request=_process_request,
                     max_size=None, compression=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        return await asyncio.wait_for(body(f"ws://127.0.0.1:{port}"), timeout(20))


class Sink:
    def __init__(self):
        self.events = []
        self.msgs = []
        self.pongs = []
        self.got = asyncio.Event()

    def on_message(self, payload, ts, flags):
        self.events.append("msg")
        self.msgs.append((bytes(payload), ts, flags))   # copy: views are borrowed
        self.got.set()

    def on_open(self):
        self.events.append("open")

    def on_pong(self, p):
        self.pongs.append(p)
        self.got.set()

    def make(self, name, **kw):
        return make_transport(name, self.on_message, on_open=self.on_open,
                              on_pong=self.on_pong, **kw)

    async def until(self, pred):
        while not pred():
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), timeout(10))


@pytest.mark.parametrize("name", TRANSPORTS)
def test_exact_bytes_flags_fragments_and_big_messages(name):
    async def body(base):
        s = Sink()
        t = s.make(name)
        await t.connect(base + "/script")
        want = _expected()
        await s.until(lambda: len(s.msgs) >= len(want))
        assert [(p, f) for p, f in [(m[0], m[2]) for m in s.msgs]] == want
        assert s.events[0] == "open"           # opened before the first message
        ts = [m[1] for m in s.msgs]
        assert ts == sorted(ts) and ts[0] > 1_700_000_000 * 10**9
        t.send_text(b'{"method":"ping"}')
        t.send_text("str also works")
        await s.until(lambda: len(s.msgs) >= len(want) + 2)
        assert [m[0] for m in s.msgs[-2:]] == [b'echo:{"method":"ping"}', b"echo:str also works"]
        t.send_ping(b"abc")
        await s.until(lambda: s.pongs)
        assert s.pongs == [b"abc"]
        info = await t.close(1000, "done")
        assert info == CloseInfo(1000, "done", "client") or (info.code, info.by) == (1000, "client")
        assert t.closed and (await t.wait_closed()) == info
    asyncio.run(_with_server(body))


@pytest.mark.parametrize("name", TRANSPORTS)
def test_server_close_drop_and_server_ping(name):
    async def body(base):
        s = Sink()
        t = s.make(name)
        await t.connect(base + "/close")
        info = await asyncio.wait_for(t.wait_closed(), timeout(10))
        assert (info.code, info.reason, info.by) == (1001, "bye", "server")
        assert s.msgs[0][0] == b"one"

        s = Sink()
        t = s.make(name)
        await t.connect(base + "/drop")
        info = await asyncio.wait_for(t.wait_closed(), timeout(10))
        assert (info.code, info.by) == (1006, "server")

        s = Sink()
        t = s.make(name)
        await t.connect(base + "/ping")        # the server pings; the library pongs
        await s.until(lambda: s.msgs)
        assert s.msgs[0][0] == b"pinged"
        await t.close()
    asyncio.run(_with_server(body))


@pytest.mark.parametrize("path", ["/big", "/bigfrag"])       # one frame, or fragments
@pytest.mark.parametrize("name", TRANSPORTS)
def test_message_above_max_message_closes_1009(name, path):
    async def body(base):
        s = Sink()
        t = s.make(name, max_message=1 << 20)
        await t.connect(base + path)
        info = await asyncio.wait_for(t.wait_closed(), timeout(10))
        assert info.code == 1009 and info.by == "error"
        assert s.msgs == []
    asyncio.run(_with_server(body))


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


@pytest.mark.parametrize("name", TRANSPORTS)
def test_one_receive_stamp_per_socket_read(name):
    """Messages that arrive in one read share its stamp, taken before any of
    them is parsed; the next read gets its own, even when the previous one
    ended with a frame the application never sees (a ping)."""
    async def serve_raw(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        key = [ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                  .digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        # One write, one TCP segment on loopback: the client reads it at once.
        writer.write(_ws_frame(1, b'{"n":1}') + _ws_frame(1, b'{"n":2}') + _ws_frame(9, b"p"))
        pong = await reader.readexactly(2 + 4 + 1)      # masked client frame, 1-byte payload
        assert pong[0] == 0x8A
        await asyncio.sleep(0.05)
        writer.write(_ws_frame(1, b'{"n":3}'))
        await reader.read()                              # until the client closes

    async def main():
        srv = await asyncio.start_server(serve_raw, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        async with srv:
            s = Sink()
            t = s.make(name)
            await t.connect(f"ws://127.0.0.1:{port}/")
            await s.until(lambda: len(s.msgs) >= 3)
            t.abort()
        (p1, ts1, _), (p2, ts2, _), (p3, ts3, _) = s.msgs
        assert (p1, p2, p3) == (b'{"n":1}', b'{"n":2}', b'{"n":3}')
        assert ts1 == ts2 and ts3 > ts2      # a stale stamp would equal the first read's
    asyncio.run(asyncio.wait_for(main(), timeout(20)))


@pytest.mark.parametrize("name", TRANSPORTS)
def test_handshake_refused_and_connection_refused(name):
    async def body(base):
        s = Sink()
        with pytest.raises(ConnectFailed) as ei:
            await s.make(name).connect(base + "/busy", timeout=5)
        assert ei.value.status == 429 and isinstance(ei.value, (TransportError, CaptureError))
        with socket.socket() as probe:   # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(ConnectFailed) as ei:
            await s.make(name).connect(f"ws://127.0.0.1:{port}/x", timeout=5)
        assert ei.value.status is None
    asyncio.run(_with_server(body))


def test_unknown_transport_is_a_typed_error():
    with pytest.raises(TransportError):
        make_transport("carrier-pigeon", lambda *a: None)
