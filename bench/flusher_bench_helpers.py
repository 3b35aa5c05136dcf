"""Helpers for bench/test_flusher_bench.py: the producer that fills the ring,
in the flusher's own process or in a process of its own on another core.

This module must stay importable by a spawned child: it imports nothing from
pytest and nothing from the test module.
"""
from __future__ import annotations

import multiprocessing as mp
import os

import ring
from ring_bench_helpers import cpu_pair, pin


def fill(producer, payload: bytes, count: int) -> None:
    w = producer.write
    for _ in range(count):
        if w(payload) != ring.WriteStatus.OK:
            raise RuntimeError("ring full while filling")


def _filler_main(path: str, frame_bytes: int, count: int, cpu, conn) -> None:
    """A producer in its own process: fills the ring each time it is asked."""
    pin(cpu)
    payload = os.urandom(frame_bytes)
    with ring.Producer(path) as p:
        conn.send("ready")
        while conn.recv() == "fill":
            fill(p, payload, count)
            conn.send("done")


class Filler:
    """``same``: a Producer in this process.  ``process``: a spawned child
    pinned to one core of :func:`cpu_pair`, this process pinned to the other
    until :meth:`close`."""

    def __init__(self, how: str, path: str, frame_bytes: int, count: int) -> None:
        self.how = how
        if how == "same":
            self.prod = ring.Producer(path)
            self.payload = os.urandom(frame_bytes)
            self.count = count
            return
        prod_cpu, self.my_cpu = cpu_pair()
        self.conn, child = mp.get_context("spawn").Pipe()
        self.proc = mp.get_context("spawn").Process(
            target=_filler_main, args=(path, frame_bytes, count, prod_cpu, child), daemon=True)
        self.proc.start()
        assert self.conn.recv() == "ready"
        self.old_affinity = os.sched_getaffinity(0)
        pin(self.my_cpu)

    def fill(self) -> None:
        if self.how == "same":
            fill(self.prod, self.payload, self.count)
        else:
            self.conn.send("fill")
            assert self.conn.recv() == "done"

    def close(self) -> None:
        if self.how == "same":
            self.prod.close()
        else:
            self.conn.send("stop")
            self.proc.join(10)
            os.sched_setaffinity(0, self.old_affinity)
