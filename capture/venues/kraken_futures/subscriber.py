"""Kraken Futures subscriptions: one subscribe per feed; one ``subscribed``
per product.  A book repair is unsubscribe + subscribe of that one book."""
from __future__ import annotations

from capture.venues.subscribe import Request, Subscriber, chunks


class FuturesSubscriber(Subscriber):
    def subscribe(self, members: list[str]) -> list[Request]:
        return [Request(self.builder.subscribe(f, pids), f, tuple(pids), None,
                        {(f, p) for p in pids})
                for f in self.channels() for pids in chunks(members, self.chunk)]

    def unsubscribe(self, members: list[str]):
        return [(f, pids, self.builder.unsubscribe(f, pids))
                for f in self.channels() for pids in chunks(members, self.chunk)]

    def repair(self, symbol: str, stream_key: object = None):
        if "book" not in self.channels():
            return "", [], []
        req = Request(self.builder.subscribe("book", [symbol]), "book", (symbol,), None,
                      {("book", symbol)})
        return "resubscribe", [("book", self.builder.unsubscribe("book", [symbol]))], [req]

    def symbol_of(self, stream_key: object) -> str | None:
        if isinstance(stream_key, tuple) and len(stream_key) == 2:
            return stream_key[1]
        return None
