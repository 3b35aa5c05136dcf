"""End-to-end capacity: one whole shard under ``capture run`` (receiver,
flusher, publisher, Kraken book-checksum validator) fed over real WebSocket
connections by the simulator's paced blast, publishing to a real nats-server
with file storage; and, on the same feed in the same run, the peer a user
would write without capture (bench/shard_peer.py).

Sections (each a test; figures printed and summarised at the end, never
asserted; targets from the issue printed as measured ratios):

* steps      offered rates x frame sizes: frames offered / in the ring / on
             disk / in the stream, drops and drop records, receive-to-disk
             and receive-to-ack p50/p99/p99.9 (status-file histograms), the
             exact receive-to-stored percentiles (read back from JetStream:
             the receive stamp header against the stored time), CPU us per message by
             process (and nats-server), ring fill; the same for the peer.
             Sustained rate: the highest step with zero drops, receive-to-ack
             p99 <= 10 ms and a receive rate within 5% of the offered rate.
* outage     NATS stopped during a paced step until the ring has lapped the
             publisher, then restarted on the same port and store: catch-up
             rate and time until the stream equals the disk.
* blast      an unpaced blast that laps the publisher, with a 4 MiB ring and
             a larger one: drop rate for each, and the catch-up as above.

The live publish rate the catch-up is compared with: the stream's growth
rate (acked frames/s) in the highest step where the publisher was never
lapped.

Environment (defaults are the full run; a smoke run sets small values):

    CAPTURE_SHARD_RATES          offered frames/s per step   10000,25000,50000,100000,200000
    CAPTURE_SHARD_SIZES          frame sizes, bytes          256,2048
    CAPTURE_SHARD_SECONDS        seconds per step            10
    CAPTURE_SHARD_PEER           0: skip the peer            1
    CAPTURE_SHARD_OUTAGE_RATE    paced rate of the outage    25000
    CAPTURE_SHARD_OUTAGE_SECONDS at least this long down     3
    CAPTURE_SHARD_BLAST_FRAMES   frames of the lapping blast 500000
    CAPTURE_SHARD_BIG_RING       the larger ring, bytes      67108864
    CAPTURE_SHARD_STEP_RING      the steps' ring, bytes      4194304
    CAPTURE_SHARD_FLOOR_FRAMES   messages per nats-server floor mode  300000
    CAPTURE_SHARD_EXACT_MAX      frames read back per step   200000
    CAPTURE_SHARD_RESULTS_JSON   where the figures go        bench/results/shard.json
    CAPTURE_SHARD_KEEP           1: keep each step's segments and stream (disk!)  0

``make bench-shard`` runs this and then bench/shard_bench_report.py (plots
under bench/plots/, the report bench/SHARD_RESULTS.md).
"""
from __future__ import annotations

import json
import os

import pytest

import shard_bench_floor as floor
import shard_bench_helpers as h
import shard_bench_measure as m

RATES = h.env_list("CAPTURE_SHARD_RATES", "10000,25000,50000,100000,200000")
SIZES = h.env_list("CAPTURE_SHARD_SIZES", "256,2048", int)
SECONDS = h.env_float("CAPTURE_SHARD_SECONDS", 10.0)
PEER = os.environ.get("CAPTURE_SHARD_PEER", "1") != "0"
OUTAGE_RATE = h.env_float("CAPTURE_SHARD_OUTAGE_RATE", 25000)
OUTAGE_S = h.env_float("CAPTURE_SHARD_OUTAGE_SECONDS", 3.0)
BLAST_FRAMES = int(h.env_float("CAPTURE_SHARD_BLAST_FRAMES", 500_000))
BIG_RING = int(h.env_float("CAPTURE_SHARD_BIG_RING", 64 << 20))
STEP_RING = int(h.env_float("CAPTURE_SHARD_STEP_RING", 4 << 20))
FLOOR_FRAMES = int(h.env_float("CAPTURE_SHARD_FLOOR_FRAMES", 300_000))
RESULTS_JSON = os.environ.get("CAPTURE_SHARD_RESULTS_JSON",
                              os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "shard.json"))

RESULTS: dict = {"steps": [], "peer": [], "outage": None, "blast": [], "floor": [],
                 "params": {"rates": RATES, "sizes": SIZES, "seconds": SECONDS, "outage_rate": OUTAGE_RATE,
                            "outage_s": OUTAGE_S, "blast_frames": BLAST_FRAMES, "big_ring": BIG_RING,
                            "step_ring": STEP_RING}}


@pytest.fixture(scope="module")
def run():
    r = h.Run()
    RESULTS["host"] = m.host_info(r.nats.binary)
    yield r
    r.close()


def _dump() -> None:
    os.makedirs(os.path.dirname(RESULTS_JSON) or ".", exist_ok=True)
    with open(RESULTS_JSON, "w") as f:
        json.dump(RESULTS, f, indent=1)


def _frames(rate: float) -> int:
    return max(1000, int(rate * SECONDS))


@pytest.mark.parametrize("size", SIZES)
def test_shard_steps(benchmark, bench_summary, run, size):
    def once():
        for rate in RATES:
            r = h.capture_step(run, rate, size, _frames(rate), STEP_RING).as_dict()
            r["sustained"] = m.capture_sustained(r)
            RESULTS["steps"].append(r)
            _print_step(r)
            if PEER:
                p = h.peer_step(run, rate, size, _frames(rate))
                p["sustained"] = m.peer_sustained(p)
                RESULTS["peer"].append(p)
                _print_peer(p)
            _dump()
    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    bench_summary.set_renderer("whole shard: steps, catch-up, ring size", _render)


