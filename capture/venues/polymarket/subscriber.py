"""Polymarket subscriptions: the initial ``{"assets_ids":..,"type":"market"}``
then ``operation: subscribe``; no acks at all (live right after sending)."""
from __future__ import annotations

from typing import Any

from capture.venues.subscribe import Request, Subscriber, chunks


class PolymarketSubscriber(Subscriber):
    acks = False

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.started = False

    def fresh(self) -> None:
        super().fresh()
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
