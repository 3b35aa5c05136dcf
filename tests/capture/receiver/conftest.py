"""Fixture of the receiver tests: a 16 MiB ring in a private directory."""
from __future__ import annotations

import pytest

from integrity_helpers import new_ring
from receiver_helpers import cleanup


@pytest.fixture
def ring_path():
    d, p = new_ring()
    yield p
    cleanup(d)
