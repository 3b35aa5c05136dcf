"""The C harness that stops a producer inside the ring's seqlock window
(tests/ring/harness/pair_kill.c), and what the tests read around it: the
pair's generation word and a process's scheduler state."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN_OFF = 128 + 16  # H_PAIR_GEN (csrc/layout.h)


def pair_gen(path: str) -> int:
    """The seqlock's generation word (odd: a writer is inside the window)."""
    with open(path, "rb") as f:
        f.seek(GEN_OFF)
        return struct.unpack("<I", f.read(4))[0]


def proc_state(pid: int) -> str:
    """The scheduler state letter of /proc/PID/stat (T: stopped)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="module")
def pair_kill(tmp_path_factory):
    """The harness, compiled once per module against the ring's own headers."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the seqlock harness")
    out = str(tmp_path_factory.mktemp("harness") / "pair_kill")
    csrc = os.path.join(ROOT, "csrc")
    subprocess.run([cc, "-O1", "-std=gnu11", "-I", csrc, "-o", out,
                    os.path.join(ROOT, "tests", "ring", "harness", "pair_kill.c"),
                    os.path.join(csrc, "crc32c.c")], check=True)
    return out
