"""Fixtures of the venue tests."""
from __future__ import annotations

import pytest

from discovery_helpers import scripted_server


@pytest.fixture
def server():
    """``(base URL, script)`` of a scripted HTTP server on a loopback port."""
    with scripted_server() as s:
        yield s
