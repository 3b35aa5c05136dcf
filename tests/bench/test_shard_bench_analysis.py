"""The whole-shard benchmark's arithmetic on made-up samples: the catch-up
rate and time, the sustained rule, and the summary (no run, no matplotlib)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import shard_bench_helpers as h  # noqa: E402
import shard_bench_measure as m  # noqa: E402
import shard_bench_report as rep  # noqa: E402


def _sample(t, flusher, stream, lag=0, ring_frames=None):
    return h.Sample(t=t, ring_frames=flusher if ring_frames is None else ring_frames, drops=0, fill=0,
                    flusher=flusher, publisher_lag=lag, publisher_lapped=0, stream=stream, mode="ring").__dict__


def test_catchup_after_an_outage_counts_from_the_count_the_server_had():
    # 10k frames/s on disk; the stream stops at 20k while NATS is down
    # (t 2..5), comes back at 5 with 20k and reaches the disk at t 6.
    tl = [_sample(t / 10, 1000 * t, min(1000 * t, 20_000) if not 20 < t < 50 else None)
          for t in range(0, 50)]
    tl += [_sample(5.0, 50_000, 20_000), _sample(5.5, 55_000, 40_000), _sample(6.0, 60_000, 60_000)]
    r = h.StepResult("capture", 10_000, 256, 60_000, 4 << 20, timeline=tl,
                     events={"nats_started_t": 5.0}, ring={"frames": 60_000})
    cu = h.catchup(r)
    assert cu["caught_up"] and cu["lag_at_start"] == 30_000
    assert cu["seconds"] == pytest.approx(1.0)
    assert cu["rate"] == pytest.approx(40_000)      # 20k -> 60k in 1 s


def test_catchup_after_a_blast_starts_when_the_ring_has_it_all():
    tl = [_sample(0.0, 0, 0), _sample(0.5, 50_000, 5_000), _sample(1.0, 50_000, 30_000),
          _sample(1.5, 50_000, 50_000)]
    r = h.StepResult("capture", 0, 256, 50_000, 4 << 20, timeline=tl, ring={"frames": 50_000})
    cu = h.catchup(r)
    assert cu["t0"] == 0.5 and cu["lag_at_start"] == 45_000
    assert cu["seconds"] == pytest.approx(1.0) and cu["rate"] == pytest.approx(45_000)


def test_catchup_that_never_catches_up_says_so():
    tl = [_sample(0.0, 0, 0), _sample(0.5, 50_000, 5_000), _sample(1.0, 50_000, 6_000)]
    r = h.StepResult("capture", 0, 256, 50_000, 4 << 20, timeline=tl, ring={"frames": 50_000})
    assert h.catchup(r)["caught_up"] is False


def _step(rate=5000.0, drops=0, p99=0.002, exact_p99=None, recv_rate=5000.0, size=256):
    exact = {"n": 100, "p50": 0.001, "p99": exact_p99, "p99.9": exact_p99} if exact_p99 else {}
    return {"kind": "capture", "rate": rate, "size": size, "frames": 5000, "complete": True,
            "sender": {"achieved_rate": rate}, "stream": 5010,
            "ring": {"frames": 5010, "drops": drops, "fill_max": 4096, "fill_mean": 100.0,
                     "publisher_lapped": 0, "capacity": 4 << 20},
            "disk": {"blast": 5000 - drops, "drop_records": int(bool(drops)), "dropped_in_records": drops,
                     "recv_rate": recv_rate},
            "latency": {"recv_to_disk": {"p50": 1e-4, "p99": 1e-3, "p99.9": 2e-3},
                        "recv_to_ack": {"p50": 1e-3, "p99": p99, "p99.9": p99},
                        "recv_to_stored_exact": exact},
            "cpu_us": {"receiver": 1.0, "flusher": 1.0, "publisher": 2.0, "capture_total": 4.0,
                       "nats-server": 3.0, "simulator": 0.5},
            "events": {"stream_rate": rate}}


def test_sustained_rule():
    assert m.capture_sustained(_step())[0]
    assert not m.capture_sustained(_step(drops=3))[0]
    assert not m.capture_sustained(_step(p99=0.0164))[0]
    # The exact figure decides over the histogram's bucket bound.
    assert m.capture_sustained(_step(p99=0.0164, exact_p99=0.009))[0]
    assert not m.capture_sustained(_step(exact_p99=0.011))[0]
    ok, why = m.capture_sustained(_step(recv_rate=4000.0))        # fell > 5% behind the offer
    assert not ok and why == "received 4000/s"
    slow = _step(recv_rate=4000.0)
    slow["sender"]["achieved_rate"] = 4100.0
    assert "the sender managed 4100/s" in m.capture_sustained(slow)[1]


def test_summary_names_the_sustained_rates_and_ratios():
    steps = [_step(5000.0), _step(10_000.0, drops=7)]
    for s in steps:
        s["sustained"] = list(m.capture_sustained(s))
    peer = {"rate": 5000.0, "size": 256, "frames": 5000, "received": 5000, "acked": 5000, "failed": 0,
            "recv_rate": 5000.0, "stream": 5000, "sender": {"achieved_rate": 5000.0},
            "recv_to_disk": {"p50": 1e-6, "p99": 1e-5, "p99.9": 1e-5},
            "recv_to_ack": {"p50": 1e-3, "p99": 0.02, "p99.9": 0.03}, "cpu_us": {"peer": 50.0}}
    peer["sustained"] = list(m.peer_sustained(peer))
    text = "\n".join(rep.summary_lines({"steps": steps, "peer": [peer]}))
    assert "sustained at 256 B: capture 5000.0/s, peer none/s" in text
    assert "live publish rate: 10000 frames/s (the 10000/s step at 256 B)" in text
    assert "matplotlib" not in sys.modules


def test_capacity_arithmetic_uses_the_steps_own_cpu_window():
    """Cores busy come from the CPU the step used over its window (per
    message on disk), not from the offered rate, which a step that drains
    long after its send would overstate; the floor and the target lines
    follow from the same figures."""
    fast = _step(100_000.0)                    # 4 + 3 + 0.5 = 7.5 us per message
    fast["frames"] = 1_000_000
    fast["disk"]["blast"] = 1_000_000
    fast["events"]["cpu_window_s"] = 15.0      # the send took 10 s, the drain 5 more
    results = {"steps": [_step(10_000.0), fast], "host": {"cores": "2"},
               "floor": [{"mode": "ack+msgid", "nats_cpu_us": 2.0, "rate": 300_000.0}]}
    text = "\n".join(rep.capacity_lines(results))
    assert "capacity at 100000/s, 256 B: capture 4.00 + nats-server 3.00 + load driver 0.50 = 7.50 us" in text
    assert "0.50 of 2 cores busy" in text      # 7.5 us x 1e6 messages / 15 s, not 0.75
    assert "runs out at 266,667/s" in text
    # the aim (5 us) + the floor (2 us) + the driver (0.5 us)
    assert "7.50 us per message, the CPU runs out at 266,667/s" in text
    assert "100,000/s needs 0.75 of 2 cores" in text
    assert rep.capacity_lines({"steps": [fast]}) == []   # no host: nothing to say
