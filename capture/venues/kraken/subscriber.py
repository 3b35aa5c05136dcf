"""Kraken spot subscriptions: one subscribe per channel with all symbols
(chunked); one ack per symbol, echoing ``req_id``; errors carry the symbol
or at least the ``req_id``.  A book repair is unsubscribe + subscribe of that
one book (with a snapshot)."""
from __future__ import annotations

from capture.venues.subscribe import Request, Subscriber, chunks


class KrakenSubscriber(Subscriber):
    def __init__(self, *a: object) -> None:
        super().__init__(*a)  # type: ignore[arg-type]
        # the venue's rate-limit error texts (a trait of the protocol class, which imports this module)
        self.rate_limit_errors = self.venue_cls.rate_limit_errors

    def subscribe(self, members: list[str]) -> list[Request]:
        depth = int(self.options.get("depth", 10))
        out = []
        for ch in self.channels():
            for syms in chunks(members, self.chunk):
                rid = self.builder.next_req_id()
                out.append(Request(self.builder.subscribe(ch, syms, depth=depth, req_id=rid),
                                   ch, tuple(syms), rid, {(ch, s) for s in syms}))
        return out

    def unsubscribe(self, members: list[str]):
        depth = int(self.options.get("depth", 10))
        return [(ch, syms, self.builder.unsubscribe(ch, syms, depth=depth if ch == "book" else None))
                for ch in self.channels() for syms in chunks(members, self.chunk)]

    def app_ping(self) -> bytes:
        return self.builder.ping()

    def repair(self, symbol: str, stream_key: object = None):
        if "book" not in self.channels():
            return "", [], []
        depth = int(self.options.get("depth", 10))
        unsub = self.builder.unsubscribe("book", [symbol], depth=depth)
        rid = self.builder.next_req_id()
        req = Request(self.builder.subscribe("book", [symbol], depth=depth, snapshot=True, req_id=rid),
                      "book", (symbol,), rid, {("book", symbol)})
        return "resubscribe", [("book", unsub)], [req]
