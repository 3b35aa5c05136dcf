"""The whole-shard benchmark's verdicts, plots and Markdown report.

``summary_lines(results)`` is plain text for the end of the pytest run (no
matplotlib).  Run on its own it writes the PNG plots and the report::

    python bench/shard_bench_report.py [--results bench/results/shard.json]
        [--ring bench/results/ring.json] [--plots bench/plots] [--out bench/SHARD_RESULTS.md]

``--ring`` is the ring benchmark's saved rounds (CAPTURE_RING_RESULTS_JSON
of bench/test_ring_bench.py): its one-way latency figures are plotted as
they are, nothing is re-measured here.

Definitions used in the report:

* sustained rate: the highest offered rate whose step finished with zero
  drops (ring refusals and drop records), receive-to-ack p99 <= 10 ms (for
  capture: the exact receive-to-stored p99 read back from JetStream, the ack
  being that plus its way back over loopback; the status-file histogram's
  bucket bound when the read-back failed), and
  a receive rate (first-to-last receive stamp of the blast frames) within 5%
  of the offered rate; the peer by the same rule (acks for everything).
* live publish rate: the stream's growth rate (acked frames/s, sampled from
  the server) in the highest step where the publisher was never lapped.  It
  cannot exceed that step's offered rate: when every step is sustained, the
  catch-up ratio compares against the offer, not the publisher's ceiling.
* catch-up rate: the stream's growth from the start of catch-up (NATS back;
  or the end of a lapping blast) until the stream holds what the flusher has
  read, less one publish window; time until the stream equals the disk: the
  length of that interval.
* capacity: at a step, the CPU microseconds one message costs every process
  on the host (capture's, nats-server's, the load driver's, each measured
  with psutil over the step); cores busy = the CPU they used over the
  step's window (the send and the drain after it) per second; the rate at
  which the host runs out of CPU = cores x 1,000,000 / that cost.  Queueing
  delay grows long before that point, so a 10 ms p99 needs headroom below it.
* nats-server floor: the server's CPU per stored message when the client
  costs almost nothing (pre-built commands on a raw socket, acks counted not
  parsed; bench/shard_bench_floor.py), with and without a Msg-Id.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

TARGET_SUSTAINED = 100_000
TARGET_PEER_X = 5.0
TARGET_CATCHUP_X = 0.8
TARGET_CPU_US = 5.0


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms"


def _exact(lat: dict) -> dict:
    e = lat.get("recv_to_stored_exact") or {}
    return e if e.get("n") else {}


def _fill(ring: dict) -> str:
    return f"{ring['fill_max'] >> 10}K/{int(ring['fill_mean']) >> 10}K"


def sustained(rows: list[dict], size: int) -> float | None:
    ok = [r["rate"] for r in rows if r["size"] == size and r.get("sustained", [False])[0]]
    return max(ok) if ok else None


def live_publish_rate(results: dict) -> tuple[float | None, str]:
    best = None
    for r in results.get("steps", []):
        rate = r.get("events", {}).get("stream_rate")
        if rate and r["ring"]["publisher_lapped"] == 0 and r.get("complete"):
            if best is None or r["rate"] > best[1]["rate"]:
                best = (rate, r)
    if best is None:
        return None, "no step without a lap"
    return best[0], f"the {best[1]['rate']:.0f}/s step at {best[1]['size']} B"


def summary_lines(results: dict) -> list[str]:
    out: list[str] = []
    steps, peers = results.get("steps", []), results.get("peer", [])
    out.append(f"{'who':8s} {'offered/s':>9s} {'size':>5s} {'sent/s':>8s} {'recv/s':>8s} {'offered':>8s} "
               f"{'in ring':>8s} {'on disk':>8s} {'stream':>8s} {'dropped':>7s} {'records':>7s} "
               f"{'disk p50/p99/p99.9':>24s} {'ack p50/p99/p99.9':>26s} {'stored p50/p99/p99.9':>26s} {'CPU us':>7s} {'fill max/mean':>15s}  sustained")
    for r in steps:
        lat, d = r["latency"], r["disk"]
        out.append(f"{'capture':8s} {r['rate']:9.0f} {r['size']:5d} {r['sender'].get('achieved_rate', 0):8.0f} "
                   f"{(d['recv_rate'] or 0):8.0f} {r['frames']:8d} {r['ring']['frames']:8d} {d['blast']:8d} "
                   f"{r['stream'] or 0:8d} {r['ring']['drops']:7d} {d['drop_records']:3d}/{d['dropped_in_records']:<3d} "
                   f"{'/'.join(_fmt_s(lat['recv_to_disk'][q]) for q in ('p50', 'p99', 'p99.9')):>24s} "
                   f"{'/'.join(_fmt_s(lat['recv_to_ack'][q]) for q in ('p50', 'p99', 'p99.9')):>26s} "
                   f"{'/'.join(_fmt_s(_exact(lat).get(q)) for q in ('p50', 'p99', 'p99.9')):>26s} "
                   f"{r['cpu_us']['capture_total']:7.2f} {_fill(r['ring']):>15s}"
                   f"  {r['sustained'][0]} ({r['sustained'][1]})")
    for p in peers:
        out.append(f"{'peer':8s} {p['rate']:9.0f} {p['size']:5d} {p['sender'].get('achieved_rate', 0):8.0f} "
                   f"{(p['recv_rate'] or 0):8.0f} {p['frames']:8d} {'-':>8s} {p['received']:8d} "
                   f"{p['stream'] or 0:8d} {p['received'] - p['acked']:7d} {'-':>7s} "
                   f"{'/'.join(_fmt_s(p['recv_to_disk'][q]) for q in ('p50', 'p99', 'p99.9')):>24s} "
                   f"{'/'.join(_fmt_s(p['recv_to_ack'][q]) for q in ('p50', 'p99', 'p99.9')):>26s} "
                   f"{'-':>26s} {p['cpu_us']['peer']:7.2f} {'-':>15s}  {p['sustained'][0]} ({p['sustained'][1]})")
    out.append("(capture disk and ack: log2 bucket upper bounds from the status files; stored: receive stamp to "
               "JetStream's stored time, exact, read back; peer: exact; CPU us: per message, all of capture's "
               "processes, not nats-server; records: drop records on disk / the frames they account for; "
               "recv/s: from the receive stamps)")
    for size in sorted({r["size"] for r in steps}):
        c, p = sustained(steps, size), sustained(peers, size)
        line = f"sustained at {size} B: capture {c or 'none'}/s, peer {p or 'none'}/s"
        if c and p:
            line += f"; capture / peer {c / p:.2f}x (target >= {TARGET_PEER_X:.0f}x)"
        if size == 256:
            line += f"; capture vs the {TARGET_SUSTAINED}/s target: {(c or 0) / TARGET_SUSTAINED:.2f}x"
        out.append(line)
    live, where = live_publish_rate(results)
    out.append(f"live publish rate: {live:.0f} frames/s ({where})" if live else f"live publish rate: - ({where})")
    cases = ([("outage", results["outage"])] if results.get("outage") else []) + \
            [(f"blast, {r['capacity'] >> 20} MiB ring", r) for r in results.get("blast", [])]
    for name, r in cases:
        cu = r.get("catchup") or {}
        rate = cu.get("rate")
        ratio = f"{rate / live:.2f}x live (target >= {TARGET_CATCHUP_X}x)" if rate and live else "-"
        t = cu.get("seconds")
        drops = r["ring"]["drops"]
        offered = r["frames"]
        lapped = "lapped" if r["ring"]["publisher_lapped"] else "NOT lapped (no catch-up from disk)"
        out.append(f"catch-up, {name} (publisher {lapped}): lag {cu.get('lag_at_start', '-')} frames, "
                   f"{(rate or 0):.0f} frames/s = {ratio}; stream == disk after {t if t is None else round(t, 2)} s"
                   + (f" (a live publish of that lag would take {cu['lag_at_start'] / live:.2f} s: "
                      f"{(cu['lag_at_start'] / live) / t:.2f}x)" if t and live and cu.get("lag_at_start") else "")
                   + f"; drops {drops} of {offered} ({100 * drops / max(1, offered):.2f}%), "
                   f"{r['disk']['drop_records']} drop record(s) on disk for {r['disk']['dropped_in_records']}")
    drv = [(r["rate"], r["size"], r["cpu_us"].get("simulator")) for r in steps if r["cpu_us"].get("simulator") is not None]
    if drv:
        out.append("load driver (the simulator process) CPU us per message: "
                   + ", ".join(f"{rate / 1e3:.0f}k/{size} B {v:.2f}" for rate, size, v in drv))
    cpu = [r["cpu_us"]["capture_total"] for r in steps if r["size"] == 256 and r.get("sustained", [False])[0]]
    if cpu:
        out.append(f"capture CPU per 256 B message (all capture processes, not nats-server) at the sustained "
                   f"steps: {min(cpu):.2f} .. {max(cpu):.2f} us (aim <= {TARGET_CPU_US} us: "
                   f"{min(cpu) / TARGET_CPU_US:.2f}x of it at best)")
    out += capacity_lines(results)
    return out


def capacity_lines(results: dict) -> list[str]:
    """The arithmetic that bounds the sustained rate on this host, from the
    run's own figures: what one 256 B message costs every process on the
    host (capture's, nats-server's, the load driver's), how many cores that
    keeps busy at each step, and the rate at which the host runs out of
    CPU before any queueing; then the same with nats-server at its floor
    (the floor case) and capture at its CPU aim."""
    out: list[str] = []
    try:
        cores = int(results.get("host", {}).get("cores", "0"))
    except ValueError:
        cores = 0
    rows = [r for r in results.get("steps", []) if r["size"] == 256]
    if not cores or not rows:
        return out
    budget = cores * 1e6     # CPU us per second on this host
    for r in rows:
        c = r["cpu_us"]
        cap, srv, drv = c["capture_total"], c.get("nats-server", 0.0), c.get("simulator", 0.0)
        total = cap + srv + drv
        # busy: the CPU the step used over its own window (the send and the
        # drain after it), the cost being per message on disk
        window = r.get("events", {}).get("cpu_window_s") or 0.0
        on_disk = r.get("disk", {}).get("blast") or 0
        busy = total * on_disk / 1e6 / window if window and on_disk else r["rate"] * total / 1e6
        out.append(f"capacity at {r['rate']:.0f}/s, 256 B: capture {cap:.2f} + nats-server {srv:.2f} + load driver "
                   f"{drv:.2f} = {total:.2f} us per message, {busy:.2f} of {cores} cores busy; "
                   f"the host's CPU runs out at {budget / total:,.0f}/s")
    fl = {f["mode"]: f for f in results.get("floor", [])}
    if "ack+msgid" in fl:
        f = fl["ack+msgid"]["nats_cpu_us"]
        out.append("nats-server floor (fed by a client that costs nothing; CPU per stored message): "
                   + ", ".join(f"{m} {fl[m]['nats_cpu_us']:.2f} us ({fl[m]['rate']:,.0f}/s)" for m in fl))
        top = min(rows, key=lambda r: abs(r["rate"] - TARGET_SUSTAINED))   # the step nearest the target
        drv = top["cpu_us"].get("simulator", 0.0)
        best = TARGET_CPU_US + f + drv
        out.append(f"with capture at its aim ({TARGET_CPU_US} us) and nats-server at its floor ({f:.2f} us): "
                   f"{best:.2f} us per message, the CPU runs out at {budget / best:,.0f}/s; "
                   f"{TARGET_SUSTAINED:,}/s would keep {TARGET_SUSTAINED * best / budget:.0%} of the cores busy")
        now = top["cpu_us"]["capture_total"] + top["cpu_us"].get("nats-server", 0.0) + drv
        out.append(f"at this run's costs ({now:.2f} us per message at {top['rate']:,.0f}/s), "
                   f"{TARGET_SUSTAINED:,}/s needs {TARGET_SUSTAINED * now / 1e6:.2f} of {cores} cores")
        peers = results.get("peer", [])
        p = sustained(peers, 256)
        if p:
            need = TARGET_PEER_X * p
            out.append(f"{TARGET_PEER_X:.0f}x the peer's sustained {p:,.0f}/s is {need:,.0f}/s: "
                       f"{need * now / 1e6:.2f} of {cores} cores at this run's costs, "
                       f"{need * best / budget:.0%} of them at the best case above")
    return out


# -- plots -----------------------------------------------------------------------------------------
def plots(results: dict, ring: dict | None, outdir: str) -> list[tuple[str, str]]:
    """Write the PNGs; returns (title, file name) pairs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    made: list[tuple[str, str]] = []
    steps, peers = results.get("steps", []), results.get("peer", [])
    sizes = sorted({r["size"] for r in steps})

    if steps:
        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            series = (("capture ack (bucket bound)", steps, ":", lambda r: r["latency"]["recv_to_ack"]),
                      ("capture stored (exact)", steps, "-",
                       lambda r: r["latency"].get("recv_to_stored_exact") or {}),
                      ("peer ack (exact)", peers, "--", lambda r: r["recv_to_ack"]))
            for who, rows, style, get in series:
                rs = sorted((r for r in rows if r["size"] == size), key=lambda r: r["rate"])
                if not rs:
                    continue
                for q, mark in (("p50", "o"), ("p99", "s"), ("p99.9", "^")):
                    lat = [get(r).get(q) for r in rs]
                    if all(x is None for x in lat):
                        continue
                    ax.plot([r["rate"] for r in rs], [x * 1e3 if x is not None else float("nan") for x in lat],
                            style, marker=mark, label=f"{who} {q}")
            ax.axhline(10, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("offered messages/s")
            ax.set_ylabel("receive -> JetStream ack, ms")
            ax.set_title(f"{size} B")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "shard_latency.png"), dpi=110)
        plt.close(fig)
        made.append(("Receive-to-ack percentiles against offered rate, capture and peer", "shard_latency.png"))

        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            rs = sorted((r for r in steps if r["size"] == size), key=lambda r: r["rate"])
            roles = ["receiver", "flusher", "publisher", "integrity", "supervisor", "nats-server"]
            x = range(len(rs))
            bottom = [0.0] * len(rs)
            for role in roles:
                v = [r["cpu_us"].get(role, 0.0) for r in rs]
                ax.bar(x, v, bottom=bottom, label=role)
                bottom = [b + y for b, y in zip(bottom, v)]
            ps = sorted((p for p in peers if p["size"] == size), key=lambda p: p["rate"])
            if ps:
                ax.plot([i for i, r in enumerate(rs) if any(p["rate"] == r["rate"] for p in ps)],
                        [p["cpu_us"]["peer"] for p in ps], "k--o", label="peer (its own process)")
            ax.set_xticks(list(x), [f"{r['rate'] / 1e3:.0f}k" for r in rs])
            ax.set_xlabel("offered messages/s")
            ax.set_ylabel("CPU us per message")
            ax.set_title(f"CPU per message by process, {size} B")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "shard_cpu.png"), dpi=110)
        plt.close(fig)
        made.append(("CPU per message by process", "shard_cpu.png"))

    cases = ([("NATS outage", results["outage"])] if results.get("outage") else []) + \
            [(f"lapping blast, {r['capacity'] >> 20} MiB ring", r) for r in results.get("blast", [])]
    for i, (name, r) in enumerate(cases):
        tl = r.get("timeline") or []
        if len(tl) < 3:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        t = [s["t"] for s in tl]

        def rate(key: str) -> list[float]:
            out = [float("nan")]
            for a, b in zip(tl, tl[1:]):
                va, vb = a.get(key), b.get(key)
                out.append((vb - va) / (b["t"] - a["t"]) if va is not None and vb is not None and b["t"] > a["t"]
                           else float("nan"))
            return out
        ax.plot(t, rate("ring_frames"), label="into the ring, frames/s")
        ax.plot(t, rate("flusher"), label="flusher, frames/s")
        ax.plot(t, rate("stream"), label="stream (acked), frames/s")
        ax.set_xlabel("s")
        ax.set_ylabel("frames/s")
        ax2 = ax.twinx()
        ax2.plot(t, [s["fill"] / r["capacity"] * 100 for s in tl], "k:", label="ring fill (flusher) %")
        ax2.plot(t, [s["publisher_lag"] / r["capacity"] * 100 for s in tl], "m:",
                 label="publisher behind the head, % (> 100: lapped)")
        ax2.set_ylabel("% of ring capacity")
        for key, label in (("nats_stopped_t", "NATS down"), ("nats_started_t", "NATS up")):
            if key in r.get("events", {}):
                ax.axvline(r["events"][key], color="red", lw=0.8)
                ax.text(r["events"][key], ax.get_ylim()[1] * 0.6, " " + label, fontsize=7, color="red")
        if "first_frame_t" in r.get("events", {}):    # the start-up is of no interest here
            ax.set_xlim(left=max(0.0, r["events"]["first_frame_t"] - 0.5))
        ax.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="upper right", fontsize=7)
        ax.set_title(f"Catch-up: {name}")
        fig.tight_layout()
        fn = f"shard_catchup_{i}.png"
        fig.savefig(os.path.join(outdir, fn), dpi=110)
        plt.close(fig)
        made.append((f"Throughput and ring fill over time: {name}", fn))

    lat = (ring or {}).get("lat") or {}
    if lat:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        qs = ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")
        names = list(lat)
        width = 0.8 / len(qs)
        for j, q in enumerate(qs):
            vals = []
            for n in names:
                rounds = [r[q] for r in lat[n] if q in r]
                vals.append(sorted(rounds)[len(rounds) // 2] if rounds else float("nan"))
            ax.bar([k + j * width for k in range(len(names))], vals, width, label=q.replace("_us", ""))
        ax.set_yscale("log")
        ax.set_xticks([k + 0.4 for k in range(len(names))], names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("one-way latency, us (median of rounds)")
        ax.set_title("Ring one-way latency (bench/test_ring_bench.py)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "ring_latency.png"), dpi=110)
        plt.close(fig)
        made.append(("The ring's one-way latency, by reader kind", "ring_latency.png"))
        with_hist = {n: rs for n, rs in lat.items() if any(r.get("hist_log2_ns") for r in rs)}
        if with_hist:
            fig, ax = plt.subplots(figsize=(9, 4.5))
            lo, hi = 1 << 40, 1
            for n, rs in with_hist.items():
                width = max(len(r.get("hist_log2_ns") or []) for r in rs)
                tot = [0] * width
                for r in rs:           # the rounds pooled
                    for i, c in enumerate(r.get("hist_log2_ns") or []):
                        tot[i] += c
                total = sum(tot) or 1
                xs = [2 ** i / 1e3 for i in range(width)]
                ax.step(xs, [c / total for c in tot], where="post", label=n)
                used = [i for i, c in enumerate(tot) if c]
                lo, hi = min(lo, 2 ** used[0] / 1e3), max(hi, 2 ** (used[-1] + 1) / 1e3)
            ax.set_xlim(lo / 2, hi * 2)
            ax.set_xscale("log")
            ax.set_xlabel("one-way latency, us (log2 buckets)")
            ax.set_ylabel("fraction of frames")
            ax.set_title("Ring one-way latency histograms (bench/test_ring_bench.py, rounds pooled)")
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(os.path.join(outdir, "ring_latency_hist.png"), dpi=110)
            plt.close(fig)
            made.append(("The ring's one-way latency histograms", "ring_latency_hist.png"))
    return made


# -- report ---------------------------------------------------------------------------------------
RING_SIZING = """\
## Choosing a ring capacity

The ring absorbs a burst that arrives faster than the slowest tethered
reader (the flusher) drains it; the publisher is not tethered and reads the
frames it missed back from the segment files.  A burst of rate R messages/s
lasting T seconds, of frames of S bytes each (payload plus the ring's 32-byte
record header, rounded up to 8), against a drain rate D frames/s, leaves

    backlog = (R - D) x T x S  bytes

in the ring at its end.  The capacity must exceed that backlog, with room for
the largest single message (max_frame), rounded up to a power of two (the
ring takes 64 KiB .. 2 GiB).  Example: a venue that bursts to
300,000 messages/s of 300 B for 0.5 s against a flusher that drains 150,000/s
needs (300,000 - 150,000) x 0.5 x 336 B = 25 MB: a 32 MiB ring, where the
default 4 MiB (12,483 such frames) would refuse about 83% of the burst's excess (and record every
refusal).  When D >= R no backlog builds and any capacity above max_frame
holds; size from the worst burst rate and duration observed on the venue
(a status message storm, an open, a market event), and measure D with this
benchmark on the target host (the flusher's drain rate is the "flusher" line
of the blast runs).  The same arithmetic with the publisher's live rate in
place of D tells whether a burst laps the publisher: a lapped publisher
loses nothing (it reads the missed frames back from the segment files) but
catches up at the catch-up rate above instead of from memory.  The blast
runs above show the drop rate of a 4 MiB ring against a larger one under the
same unpaced blast.
"""


def markdown(results: dict, made: list[tuple[str, str]], plots_rel: str, quiet: bool) -> str:
    host = results.get("host", {})
    lines = ["# Whole-shard capacity: results", ""]
    if not quiet:
        lines += ["**Not produced on a quiet machine yet.** The figures below come from a run not made "
                  "on a quiet machine (`make bench-shard QUIET=1` marks one that was): a smoke run or a "
                  "shared machine, which only shows the harness works; they are not capacity figures.", ""]
    lines += [f"Produced by `make bench-shard` (bench/test_shard_bench.py, bench/shard_bench_report.py) on "
              f"{host.get('date', '?')}, git commit {host.get('commit', '?')}.", "",
              "| host | |", "|---|---|",
              f"| CPU | {host.get('cpu', '?')} |", f"| cores | {host.get('cores', '?')} |",
              f"| kernel | {host.get('kernel', '?')} |", f"| Python | {host.get('python', '?')} |",
              f"| nats-server | {host.get('nats_server', '?')} |",
              f"| load average at start | {host.get('loadavg', '?')} |", "",
              f"Parameters: `{json.dumps(results.get('params', {}))}`", "",
              "## Summary (targets are reported as measured ratios, never asserted)", "", "```"]
    lines += summary_lines(results)
    lines += ["```", ""]
    for title, fn in made:
        lines += [f"## {title}", "", f"![{title}]({plots_rel}/{fn})", ""]
    lines += [RING_SIZING, "", "## Definitions", "", (__doc__ or "").split("Definitions used in the report:")[1].strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=os.path.join(here, "results", "shard.json"))
    ap.add_argument("--ring", default=os.path.join(here, "results", "ring.json"))
    ap.add_argument("--plots", default=os.path.join(here, "plots"))
    ap.add_argument("--out", default=os.path.join(here, "SHARD_RESULTS.md"))
    ap.add_argument("--quiet-machine", action="store_true",
                    help="the run was made on a quiet machine with the full steps: drop the smoke-run warning")
    a = ap.parse_args(argv)
    with open(a.results) as f:
        results = json.load(f)
    ring = None
    if os.path.exists(a.ring):
        with open(a.ring) as f:
            ring = json.load(f)
    made = plots(results, ring, a.plots)
    rel = os.path.relpath(a.plots, os.path.dirname(os.path.abspath(a.out)))
    with open(a.out, "w") as f:
        f.write(markdown(results, made, rel, a.quiet_machine))
    print(f"wrote {a.out} and {len(made)} plot(s) in {a.plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
