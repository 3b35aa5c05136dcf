import os
import shutil
import tempfile

import pytest


@pytest.fixture
def ring_dir():
    """A private directory on the same tmpfs the rings use in production."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="capture-test-", dir=base)
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ring_path(ring_dir):
    return os.path.join(ring_dir, "test.ring")
