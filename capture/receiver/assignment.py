"""Which instruments this shard's connections carry: from explicit lists,
or from discovery plus the deterministic plan (:mod:`capture.receiver.sharding`),
so every host computes the same slice without talking to the others.
"""
from __future__ import annotations

from common.errors import ConfigError

from capture.receiver import sharding
from capture.receiver.settings import ReceiverConfig
from capture.venues import get as get_venue

def explicit_assignment(cfg: ReceiverConfig) -> dict[str, list[str]]:
    """Connection name -> instruments, from the explicit lists (no discovery)."""
    if cfg.connections:
        groups = [list(g) for g in cfg.connections if g]
    else:
        syms = list(dict.fromkeys(cfg.symbols or []))
        groups = [syms[i:i + cfg.capacity] for i in range(0, len(syms), cfg.capacity)]
    return {f"{cfg.venue}-{i}": g for i, g in enumerate(groups)}


def plan_assignment(cfg: ReceiverConfig, units: list[sharding.Unit]) -> dict[str, list[str]]:
    """This shard's slice of the deterministic plan (empty connections dropped)."""
    p = sharding.plan(cfg.venue, units, shards=cfg.shards, capacity=cfg.capacity,
                      min_connections=cfg.min_connections)
    return {c.id: list(c.members) for c in p.for_shard(cfg.shard) if c.members}


async def discover_units(cfg: ReceiverConfig) -> list[sharding.Unit]:
    """Fetch the venue's instruments (its ``discover`` trait) and turn them
    into placement units.

    Raises:
        DiscoveryError: a page kept failing (nothing partial is returned).
        ConfigError: the venue has no discovery.
    """
    venue = get_venue(cfg.venue)
    if venue.discover is None:
        raise ConfigError(None, "venue", f"no discovery for {cfg.venue!r}")
    return sharding.group_units(await venue.discover(cfg.discovery_url or None))


def cap_units(units: list[sharding.Unit], limit: int) -> list[sharding.Unit]:
    """The first units by key whose members fit in ``limit`` (deterministic)."""
    out, n = [], 0
    for u in sorted(units, key=lambda u: u.key):
        if n + u.weight > limit:
            break
        out.append(u)
        n += u.weight
    return out
