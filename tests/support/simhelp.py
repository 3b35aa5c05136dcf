"""Helpers for the simulator tests: a client that runs under asyncio.run,
receives with a deadline, and parses JSON keeping every decimal's digits."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect

from timing import timeout

JSON = Any


def loads_exact(raw: str | bytes) -> JSON:
    """JSON with decimals kept as their exact text (never floats)."""
    return json.loads(raw, parse_float=str)


def run(coro_fn: Callable[[], Awaitable[Any]], seconds: float = 30.0) -> Any:
    """Run an async test body with an overall deadline."""
    async def main() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout(seconds))
    return asyncio.run(main())


async def recv(ws: ClientConnection, seconds: float = 5.0) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout(seconds))


async def recv_json(ws: ClientConnection, seconds: float = 5.0) -> JSON:
    return loads_exact(await recv(ws, seconds))


async def recv_until(ws: ClientConnection, pred: Callable[[JSON], bool],
                     seconds: float = 5.0, limit: int = 100_000) -> tuple[JSON, list[JSON]]:
    """Receive until a message satisfies ``pred``; returns it and all before it."""
    seen = []
    for _ in range(limit):
        m = await recv_json(ws, seconds)
        if pred(m):
            return m, seen
        seen.append(m)
    raise AssertionError("predicate never matched")


def client(url: str, **kw: Any):
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", timeout(10))
    kw.setdefault("compression", None)
    # An unbounded queue: a paused reader would stall the closing handshake
    # behind unread frames until close_timeout.
    kw.setdefault("max_queue", None)
    return connect(url, **kw)


__all__ = ["client", "loads_exact", "recv", "recv_json", "recv_until", "run", "websockets"]
