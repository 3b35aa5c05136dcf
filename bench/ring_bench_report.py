"""The ring benchmark's summary table, from plain data.

Used by bench/test_ring_bench.py at the end of a run, and on its own to pool
several runs (each saved with CAPTURE_RING_RESULTS_JSON=<file>)::

    python bench/ring_bench_report.py run1.json run2.json ... > table.md

Every figure is the median of the rounds, with the best round in brackets:
contention from other work on the machine only ever slows a round down, so
the best round is the closer estimate for an idle machine.  "met?" judges
the median, then (after the semicolon) the best round.
"""
from __future__ import annotations

import json
import statistics
import sys
from typing import Any

SIZES = (256, 2048)
TPUT_CASES = ("ring-py", "ring-cffi", "c-core", "ref-c", "ref-c+crc+ts", "mp.Queue", "faster-fifo")
RATIOS = (("ring-py", "ref-c"), ("c-core", "ref-c"), ("ring-py", "c-core"), ("ring-py", "mp.Queue"),
          ("ring-py", "faster-fifo"), ("c-core", "mp.Queue"), ("c-core", "faster-fifo"))
RATIO_TARGETS = {("ring-py", "ref-c", 256): 0.7, ("ring-py", "mp.Queue", 256): 20.0,
                 ("ring-py", "faster-fifo", 256): 20.0}
GBPS_TARGET = {("ring-py", 2048): 8.0, ("c-core", 2048): 8.0}
LAT_ORDER = ("ring, spinning reader", "ring, spinning reader, ts from Python", "ring, futex-sleeping reader", "ring, reader polling read()",
             "c-core, spinning reader",
             "c-core, futex-sleeping reader", "faster-fifo, blocking get", "faster-fifo, polling get",
             "mp.Queue, blocking get")
LAT_TARGETS = {"ring, spinning reader": 1.5, "ring, futex-sleeping reader": 30.0}
HEAD = ("case", "frames/s", "GB/s", "ratio", "target", "met?")

Row = tuple[str, str, str, str, str, str]


def _met(value: float, target: float, higher_is_better: bool = True) -> str:
    return "yes" if (value >= target if higher_is_better else value <= target) else "no"


def rows(tput: dict[tuple[str, int], dict[str, list[float]]], lat: dict[str, list[dict]],
         micro: dict[tuple[str, int], float]) -> list[Row]:
    """tput: (case, size) -> {"fps": [...], "gbps": [...]} per round;
    lat: case -> per-round percentile dicts; micro: (step, size) -> ns/frame."""

    def fps(case: str, size: int, best: bool = False) -> float | None:
        v = tput.get((case, size), {}).get("fps")
        return (max(v) if best else statistics.median(v)) if v else None

    def gbps(case: str, size: int, best: bool = False) -> float | None:
        v = tput.get((case, size), {}).get("gbps")
        return (max(v) if best else statistics.median(v)) if v else None

    out: list[Row] = []
    for size in SIZES:
        for case in TPUT_CASES:
            f = fps(case, size)
            if f is None:
                continue
            g, bf, bg = gbps(case, size), fps(case, size, True), gbps(case, size, True)
            t = GBPS_TARGET.get((case, size))
            out.append((f"{case}, {size} B", f"{f / 1e6:.3f} M ({bf / 1e6:.3f} M)", f"{g:.2f} ({bg:.2f})", "",
                        f">= {t:g} GB/s" if t else "", f"{_met(g, t)}; {_met(bg, t)}" if t else ""))
        for case, peer in RATIOS:
            a, b = fps(case, size), fps(peer, size)
            if not a or not b:
                continue
            r, rb = a / b, fps(case, size, True) / fps(peer, size, True)
            t = RATIO_TARGETS.get((case, peer, size))
            out.append((f"{case} / {peer}, {size} B", "", "", f"{r:.2f}x ({rb:.2f}x)",
                        f">= {t:g}x" if t else "", f"{_met(r, t)}; {_met(rb, t)}" if t else ""))
    for (step, size), ns in sorted(micro.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append((f"one core, per frame: {step}, {size} B", f"{1e3 / ns:.2f} M/s", "", "",
                    f"{ns:.0f} ns/frame", ""))
    for case in LAT_ORDER:
        rs = lat.get(case)
        if not rs:
            continue
        p50 = statistics.median(r["p50_us"] for r in rs)
        best = min(r["p50_us"] for r in rs)
        p99 = statistics.median(r["p99_us"] for r in rs)
        p999 = statistics.median(r["p999_us"] for r in rs)
        t = LAT_TARGETS.get(case)
        out.append((f"latency: {case}", f"p50 {p50:.2f} us ({best:.2f})", f"p99 {p99:.1f} / p99.9 {p999:.1f} us",
                    "", f"p50 <= {t:g} us" if t else "", f"{_met(p50, t, False)}; {_met(best, t, False)}" if t else ""))
    return out


def text_table(rs: list[Row]) -> list[str]:
    widths = [max(len(r[i]) for r in [HEAD, *rs]) for i in range(6)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*HEAD), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rs)]


def markdown_table(rs: list[Row]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * 6]
    lines += ["| " + " | ".join(r) + " |" for r in rs]
    return "\n".join(lines) + "\n"


def to_json(tput: dict, lat: dict, micro: dict, loadavg: list[float]) -> dict[str, Any]:
    return {"loadavg": loadavg,
            "micro_ns": {f"{k[0]}|{k[1]}": v for k, v in micro.items()},
            "tput": {f"{k[0]}|{k[1]}": v for k, v in tput.items()},
            "lat": lat}


def pool(paths: list[str]) -> tuple[dict, dict, dict, list[float]]:
    """Pool the rounds of several saved runs (micro costs: the minimum)."""
    tput: dict[tuple[str, int], dict[str, list[float]]] = {}
    lat: dict[str, list[dict]] = {}
    micro: dict[tuple[str, int], float] = {}
    loads: list[float] = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        loads += d.get("loadavg", [])
        for k, v in d.get("tput", {}).items():
            case, size = k.rsplit("|", 1)
            t = tput.setdefault((case, int(size)), {"fps": [], "gbps": []})
            t["fps"] += v["fps"]
            t["gbps"] += v["gbps"]
        for k, v in d.get("lat", {}).items():
            lat.setdefault(k, []).extend(v)
        for k, v in d.get("micro_ns", {}).items():
            step, size = k.rsplit("|", 1)
            key = (step, int(size))
            micro[key] = min(v, micro.get(key, v))
    return tput, lat, micro, loads


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: ring_bench_report.py RUN.json [RUN.json ...]")
    tput, lat, micro, loads = pool(sys.argv[1:])
    n = {k: len(v["fps"]) for k, v in tput.items()}
    print(f"<!-- {len(sys.argv) - 1} runs pooled; rounds per throughput case: "
          f"{min(n.values()) if n else 0}..{max(n.values()) if n else 0}; "
          f"1-min load average {min(loads):.1f}..{max(loads):.1f} -->" if loads else "")
    sys.stdout.write(markdown_table(rows(tput, lat, micro)))
