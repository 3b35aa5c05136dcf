"""Shared fixtures for the benchmarks in bench/ (generic: no suite-specific logic).

* ``shm_dir``       a private (0700) temporary directory on /dev/shm, removed after the test
* ``make_ring``     factory: ``make_ring(capacity=4 << 20) -> path`` of a fresh ring file in it
* ``bench_summary`` session-wide registry; suites add report sections (lines, or a
                    callable that renders them) that are printed once at the end of the
                    run, after every peer has been measured - that is where ratios belong

The bench directory is put on ``sys.path`` so that suites can keep helpers in
plain modules here (``import ring_bench_helpers``) - importable by spawned
child processes too - under pytest's ``--import-mode=importlib``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Callable

import pytest

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)


def _shm_base() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@pytest.fixture
def shm_dir():
    d = tempfile.mkdtemp(prefix="capture-bench-", dir=_shm_base())
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_ring(shm_dir) -> Callable[..., str]:
    import ring

    counter = iter(range(1 << 30))

    def make(capacity: int = 4 << 20, **kw) -> str:
        path = os.path.join(shm_dir, f"bench-{next(counter)}.ring")
        ring.create(path, capacity=capacity, **kw).close()
        return path

    return make


class BenchSummary:
    """Sections printed at the end of the session, in the order registered."""

    def __init__(self) -> None:
        self._sections: dict[str, list[str] | Callable[[], list[str]]] = {}

    def set_lines(self, title: str, lines: list[str]) -> None:
        self._sections[title] = list(lines)

    def set_renderer(self, title: str, render: Callable[[], list[str]]) -> None:
        self._sections[title] = render

    def render(self) -> list[tuple[str, list[str]]]:
        out = []
        for title, body in self._sections.items():
            try:
                lines = body() if callable(body) else body
            except Exception as e:  # a broken report must not hide the others
                lines = [f"(report failed: {type(e).__name__}: {e})"]
            if lines:
                out.append((title, lines))
        return out


_SUMMARY = BenchSummary()


@pytest.fixture(scope="session")
def bench_summary() -> BenchSummary:
    return _SUMMARY


def pytest_terminal_summary(terminalreporter) -> None:
    for title, lines in _SUMMARY.render():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
