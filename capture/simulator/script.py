"""What a simulated venue does: the :class:`Scenario`.

A scenario is plain data, shared by every venue server of one simulator, so
a test states the whole fault script in one place and a subprocess simulator
receives it as JSON (:meth:`Scenario.to_json` / :meth:`Scenario.from_json`).

Counting rules (they make scripts deterministic without timing):

* a *data message* is any market-data frame a venue sends (snapshots,
  updates, trades, tickers, book dumps, large frames); acks, errors, pongs,
  heartbeats and status/info frames are *control* frames and never count;
* every ``*_after`` / ``*_every`` threshold counts data messages per
  connection, in send order;
* ``disconnect_connections`` / ``silence_connections`` /
  ``reject_connects`` count connection attempts per venue server, in accept
  order (0-based index < K means "the first K").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

from common.errors import ConfigError

#: Venue names, as used by :class:`capture.simulator.Simulator` and the CLI.
VENUES = ("kraken", "kraken_futures", "polymarket", "kalshi")


@dataclass(frozen=True)
class Blast:
    """Benchmark mode: after the first subscription ack, send ``frames``
    venue-shaped data frames of exactly ``size`` bytes as fast as the socket
    takes them, then one marker frame ``{"blast_end":true,"frames":N}``.

    ``distinct`` frames are pre-built and pre-framed once and then cycled
    (frame i is frame ``i % distinct``), so the sender costs one
    ``transport.write`` per block rather than Python work per frame.

    ``rate`` paces the blast: frames per second on each connection, written
    as slices of the pre-built block every tick; 0 sends as fast as the
    socket takes them.
    """

    frames: int
    size: int = 256
    distinct: int = 4096
    rate: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """The script every connection of the simulator follows.

    Args:
        seed: all data content derives from it (per venue, channel and symbol),
            so two runs with the same seed and the same subscriptions send the
            same data messages byte for byte.
        rate: steady data messages per second per connection after the first
            subscription; 0 sends only the snapshots; ``float("inf")`` sends as
            fast as the socket takes them.
        max_messages: stop sending data after this many data messages
            (keepalives continue).
        burst_every, burst_size: after every ``burst_every`` steady messages,
            send ``burst_size`` more back to back.
        large_every, large_size: every ``large_every``-th data message is a
            large frame of at least ``large_size`` bytes (a big book for
            Polymarket/Kalshi, a big trade batch for Kraken/Futures).
        large_snapshot_size: Polymarket: pad the initial dump's books to at
            least this many bytes (a 2-3 MiB frame like the real venue's).
        disconnect_after: close the connection after this many data messages.
        disconnect_connections: only the first K connections are disconnected
            (None: all of them), so a reconnecting client eventually settles.
        disconnect_mode: "close" sends a close frame (1001 going away);
            "drop" closes TCP without one (the client sees 1006).
        silence_after: after this many data messages send no data but keep
            answering keepalives (PONG, pong, heartbeats, protocol pings).
        silence_connections: only the first K connections go silent.
        malformed_every: after every N data messages inject one malformed
            frame, alternating non-JSON text and truncated JSON.
        error_symbols: symbols/products/tickers/token ids whose subscription
            gets the venue's error reply (besides unknown ones).
        reject_connects: answer HTTP 429 to the first K connection attempts
            of each venue server.
        gap_every: Kalshi/Kraken Futures: every N-th sequenced message skips
            one sequence number.
        corrupt_checksum_every: Kraken spot: every N-th book message carries a
            wrong checksum.
        subscribe_burst, subscribe_refill: a token bucket per connection over
            subscription commands (capacity, tokens per second); None disables
            the limit.  Kraken spot refuses with "Exceeded msg rate", Kalshi
            with error code 27 "Too many requests".
        kraken_bare_rate_limit: Kraken spot refuses with the bare frame
            ``{"Error": "Exceeded msg rate"}`` (no method, no req_id, capital
            E) instead of the request's error reply.
        heartbeat_interval: Kraken spot idle heartbeat and Futures heartbeat
            feed period, seconds.
        kalshi_ping_interval: Kalshi WebSocket protocol ping period, seconds.
        kalshi_max_skew: Kalshi handshake timestamp tolerance, seconds.
        polymarket_max_assets: tokens per connection that get updates; the
            excess is accepted but silently gets nothing, like the venue.
        kalshi_sid_model: how ``subscribe`` commands for ``orderbook_delta``
            get their sid, the two readings of the live venue: "per_command"
            (each command opens its own sid) or "shared" (every command for
            the channel joins the one sid, and its ``seq`` numbers them all).
        kalshi_reply_seq: ``ok`` and ``unsubscribed`` replies on a book sid
            carry a ``seq`` that takes a slot in the sid's numbering.
        instruments: instruments per venue in the discovery universe.
        listed_closed: closed markets the REST listings hold beyond the
            universe (Gamma: closed markets; Kalshi: settled markets), listed
            before the universe's and generated one page at a time, so a
            listing of a million costs nothing until it is read.  Server-side
            filters (Gamma ``closed``/``active``, Kalshi ``status``) leave them
            out without touching them.
        book_depth: default book depth (levels per side).
        page_failures: REST pagination faults, ``{page_index: n}``: page k
            (0-based; the first page is 0) answers HTTP 500 to its first n
            requests, per endpoint.
        clock: "sim" (timestamps advance 1 ms per data message from a fixed
            epoch: deterministic) or "wall" (real time, for latency benchmarks).
        kraken_decimal_strings: Kraken spot sends decimals as JSON number
            literals with the pair's fixed digits (like the venue, e.g.
            ``0.10000000``); True sends them as strings instead.
        record: what each connection records of what it sent: "frames" (every
            payload plus count/digest), "digest" (count, bytes, digest) or
            "count" (count and bytes only: blast benchmarks).
        blast: benchmark mode, see :class:`Blast`.
    """

    seed: int = 0
    rate: float = 50.0
    max_messages: int | None = None
    burst_every: int = 0
    burst_size: int = 0
    large_every: int = 0
    large_size: int = 2 * 1024 * 1024 + 512 * 1024
    large_snapshot_size: int = 0
    disconnect_after: int | None = None
    disconnect_connections: int | None = None
    disconnect_mode: str = "close"
    silence_after: int | None = None
    silence_connections: int | None = None
    malformed_every: int = 0
    error_symbols: tuple[str, ...] = ()
    reject_connects: int = 0
    gap_every: int = 0
    corrupt_checksum_every: int = 0
    subscribe_burst: int | None = None
    subscribe_refill: float = 1.0
    kraken_bare_rate_limit: bool = False
    heartbeat_interval: float = 1.0
    kalshi_ping_interval: float | None = 10.0
    kalshi_max_skew: float = 30.0
    polymarket_max_assets: int = 500
    kalshi_sid_model: str = "per_command"
    kalshi_reply_seq: bool = False
    instruments: int = 20
    listed_closed: int = 0
    book_depth: int = 10
    page_failures: dict[int, int] = field(default_factory=dict)
    clock: str = "sim"
    kraken_decimal_strings: bool = False
    record: str = "frames"
    blast: Blast | None = None

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(None, f"scenario.{key}", why)

        if self.rate < 0:
            raise bad("rate", "must be >= 0")
        if self.disconnect_mode not in ("close", "drop"):
            raise bad("disconnect_mode", "must be 'close' or 'drop'")
        if self.kalshi_sid_model not in ("per_command", "shared"):
            raise bad("kalshi_sid_model", "must be 'per_command' or 'shared'")
        if self.clock not in ("sim", "wall"):
            raise bad("clock", "must be 'sim' or 'wall'")
        if self.record not in ("frames", "digest", "count"):
            raise bad("record", "must be 'frames', 'digest' or 'count'")
        if self.listed_closed < 0:
            raise bad("listed_closed", "must be >= 0")
        if self.instruments < 5:
            raise bad("instruments", "must be >= 5 (the well-known names come first)")
        if not 1 <= self.book_depth <= 1000:
            raise bad("book_depth", "must be in 1..1000")
        for key in ("burst_every", "burst_size", "large_every", "malformed_every",
                    "gap_every", "corrupt_checksum_every", "reject_connects"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.heartbeat_interval <= 0:
            raise bad("heartbeat_interval", "must be > 0")
        if self.blast is not None and (self.blast.frames < 0 or self.blast.distinct < 1):
            raise bad("blast", "frames must be >= 0 and distinct >= 1")
        if self.blast is not None and not 0 <= self.blast.rate < float("inf"):
            raise bad("blast.rate", "must be a finite number >= 0 (0: unpaced)")
        # JSON object keys are strings: accept them back from from_json().
        object.__setattr__(self, "page_failures",
                           {int(k): int(v) for k, v in self.page_failures.items()})
        object.__setattr__(self, "error_symbols", tuple(self.error_symbols))

    def replace(self, **changes: Any) -> "Scenario":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> bytes:
        d = dataclasses.asdict(self)
        if d["rate"] == float("inf"):
            d["rate"] = "inf"
        d["page_failures"] = {str(k): v for k, v in self.page_failures.items()}
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Scenario":
        d = orjson.loads(raw)
        if d.get("rate") == "inf":
            d["rate"] = float("inf")
        if d.get("blast") is not None:
            d["blast"] = Blast(**d["blast"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(None, "scenario", f"unknown keys {sorted(unknown)}")
        return cls(**d)
