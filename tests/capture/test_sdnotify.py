import socket

from capture.sdnotify import Notifier


def test_notify_datagrams(tmp_path):
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    n = Notifier(path)
    assert n.enabled
    n.ready("1 connection")
    n.watchdog()
    n.extend_timeout(2.5)
    n.stopping()
    got = [srv.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=1 connection", "WATCHDOG=1", "EXTEND_TIMEOUT_USEC=2500000", "STOPPING=1"]
    n.close()
    srv.close()


def test_disabled_without_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and n.ready() is False
