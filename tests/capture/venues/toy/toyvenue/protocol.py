"""The toy venue's frames (sans-I/O) and its traits."""
from __future__ import annotations

import re

import orjson

from capture.venues.base import (Classified, Keepalive, Kind, RouteKey, SeqInfo, SeqLayout,
                                 VenueDefaults, dumps, loads_small)

from toyvenue.subscriber import ToySubscriber

_OPS = {"ack": Kind.ACK, "err": Kind.ERROR, "hb": Kind.HEARTBEAT}


def _doc(raw: bytes) -> dict | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def classify(raw: bytes) -> Classified:
    doc = loads_small(raw)
    if not isinstance(doc, dict):
        return Classified(Kind.MALFORMED)
    op = doc.get("op")
    if op is None:
        return Classified(Kind.DATA, "quotes", doc.get("sym"))
    kind = _OPS.get(op, Kind.UNKNOWN)
    return Classified(kind, doc.get("ch"), doc.get("sym"), req_id=doc.get("id"),
                      detail=doc.get("msg"))


def route(raw: bytes) -> RouteKey | None:
    doc = _doc(raw)
    if doc is None or "op" in doc or not isinstance(doc.get("sym"), str):
        return None
    return RouteKey("quotes", doc["sym"])


def sequence(raw: bytes) -> SeqInfo | None:
    doc = _doc(raw)
    if doc is None or doc.get("ch") not in ("quotes", "snapshot") or not isinstance(doc.get("seq"), int):
        return None
    return SeqInfo(doc["sym"], doc["seq"], doc["ch"] == "snapshot", doc["sym"])


def exchange_ts_ns(raw: bytes) -> int | None:
    return None


class Toy(VenueDefaults):
    """Builders for one connection (holds the request id counter)."""

    name = "toy"
    url = "ws://127.0.0.1:1/"       # the test always gives its server's URL
    channels = frozenset({"quotes"})
    default_channels = ("quotes",)
    per_connection = 10
    keepalive = Keepalive(client_ping_interval=None, app_ping=False, server_heartbeat=None)
    subscriber = ToySubscriber
    # The hot path's form of sequence(): groups (snapshot marker, symbol, seq);
    # control frames ("op" first) match with every group None.
    seq_layout = SeqLayout(
        head=re.compile(rb'\{(?:"ch":"(?:(snapshot)|quotes)","sym":"([A-Z]{1,16})",'
                        rb'"seq":([0-9]{1,19})[,}]|"op":)'),
        hint=b'"seq"', canonical=bytes.decode, key_bytes=str.encode)

    classify = staticmethod(classify)
    route = staticmethod(route)
    sequence = staticmethod(sequence)
    exchange_ts_ns = staticmethod(exchange_ts_ns)

    def __init__(self) -> None:
        self._id = 1

    def next_id(self) -> int:
        self._id += 1
        return self._id - 1

    def subscribe(self, symbols: list[str], req_id: int) -> bytes:
        return dumps({"op": "sub", "id": req_id, "ch": "quotes", "symbols": symbols})

    def unsubscribe(self, symbols: list[str]) -> bytes:
        return dumps({"op": "unsub", "ch": "quotes", "symbols": symbols})
