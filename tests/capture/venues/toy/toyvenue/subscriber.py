"""The toy venue's subscriptions: one request for all symbols, one ack per
symbol; a book repair is unsubscribe + subscribe of that one symbol."""
from __future__ import annotations

from capture.venues.subscribe import Request, Subscriber


class ToySubscriber(Subscriber):
    def subscribe(self, members: list[str]) -> list[Request]:
        rid = self.builder.next_id()
        return [Request(self.builder.subscribe(members, rid), "quotes", tuple(members), rid,
                        {("quotes", s) for s in members})]

    def unsubscribe(self, members: list[str]):
        return [("quotes", members, self.builder.unsubscribe(members))]

    def repair(self, symbol: str, stream_key: object = None):
        rid = self.builder.next_id()
        req = Request(self.builder.subscribe([symbol], rid), "quotes", (symbol,), rid,
                      {("quotes", symbol)})
        return "resubscribe", [("quotes", self.builder.unsubscribe([symbol]))], [req]

    def symbol_of(self, stream_key: object) -> str | None:
        return stream_key if isinstance(stream_key, str) else None
