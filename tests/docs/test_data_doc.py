"""docs/data.md: every command it shows runs, and its Python examples run, against a small
recording (the page says which); the replay server commands serve until SIGTERM."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import timeout  # noqa: E402

from capture import cli  # noqa: E402
from dataout_helpers import kraken_recording  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = os.path.join(REPO, "docs", "data.md")
DOC_NATS = "nats://127.0.0.1:4222"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in page order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


async def _get_index(port: int) -> dict:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await r.read()
    w.close()
    return json.loads(data.partition(b"\r\n\r\n")[2])


def _serve_and_stop(argv: list[str], cwd: str) -> None:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "capture.cli", *argv, "--port", "0"],
                         cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "serving ws://" in line, (argv, line + p.stderr.read() if p.poll() is not None else line)
        port = int(line.split()[3].split(":")[2].split("/")[0])
        index = asyncio.run(asyncio.wait_for(_get_index(port), timeout(30)))
        assert [c["path"] for c in index["connections"]] == ["/kraken/0", "/kraken/1"]
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout(30)) == 0


def test_every_command_and_example_of_the_page_runs(tmp_path, monkeypatch, nats_server, capsys):
    monkeypatch.chdir(tmp_path)
    kraken_recording("data", 40)
    ran = {"console": 0, "python": 0}
    for lang, body in blocks(open(PAGE).read()):
        if lang == "console":
            for line in body.splitlines():
                if not line.startswith("$ "):
                    continue
                argv = shlex.split(line[2:])
                assert argv[0] == "capture", line
                argv = [a.replace(DOC_NATS, nats_server.url) for a in argv[1:]]
                if argv[0] == "replay" and "--to-nats" not in argv:
                    _serve_and_stop(argv, str(tmp_path))
                else:
                    assert cli.main(argv) == 0, (line, capsys.readouterr().err)
                ran["console"] += 1
        elif lang == "python":
            exec(compile(body, PAGE, "exec"), {"__name__": "docs_example"})
            ran["python"] += 1
    assert ran == {"console": 7, "python": 2}
    assert os.path.exists("out/_manifest.json") and os.path.exists("out-csv/_manifest.json")
