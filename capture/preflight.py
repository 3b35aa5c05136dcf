"""Checks of a parsed config against this host: what `capture run` would fail on.

The config parser (:mod:`capture.config`) checks that the file is well
formed.  These checks look at the world the shard will run in, so that
`capture config check` fails on the same things `capture run` would, and
`run` refuses at once, with one line naming the key, instead of a child
failing a few seconds later:

* a venue that needs a key (``needs_key``): the key file exists, is a regular
  file with mode 0600 (no group/other bits), and parses as the key;
* cores: every core of ``cores`` is in this process's allowed set
  (``sched_getaffinity``: a systemd ``CPUAffinity=`` or a cgroup cpuset
  narrows it);
* channels: every channel is one the venue has (its ``channels`` trait), and
  a venue whose channels are not configurable is given none but its own.

Discovery errors (``config check --discover``) are reported by the plan
itself (:func:`capture.cli.resolve_plan`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from capture import venues
from capture.config import Config
from capture.venues.kalshi.protocol import load_private_key
from common.errors import CaptureError, ConfigError


@dataclass(frozen=True)
class Problem:
    """One thing ``run`` would fail on: the config key and what is wrong."""
    key: str
    message: str
    shard: int | None = None

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def allowed_cores() -> set[int]:
    return set(os.sched_getaffinity(0))


def check(cfg: Config, shard_ids: Iterable[int] | None = None,
          cores: set[int] | None = None) -> list[Problem]:
    """Every problem of the shards ``shard_ids`` (default: all) on this host."""
    want = set(shard_ids) if shard_ids is not None else None
    allowed = allowed_cores() if cores is None else cores
    problems: list[Problem] = []
    keys_checked: set[str] = set()
    for i, s in enumerate(cfg.shards):
        if want is not None and s.id not in want:
            continue
        where = f"shard[{i}]"
        try:
            vcls = venues.get(s.venue)
        except ConfigError as e:
            problems.append(Problem(f"{where}.venue", e.reason, s.id))
            continue
        outside = sorted(set(s.cores) - allowed)
        if outside:
            problems.append(Problem(
                f"{where}.cores", f"core(s) {outside} are outside the cores this process may run on "
                f"{sorted(allowed)} (CPUAffinity= in the unit, or a cpuset, narrows them)", s.id))
        unknown = [c for c in s.channels if c not in vcls.channels]
        if unknown:
            problems.append(Problem(f"{where}.channels",
                                    f"unknown channel(s) {unknown} for {s.venue}; known: "
                                    f"{sorted(vcls.channels)}", s.id))
        elif not vcls.channels_configurable and set(s.channels) - set(vcls.default_channels):
            problems.append(Problem(f"{where}.channels",
                                    f"{s.venue} channels are not configurable "
                                    f"(always {list(vcls.default_channels)})", s.id))
        if vcls.needs_key and s.venue not in keys_checked:
            keys_checked.add(s.venue)
            vc = cfg.venue(s.venue)
            key = f"venues.{s.venue}.key_file"
            if not vc.key_file:
                problems.append(Problem(key, "missing: this venue needs a key", s.id))
            else:
                try:
                    load_private_key(vc.key_file)
                except CaptureError as e:
                    problems.append(Problem(key, str(e), s.id))
    return problems


def require(cfg: Config, shard_ids: Iterable[int] | None = None) -> None:
    """Raise a ConfigError naming the first problem (``run`` at start).

    Raises:
        ConfigError: the first problem found (all of them in the message).
    """
    problems = check(cfg, shard_ids)
    if problems:
        first = problems[0]
        rest = "; ".join(str(p) for p in problems[1:])
        raise ConfigError(cfg.path, first.key, first.message + (f" (also: {rest})" if rest else ""))
