"""systemd's notify protocol: one datagram per message to $NOTIFY_SOCKET.

A few lines, so no library: the socket path may be abstract (leading '@').
Without $NOTIFY_SOCKET (not run by systemd) every call is a no-op.
"""
from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._addr: str | bytes | None
        if not addr:
            self._addr = None
        elif addr.startswith("@"):
            self._addr = b"\0" + addr[1:].encode()
        else:
            self._addr = addr
        self._sock: socket.socket | None = None
        if self._addr is not None:
            # Non-blocking: a datagram to a peer whose queue is full otherwise
            # blocks the supervisor's main thread, where signals are acted on.
            self._sock = socket.socket(socket.AF_UNIX,
                                       socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Send e.g. notify(READY=1, STATUS="..."); False if it could not be sent."""
        if self._sock is None or self._addr is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(msg, self._addr)
            return True
        except OSError:
            return False  # systemd gone or socket full: never fatal for the capture

    def ready(self, status: str = "") -> bool:
        return self.notify(READY=1, STATUS=status) if status else self.notify(READY=1)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text.replace("\n", " "))

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def extend_timeout(self, seconds: float) -> bool:
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None if unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
