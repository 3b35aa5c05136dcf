"""A fast WebSocket client for the replay benchmark, run as its own process (another
core): connects to a URL with picows, counts messages and bytes until the server
closes, prints one JSON line ``{"messages", "bytes", "seconds"}`` (from the
upgrade to the close frame).

    python dataout_bench_client.py ws://127.0.0.1:PORT/venue/0
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Counter(WSListener):
    def __init__(self) -> None:
        self.n = 0
        self.bytes = 0
        self.t0 = 0.0
        self.t1 = 0.0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.t0 = time.perf_counter()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.t1 = time.perf_counter()
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        self.n += 1
        self.bytes += frame.payload_size


async def main(url: str) -> None:
    transport, client = await ws_connect(Counter, url, max_frame_size=64 << 20)
    await transport.wait_disconnected()
    t1 = client.t1 or time.perf_counter()
    print(json.dumps({"messages": client.n, "bytes": client.bytes, "seconds": t1 - client.t0}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
