"""The `capture` command.

    capture run --shard N [--config FILE]     run one shard (what systemd starts)
    capture config check FILE [--discover]    validate, print the resolved plan
    capture status [--config FILE] [--json] [--watch]
                                              a table of every shard's ring on this host
    capture ring stats PATH [--json]          every counter of one ring file
    capture compress DIR                      compress closed segment files under DIR
    capture cat | verify | stats PATH...      read segment files (see flusher/segments/tools.py)
    capture export DATA --format F --out DIR  messages to Parquet/CSV (see docs/data.md)
    capture replay DATA --venue V             serve a recording as WebSocket feeds (docs/data.md)
    capture systemd install [--prefix DIR]    install the unit files

Exit codes: 0 success; 1 failure (verify found corruption, a shard failed);
2 usage or configuration error; 3 shard already running; 4 start-up failure.
Logs go to stderr, one structured line per event (key=value), never one
per message.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from typing import Any

from capture import __version__, preflight
from common.errors import BadRingFile, CaptureError, ConfigError
from common.log import event as log_event, setup as setup_logging
from common.redact import redact_urls




def _load_config(path: str | None):
    from capture import config
    return config.load(path) if path else config.default_config()


# -- run -------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from capture.supervisor import EXIT_CONFIG, EXIT_STARTUP, Supervisor
    setup_logging("supervisor", args.shard, args.log_level)
    try:
        cfg = _load_config(args.config)
        preflight.require(cfg, [cfg.shard(args.shard).id])  # what would fail later, now
        sup = Supervisor(cfg, args.shard)
    except ConfigError as e:
        log_event(logging.getLogger("capture"), "config_error", logging.ERROR, error=str(e))
        return EXIT_CONFIG
    try:
        return sup.run()
    except BadRingFile as e:
        # The ring directory refused on start (mode, owner, symlink): nothing started.
        logging.getLogger("capture").error("event=refused reason=%s", e)
        return EXIT_STARTUP


# -- config check -------------------------------------------------------------------

def resolve_plan(cfg: Any, discover: bool) -> list[dict[str, Any]]:
    """What each shard gets: instruments per connection.

    Every child's settings are resolved the way `capture run` resolves them
    (:func:`capture.children.resolve`, so a setting a child refuses shows
    here), and the receiver's own assignment functions plan the connections:
    this prints exactly what `capture run` would subscribe (for discovery
    shards only with --discover: the instrument list is the venue's, fetched
    now)."""
    import asyncio
    from capture import children
    from capture.receiver import assignment as rx
    out = []
    for s in cfg.shards:
        row: dict[str, Any] = {"shard": s.id, "venue": s.venue, "cores": list(s.cores),
                               "transport": s.transport, "ring": cfg.ring_path(s.id)}
        try:
            rc = children.resolve(cfg, s.id).receiver
            if rc.symbols or rc.connections:
                assignment = rx.explicit_assignment(rc)
            elif discover:
                units = asyncio.run(rx.discover_units(rc))
                if rc.max_instruments:
                    units = rx.cap_units(units, rc.max_instruments)
                assignment = rx.plan_assignment(rc, units)
            else:
                assignment = None
                row["deferred"] = ("instruments come from discovery at run time "
                                   "(--discover resolves them now)")
            if assignment is not None:
                row["connections"] = [{"id": k, "instruments": v} for k, v in assignment.items()]
        except CaptureError as e:
            row["error"] = str(e)
        out.append(row)
    return out


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        cfg = _load_config(args.file)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plan = resolve_plan(cfg, args.discover)
    problems = preflight.check(cfg)
    failed = [p for p in plan if "error" in p]
    # 2: the config cannot run here; 1: it is well formed but discovery failed now.
    code = 2 if problems else 1 if failed else 0
    if args.json:
        for row in plan:
            row["problems"] = [f"{p.key}: {p.message}" for p in problems if p.shard == row["shard"]]
        print(json.dumps(plan, indent=2))
        return code
    for p in problems:
        print(f"error: {cfg.path or '<built-in default>'}: {p}", file=sys.stderr)
    for p in failed:
        print(f"error: shard {p['shard']}: {p['error']}", file=sys.stderr)
    if code:
        return code
    print(f"{cfg.path}: OK")
    print(f"ring dir {cfg.ring.dir}, capacity {cfg.ring.capacity}; data dir {cfg.storage.data_dir}; "
          f"fsync {cfg.storage.fsync}; NATS {'embedded' if cfg.nats.embedded else ', '.join(redact_urls(cfg.nats.servers))}")
    for p in plan:
        print(f"shard {p['shard']} ({p['venue']}), cores {p['cores'] or 'any'}, transport {p['transport']}:")
        if "error" in p:
            print(f"  error: {p['error']}")
            continue
        if p.get("deferred"):
            print(f"  {p['deferred']}")
        for c in p.get("connections", []):
            members = c["instruments"]
            shown = ", ".join(members[:8]) + (f", ... ({len(members)} in all)" if len(members) > 8 else "")
            print(f"  connection {c['id']}: {shown}")
    return 0


# -- status ---------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    import ring
    from capture import ops
    ring_dir = args.ring_dir or (_load_config(args.config).ring.dir if args.config else ring.DEFAULT_DIR)
    return ops.cmd_status(args, ring_dir)


# -- systemd ------------------------------------------------------------------------

def _units_dir() -> str | None:
    """The unit files: next to a checkout (editable install), or where `pip install .` put them
    (setup.py data_files: <prefix>/share/capture/systemd)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.path.join(here, "systemd"), os.path.join(sys.prefix, "share", "capture", "systemd")):
        if os.path.isfile(os.path.join(d, "capture@.service")):
            return d
    return None


