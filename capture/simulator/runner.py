"""Running a :class:`Simulator` beside code that is not in its event loop.

* :class:`SimulatorThread`: the simulator's own loop in a background thread of
  this process; its records stay inspectable (``.sim``) by the test.
* :class:`SimulatorProcess`: ``python -m capture.simulator`` in a child
  process (for receivers that must not share a GIL with it, e.g. benchmarks);
  its records come back as a summary on :meth:`SimulatorProcess.stop` and,
  with ``frames_dir``, as one length-prefixed file per connection.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import orjson

from capture.simulator.script import VENUES, Scenario
from capture.simulator.server import Simulator, SimulatorError


class SimulatorThread:
    """``with SimulatorThread(["kraken"], Scenario()) as st: st.url("kraken")``.

    Takes the same arguments as :class:`Simulator`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sim = Simulator(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: Future[None] = Future()
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 30.0) -> "SimulatorThread":
        self._thread = threading.Thread(target=self._run, name="capture-simulator", daemon=True)
        self._thread.start()
        self._ready.result(timeout)
        return self

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.sim.start()
            except BaseException as exc:
                self._ready.set_exception(exc)
                return
            self._ready.set_result(None)
            await self._stop.wait()
            await self.sim.stop()
        asyncio.run(main())

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30.0, **kw: Any) -> Any:
        """Run ``fn(*args, **kw)`` in the simulator's loop (awaiting it if it
        is a coroutine function) and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            r = fn(*args, **kw)
            return await r if asyncio.iscoroutine(r) else r
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def inject(self, venue: str, action: str, **kw: Any) -> int:
        return self.call(self.sim.inject, venue, action, **kw)

    def url(self, venue: str) -> str:
        return self.sim.url(venue)

    def rest_url(self, venue: str) -> str:
        return self.sim.rest_url(venue)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self.loop = None

    def __enter__(self) -> "SimulatorThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimulatorProcess:
    """The simulator in a child process.

    Args:
        venues, scenario, host, port: as for :class:`Simulator`.
        kalshi_public_key_path: PEM file of the key Kalshi handshakes verify
            against; without it the child generates a pair and writes the
            private key (mode 0600) to ``kalshi_private_key_path`` if given.
        frames_dir: the child writes ``<venue>-<index>.frames`` there on exit
            (see :func:`capture.simulator.record.read_frames`); without it a
            ``record="frames"`` scenario records only count and digest.
    """

    def __init__(self, venues: list[str] | tuple[str, ...] = VENUES,
                 scenario: Scenario | None = None, host: str = "127.0.0.1", port: int = 0,
                 kalshi_public_key_path: str | None = None,
                 kalshi_private_key_path: str | None = None,
                 kalshi_key_id: str | None = None, frames_dir: str | None = None) -> None:
        scenario = scenario or Scenario()
        if frames_dir is None and scenario.record == "frames":
            # Payloads could never leave the child: keep only count + digest.
            scenario = scenario.replace(record="digest")
        self.args = [sys.executable, "-m", "capture.simulator", "--venues", ",".join(venues),
                     "--host", host, "--port", str(port),
                     "--scenario-json", scenario.to_json().decode()]
        if kalshi_public_key_path:
            self.args += ["--kalshi-public-key", kalshi_public_key_path]
        if kalshi_private_key_path:
            self.args += ["--kalshi-private-key-out", kalshi_private_key_path]
        if kalshi_key_id:
            self.args += ["--kalshi-key-id", kalshi_key_id]
        if frames_dir:
            self.args += ["--frames-dir", frames_dir]
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict = {}

    def start(self, timeout: float = 30.0) -> "SimulatorProcess":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line or time.monotonic() > deadline:
            self.proc.kill()
            self.proc.wait()
            raise SimulatorError(f"simulator process did not start (exit {self.proc.returncode})")
        self.info = orjson.loads(line)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, venue: str) -> str:
        return self.info["urls"][venue]

    def rest_url(self, venue: str) -> str:
        return self.info["rest"][venue]

    def stop(self, timeout: float = 30.0) -> list[dict]:
        """SIGTERM, wait, and return the per-connection summary it printed."""
        if self.proc is None:
            return []
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=timeout)
        for line in out.splitlines():
            d = orjson.loads(line)
            if "summary" in d:
                return d["summary"]
        return []

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
