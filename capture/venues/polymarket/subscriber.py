"""Polymarket subscriptions: the initial ``{"assets_ids":..,"type":"market"}``
then ``operation: subscribe``; no acks at all (live right after sending)."""
from __future__ import annotations

from typing import Any

from capture.venues.subscribe import Request, Subscriber, chunks


class PolymarketSubscriber(Subscriber):
    acks = False

    def __init__(self, venue_cls: type, options: dict[str, Any]) -> None:
        # the token cap per connection (the receiver passes its capacity)
        self.max_tokens = int(options.get("max_tokens") or venue_cls.per_connection)
        super().__init__(venue_cls, options)
        self.builder = venue_cls(self.max_tokens)
        self.started = False

    def fresh(self) -> None:
        self.builder = self.venue_cls(self.max_tokens)
        self.started = False

    def subscribe(self, members: list[str]) -> list[Request]:
        out = []
        for ids in chunks(members, self.builder.max_tokens):
            if not self.started:
                self.started = True
                payload = self.builder.initial(ids, bool(self.options.get("custom_features", True)))
            else:
                payload = self.builder.subscribe(ids)
            out.append(Request(payload, "market", tuple(ids), None))
        return out

    def unsubscribe(self, members: list[str]):
        return [("market", ids, self.builder.unsubscribe(ids))
                for ids in chunks(members, self.builder.max_tokens)]

    def app_ping(self) -> bytes:
        return self.builder.ping()