#: What the unit may write without a drop-in (its ReadWritePaths=).
UNIT_WRITABLE = ("/var/lib/capture", "/dev/shm/capture")
UNIT_CONFIG = "/etc/capture/capture.toml"


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def cmd_systemd_install(args: argparse.Namespace) -> int:
    """Copy the units, pointing ExecStart at this installation's `capture`.

    The unit runs with ProtectHome=yes and ProtectSystem=strict, so an executable under /home or
    /root cannot start, and the service can write only its ReadWritePaths: with --config, a data or
    ring directory elsewhere gets a drop-in that adds it (a relative one is refused: the unit has no
    working directory of its own)."""
    src = _units_dir()
    if src is None:
        print("error: the unit files are not installed next to this capture "
              "(install it with `pip install .` from a checkout)", file=sys.stderr)
        return 2
    exe = os.path.abspath(args.exec or shutil.which("capture")
                          or os.path.join(os.path.dirname(sys.executable), "capture"))
    if _inside(exe, ("/home", "/root", "/run/user")):
        print(f"error: {exe} is under a home directory, which the unit hides (ProtectHome=yes); "
              "install capture into its own venv, e.g. /opt/capture", file=sys.stderr)
        return 2
    extra_paths: list[str] = []
    cfg_path = UNIT_CONFIG
    if args.config:
        cfg_path = os.path.abspath(args.config)
        try:
            cfg = _load_config(cfg_path)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for key, d in (("storage.data_dir", cfg.storage.data_dir), ("ring.dir", cfg.ring.dir)):
            if not os.path.isabs(d):
                print(f"error: {cfg_path}: {key} = {d!r} is relative; the unit needs an absolute path",
                      file=sys.stderr)
                return 2
            if not _inside(os.path.normpath(d), UNIT_WRITABLE):
                extra_paths.append(os.path.normpath(d))
    root = args.prefix.rstrip("/") if args.prefix else ""
    units = f"{root}/etc/systemd/system"
    os.makedirs(units, exist_ok=True)
    os.makedirs(f"{root}/etc/sysusers.d", exist_ok=True)
    os.makedirs(f"{root}/etc/tmpfiles.d", exist_ok=True)
    with open(os.path.join(src, "capture@.service")) as f:
        unit = f.read().replace("/opt/capture/bin/capture", exe).replace(UNIT_CONFIG, cfg_path)
    with open(os.path.join(units, "capture@.service"), "w") as f:
        f.write(unit)
    shutil.copy(os.path.join(src, "capture.target"), units)
    shutil.copy(os.path.join(src, "capture-sysusers.conf"), f"{root}/etc/sysusers.d/capture.conf")
    shutil.copy(os.path.join(src, "capture-tmpfiles.conf"), f"{root}/etc/tmpfiles.d/capture.conf")
    print(f"installed capture@.service (ExecStart {exe}, config {cfg_path}) and capture.target into {units}")
    dropin_dir = os.path.join(units, "capture@.service.d")
    dropin = os.path.join(dropin_dir, "20-paths.conf")
    if extra_paths:
        os.makedirs(dropin_dir, exist_ok=True)
        with open(dropin, "w") as f:
            f.write("# written by `capture systemd install --config`: directories of the config\n"
                    "# outside the unit's own ReadWritePaths\n[Service]\n"
                    f"ReadWritePaths={' '.join(extra_paths)}\n")
        print(f"added {dropin}: ReadWritePaths={' '.join(extra_paths)}")
    if not root:
        print("next: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload; "
              "systemctl enable --now capture@0")
    return 0


