"""Which connection carries which instrument, and which shard runs which connection.

A pure function of (instrument list, config): every host computes the same
plan for ``capture run --shard N`` without talking to the others.

Theory of operation
-------------------
*Units.*  What is placed is a :class:`Unit`: a hashing key and the members
subscribed under it.  Usually one symbol is one unit; a Polymarket market is
one unit whose members are its outcome tokens (keyed by condition id), so the
Yes and No books always share a connection.  A unit's weight is its number
of members, counted against a connection's capacity (Polymarket: ~500 tokens).

*Rendezvous (highest random weight) hashing.*  Every (unit, connection)
pair gets a score from BLAKE2b -- never Python's ``hash()``, which is salted
per process -- and a unit goes to its highest-scoring connection.  Adding a
unit or a connection only moves what must move: a new connection takes
about ``1/n`` of the units, the rest stay put.

*Bounded load.*  Connections have a capacity, so a unit whose favourite
connection is full goes to its next choice.  Units are placed in a fixed
order (sorted by key) so the result does not depend on input order.  The
number of connections is sized so the *expected* load is ``fill`` x capacity
(default 80 %); with that headroom the bound rarely binds and stability is
close to pure rendezvous.  If placement still fails, one more connection is
added and placement is repeated (deterministically).

*Shards.*  Connections (named ``{venue}-{i}``) are placed on shards the same
way, with a bound of ``ceil(n / shards * (1 + slack))`` connections per shard.
Each venue is planned on its own, so a change in one venue's instrument
list never moves another venue's connections.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from common.errors import ConfigError


_MASK = (1 << 64) - 1


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


def _mix(z: int) -> int:
    """splitmix64's finaliser: a cheap, well-mixing 64-bit bijection."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def score(key: str, bucket: str) -> int:
    """Stable 64-bit rendezvous score of ``key`` on ``bucket``.

    BLAKE2b hashes each name once; the pair is combined with a 64-bit mixer,
    so placing ``u`` units on ``n`` buckets costs ``u + n`` BLAKE2b calls and
    ``u * n`` integer mixes (tens of thousands of Polymarket tokens stay fast).
    """
    return _mix(_h(key) ^ _h(bucket))


def rank(key: str, buckets: Sequence[str]) -> list[str]:
    """``buckets`` best first for ``key`` (ties broken by position)."""
    kh = _h(key)
    scored = [(-_mix(kh ^ _h(b)), i, b) for i, b in enumerate(buckets)]
    return [b for _, _, b in sorted(scored)]


@dataclass(frozen=True, slots=True)
class Unit:
    """Members that must share a connection, placed by ``key``."""

    key: str
    members: tuple[str, ...]

    @property
    def weight(self) -> int:
        return len(self.members)


def symbol_units(symbols: Iterable[str]) -> list[Unit]:
    """One unit per symbol (Kraken, Kraken Futures, Kalshi)."""
    return [Unit(s, (s,)) for s in dict.fromkeys(symbols)]


def group_units(groups: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]]
                ) -> list[Unit]:
    """One unit per group: Polymarket ``condition id -> token ids``."""
    items = groups.items() if isinstance(groups, Mapping) else groups
    return [Unit(k, tuple(dict.fromkeys(v))) for k, v in items]


@dataclass(frozen=True, slots=True)
class Connection:
    """One WebSocket connection of the plan."""

    id: str
    shard: int
    units: tuple[Unit, ...]

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(m for u in self.units for m in u.members)

    @property
    def load(self) -> int:
        return sum(u.weight for u in self.units)


@dataclass(frozen=True)
class Plan:
    """The assignment for one venue across all shards."""

    venue: str
    shards: int
    capacity: int
    connections: tuple[Connection, ...]
    _member_conn: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for c in self.connections:
            for m in c.members:
                self._member_conn[m] = c.id

    def for_shard(self, shard: int) -> tuple[Connection, ...]:
        """The connections ``capture run --shard N`` opens."""
        return tuple(c for c in self.connections if c.shard == shard)

    def connection_of(self, member: str) -> str | None:
        return self._member_conn.get(member)

    def as_dict(self) -> dict:
        """Plain data (for comparing plans across processes, and for logs)."""
        return {"venue": self.venue, "shards": self.shards, "capacity": self.capacity,
                "connections": [{"id": c.id, "shard": c.shard,
                                 "units": [[u.key, list(u.members)] for u in c.units]}
                                for c in self.connections]}


