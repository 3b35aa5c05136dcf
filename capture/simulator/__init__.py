"""The bundled exchange simulator: real WebSocket servers speaking Kraken spot
v2, Kraken Futures v1, the Polymarket CLOB market channel and Kalshi v2, plus
their REST discovery endpoints, scripted by a :class:`Scenario`.

No venue is reachable from the test and benchmark machines, so the receiver,
the integrity checks and ``make demo`` run against this instead; it must be
faithful to ``VENUES.md`` and deterministic from a seed.

Module map::

    script.py          Scenario, Blast: what every connection does
    server.py          Simulator, VenueServer: sockets, pacing, injections
    runner.py          SimulatorThread, SimulatorProcess: outside the caller's loop
    session.py         I/O-free base of the venue sessions
    kraken.py, kraken_futures.py, polymarket.py, kalshi.py   the protocols
    rest.py            discovery endpoints (AssetPairs, instruments, Gamma, Kalshi markets)
    blast.py           pre-framed benchmark sender
    record.py          what was sent, per connection (frames, count, digest)
    universe.py        the instruments, deterministic from the seed
    values.py          exact decimals, timestamps, seeded randomness
"""
from capture.simulator.blast import marker as blast_marker
from capture.simulator.kalshi import sign as kalshi_sign
from capture.simulator.kraken import book_checksum
from capture.simulator.record import ConnectionRecord, frames_digest, read_frames
from capture.simulator.runner import SimulatorProcess, SimulatorThread
from capture.simulator.script import VENUES, Blast, Scenario
from capture.simulator.server import Simulator, SimulatorError

__all__ = ["VENUES", "Blast", "ConnectionRecord", "Scenario", "Simulator", "SimulatorError",
           "SimulatorProcess", "SimulatorThread", "blast_marker", "book_checksum",
           "frames_digest", "kalshi_sign", "read_frames"]