# -- parser -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="capture", description="Record exchange market data.",
                                 epilog="exit codes: 0 ok; 1 failure; 2 usage or configuration "
                                        "error; 3 shard already running; 4 start-up failure")
    ap.add_argument("--version", action="version", version=f"capture {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run one shard (receiver, flusher, publisher)")
    r.add_argument("--shard", type=int, required=True, metavar="N",
                   help="the [[shard]] id in the config to run (one supervisor per shard per host)")
    r.add_argument("--config", help="TOML config (default: the built-in default)")
    r.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   type=str.upper, help="lowest level logged to stderr (default INFO)")
    r.set_defaults(fn=cmd_run)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cc = csub.add_parser("check", help="validate a config and print the resolved plan")
    cc.add_argument("file", nargs="?", help="TOML config (default: the built-in default)")
    cc.add_argument("--discover", action="store_true", help="run discovery now to resolve instruments")
    cc.add_argument("--json", action="store_true", help="print the plan as JSON")
    cc.set_defaults(fn=cmd_config_check)

    s = sub.add_parser("status", help="every shard on this host")
    s.add_argument("--config", help="TOML config whose ring dir to read")
    s.add_argument("--ring-dir", help="read the rings in this directory (default: the config's)")
    s.add_argument("--json", action="store_true", help="rows as JSON, numbers as numbers")
    s.add_argument("--watch", action="store_true", help="refresh every --interval seconds until Ctrl-C")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="time between the two readings of msgs/s and between refreshes (default 1)")
    s.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    s.set_defaults(fn=cmd_status)

    rg = sub.add_parser("ring", help="ring files")
    rgsub = rg.add_subparsers(dest="ring_cmd", required=True)
    rs = rgsub.add_parser("stats", help="every counter, cursor and heartbeat of one ring file")
    rs.add_argument("path", help="the ring file (e.g. /dev/shm/capture/shard-0.ring)")
    rs.add_argument("--json", action="store_true", help="as JSON")
    rs.set_defaults(fn=lambda a: _ops().cmd_ring_stats(a))

    cz = sub.add_parser("compress", help="compress closed segment files (zstd) under a directory")
    cz.add_argument("dir", help="a data directory or any folder under it")
    cz.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    cz.set_defaults(fn=lambda a: _ops().cmd_compress(a))

    for name in ("cat", "verify", "stats"):
        p = sub.add_parser(name, help=f"segment files: {name}", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=f"the options of {name} (capture {name} --help)")
        p.set_defaults(fn=lambda a, n=name: _segment_tool(n, a.rest))

    for name, what in (("export", "recorded messages to Parquet or CSV"),
                       ("replay", "serve a recording as WebSocket feeds, or republish it to NATS")):
        p = sub.add_parser(name, help=what, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=f"the options of {name} (capture {name} --help)")
        p.set_defaults(fn=lambda a, n=name: _dataout_tool(n, a.rest))

    sd = sub.add_parser("systemd", help="systemd integration")
    sdsub = sd.add_subparsers(dest="systemd_cmd", required=True)
    si = sdsub.add_parser("install", help="install unit files")
    si.add_argument("--prefix", help="install under this root (packaging, tests)")
    si.add_argument("--exec", help="path of the capture executable for ExecStart")
    si.add_argument("--config", help="the config the unit will run with (default "
                    f"{UNIT_CONFIG}); its data and ring directories are made writable")
    si.set_defaults(fn=cmd_systemd_install)
    return ap


def _ops():
    from capture import ops   # the operator commands import ring and flusher: only when used
    return ops


def _segment_tool(name: str, rest: list[str]) -> int:
    from flusher.segments import tools as cli
    if name == "cat":
        # The venue modules live above flusher/: hand cat their channel/symbol rule.
        from capture.describe import describe_for
        return cli.main_cat(rest, describe_for=describe_for)
    fn = {"verify": cli.main_verify, "stats": cli.main_stats}[name]
    return fn(rest)


# -- getting data out: export and replay own their options, like the segment tools --------

def _dataout_tool(name: str, rest: list[str]) -> int:
    try:
        if name == "export":
            from capture.export import main as tool
        else:
            from capture.replay import main as tool
    except ImportError as e:      # pyarrow is the optional `export` extra
        print(f"capture {name}: {e} (pip install 'capture[export]')", file=sys.stderr)
        return 2
    return tool(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("export", "replay"):
        try:
            return _dataout_tool(argv[0], argv[1:])
        except BrokenPipeError:
            return 0
    if argv and argv[0] in ("cat", "verify", "stats"):
        # The segment tools own their options (and --help) entirely.
        try:
            return _segment_tool(argv[0], argv[1:])
        except BrokenPipeError:
            return 0
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
