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


def test_a_full_notify_socket_never_blocks(tmp_path):
    """systemd not reading its notify socket must not stall the supervisor's
    main thread (where it acts on SIGTERM/SIGINT): the send fails instead."""
    import threading
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    n = Notifier(path)
    results: list[bool] = []
    done = threading.Event()

    def fill() -> None:
        for _ in range(100000):       # far more than a unix datagram queue holds
            ok = n.status("x" * 512)
            results.append(ok)
            if not ok:
                break
        done.set()
    t = threading.Thread(target=fill, daemon=True)
    t.start()
    assert done.wait(30), "a send blocked on the full socket"
    assert results[-1] is False and results.count(True) > 0
    n.close()
    srv.close()