def test_shard_catchup_after_nats_outage(benchmark, bench_summary, run):
    def once():
        # Enough frames to keep sending through the outage (at least until
        # the ring has lapped the publisher: a ring's worth of 256 B frames,
        # 288 B each in the ring) and for SECONDS after NATS is back.
        after = min(2.0, SECONDS / 3)
        lap_s = (4 << 20) / (OUTAGE_RATE * 288)
        frames = int(OUTAGE_RATE * (after + max(OUTAGE_S, 1.5 * lap_s) + SECONDS))
        r = h.capture_step(run, OUTAGE_RATE, 256, frames,
                           outage=h.Outage(after_s=after, min_s=OUTAGE_S)).as_dict()
        r["catchup"] = h.catchup(h.StepResult(**{k: v for k, v in r.items() if k in h.StepResult.__dataclass_fields__}))
        RESULTS["outage"] = r
        _print_step(r)
        print(f"  outage catch-up: {r['catchup']}")
        _dump()
    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    bench_summary.set_renderer("whole shard: steps, catch-up, ring size", _render)


@pytest.mark.parametrize("capacity", [4 << 20, BIG_RING], ids=["4MiB", "big"])
def test_shard_catchup_after_lapping_blast(benchmark, bench_summary, run, capacity):
    def once():
        r = h.capture_step(run, 0, 256, BLAST_FRAMES, capacity=capacity).as_dict()
        r["catchup"] = h.catchup(h.StepResult(**{k: v for k, v in r.items() if k in h.StepResult.__dataclass_fields__}))
        RESULTS["blast"].append(r)
        _print_step(r)
        print(f"  blast catch-up ({capacity >> 20} MiB ring): {r['catchup']}")
        _dump()
    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    bench_summary.set_renderer("whole shard: steps, catch-up, ring size", _render)


def test_nats_server_floor(benchmark, bench_summary, run):
    """nats-server's own CPU per stored message, fed by a client that costs
    almost nothing (bench/shard_bench_floor.py): the floor the capacity
    arithmetic of the report starts from."""
    def once():
        RESULTS["floor"] = floor.nats_floor(run.nats.url, run.nats.pid, FLOOR_FRAMES)
        for f in RESULTS["floor"]:
            print(f"\nnats-server floor, {f['mode']:12s}: {f['messages']} stored in {f['seconds']:.2f} s "
                  f"({f['rate']:.0f}/s), nats-server CPU {f['nats_cpu_us']:.2f} us/msg")
        _dump()
    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    bench_summary.set_renderer("whole shard: steps, catch-up, ring size", _render)


# -- printing ------------------------------------------------------------------------------------
def _ms(s: float | None) -> str:
    return "-" if s is None else (f"{s * 1e6:.0f}us" if s < 1e-3 else f"{s * 1e3:.1f}ms")


def _print_step(r: dict) -> None:
    lat = r["latency"]
    d = r["disk"]
    print(f"\ncapture {r['rate']:>8.0f}/s {r['size']:5d} B: sent {r['sender'].get('sent')} "
          f"(sender {r['sender'].get('achieved_rate', 0):.0f}/s), ring {r['ring']['frames']} "
          f"drops {r['ring']['drops']}, disk {d['blast']} blast frames ({d['drop_records']} drop records "
          f"for {d['dropped_in_records']}), stream {r['stream']}; received at "
          f"{(d['recv_rate'] or 0):.0f}/s; disk p50/p99/p99.9 {_ms(lat['recv_to_disk']['p50'])}/"
          f"{_ms(lat['recv_to_disk']['p99'])}/{_ms(lat['recv_to_disk']['p99.9'])}; ack "
          f"{_ms(lat['recv_to_ack']['p50'])}/{_ms(lat['recv_to_ack']['p99'])}/{_ms(lat['recv_to_ack']['p99.9'])}; "
          f"CPU us/msg " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu_us"].items()))
          + f"; fill max {r['ring']['fill_max']} mean {r['ring']['fill_mean']:.0f}; "
          f"sustained: {r.get('sustained', ('-', ''))}")


def _print_peer(p: dict) -> None:
    print(f"peer    {p['rate']:>8.0f}/s {p['size']:5d} B: received {p['received']} at "
          f"{(p['recv_rate'] or 0):.0f}/s, acked {p['acked']} (failed {p['failed']}), stream {p['stream']}; "
          f"disk {_ms(p['recv_to_disk']['p50'])}/{_ms(p['recv_to_disk']['p99'])}/{_ms(p['recv_to_disk']['p99.9'])}; "
          f"ack {_ms(p['recv_to_ack']['p50'])}/{_ms(p['recv_to_ack']['p99'])}/{_ms(p['recv_to_ack']['p99.9'])}; "
          f"CPU us/msg peer {p['cpu_us']['peer']:.2f}, nats-server {p['cpu_us']['nats-server']:.2f}; "
          f"sustained: {p['sustained']}")


def _render() -> list[str]:
    import shard_bench_report as rep
    return rep.summary_lines(RESULTS)