class _NoRoom(Exception):
    pass


def _place(units: Sequence[Unit], buckets: Sequence[str], capacity: int) -> dict[str, list[Unit]]:
    """Bounded-load rendezvous: each unit to its best bucket with room."""
    out: dict[str, list[Unit]] = {b: [] for b in buckets}
    load = [0] * len(buckets)
    bh = [_h(b) for b in buckets]
    for u in units:
        kh = _h(u.key)
        s = [_mix(kh ^ h) for h in bh]
        best = max(range(len(s)), key=s.__getitem__)
        if load[best] + u.weight > capacity:
            # Rare with headroom: walk the unit's preference list.
            for best in sorted(range(len(s)), key=lambda i: (-s[i], i)):
                if load[best] + u.weight <= capacity:
                    break
            else:
                raise _NoRoom(u.key)
        out[buckets[best]].append(u)
        load[best] += u.weight
    return out


def _normalise(units: Iterable[Unit]) -> list[Unit]:
    """Sort by key, merge duplicate keys, drop members already placed."""
    by_key: dict[str, list[str]] = {}
    for u in units:
        by_key.setdefault(u.key, []).extend(u.members)
    seen: set[str] = set()
    out = []
    for key in sorted(by_key):
        members = tuple(m for m in dict.fromkeys(by_key[key]) if m not in seen)
        seen.update(members)
        if members:
            out.append(Unit(key, members))
    return out


def assign_shards(connection_ids: Sequence[str], shards: int, slack: float = 0.1) -> dict[str, int]:
    """Place connections on shards ``0..shards-1`` (bounded rendezvous)."""
    if shards < 1:
        raise ConfigError(None, "shards", f"need at least one shard, got {shards}")
    names = [f"shard-{k}" for k in range(shards)]
    cap = max(1, math.ceil(len(connection_ids) / shards * (1 + slack)))
    placed = _place([Unit(c, (c,)) for c in connection_ids], names, cap)
    return {u.key: int(name.rsplit("-", 1)[1]) for name, us in placed.items() for u in us}


def plan(venue: str, units: Iterable[Unit], *, shards: int, capacity: int,
         fill: float = 0.8, min_connections: int = 1, shard_slack: float = 0.1) -> Plan:
    """Assign units to connections and connections to shards.

    Args:
        venue: venue name; names the connections ``{venue}-{i}``.
        units: what to place (see :func:`symbol_units`, :func:`group_units`).
        shards: number of shards in the deployment.
        capacity: maximum members per connection.
        fill: target mean load as a fraction of ``capacity`` (headroom keeps
            the plan stable as instruments are added).
        min_connections: open at least this many connections.

    Raises:
        ConfigError: bad numbers, or a unit larger than a connection.
    """
    if capacity < 1 or not 0 < fill <= 1 or min_connections < 1:
        raise ConfigError(None, "capacity", f"bad capacity={capacity} fill={fill} "
                                            f"min_connections={min_connections}")
    us = _normalise(units)
    big = [u.key for u in us if u.weight > capacity]
    if big:
        raise ConfigError(None, "capacity",
                          f"{venue}: units {big[:3]} have more members than capacity {capacity}")
    total = sum(u.weight for u in us)
    n = max(min_connections, math.ceil(total / (capacity * fill)))
    while True:
        conn_ids = [f"{venue}-{i}" for i in range(n)]
        try:
            placed = _place(us, conn_ids, capacity)
            break
        except _NoRoom:
            n += 1
    shard_of = assign_shards(conn_ids, shards, shard_slack)
    conns = tuple(Connection(cid, shard_of[cid], tuple(placed[cid])) for cid in conn_ids)
    return Plan(venue, shards, capacity, conns)


def moved(before: Plan, after: Plan) -> set[str]:
    """Members present in both plans whose connection changed."""
    return {m for m, c in before._member_conn.items()
            if after.connection_of(m) not in (None, c)}
